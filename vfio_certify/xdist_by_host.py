"""With pytest-xdist (-j), a host's checks all go to one worker: one collection per host.

xdist's own loadgroup cannot be used: it renames node ids, which pytest 9 no longer
honours. This scheduler groups by the host named first in each check's parameters. The
controller has node ids only, not items: a host is matched as pytest writes it into the id
(non-ASCII escaped, `kvm-\\xfc`), and as given (escaping disabled by the ini option).
"""
from __future__ import annotations

from typing import Any, Optional


def by_host_scheduler(config: Any, log: Any, hosts: list[str]) -> Optional[Any]:
    """xdist's load-scope scheduling with one scope per host in `hosts`; None for another --dist."""
    if config.option.dist not in ("load", "loadgroup", "loadscope"):
        return None  # the user chose another distribution on purpose
    try:  # how pytest escapes non-ASCII ids (kvm-ü -> kvm-\xfc); private, so with a fallback of the same rule
        from _pytest.compat import ascii_escaped
    except ImportError:  # pragma: no cover
        def ascii_escaped(text: str) -> str:
            return text.encode("unicode_escape").decode("ascii")
    from xdist.scheduler import LoadScopeScheduling

    spelled = {form: name for name in hosts for form in (name, ascii_escaped(name))}
    forms = sorted(spelled, key=len, reverse=True)

    class ByHost(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") and "[" in nodeid else ""
            return next((spelled[f] for f in forms if params == f or params.startswith(f + "-")), nodeid)

    return ByHost(config, log)
