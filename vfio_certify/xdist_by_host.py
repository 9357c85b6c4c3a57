"""With pytest-xdist (-j), a host's checks all go to one worker: one collection per host.

xdist's own loadgroup cannot be used: it renames node ids, which pytest 9 no longer
honours. This scheduler groups by the host named first in each check's parameters. The
controller has node ids only, not items: a host is matched as pytest writes it into the id
(non-ASCII escaped, `kvm-\\xfc`), and as given (escaping disabled by the ini option).

Linear in hosts: a node id's host is found by dictionary look-ups of its parameters' prefixes
(not by trying every host); a check's index in the collection is a dictionary look-up (xdist
searches the list for each); a host whose checks have all completed is dropped from the worker's
assigned work, which xdist scans on every completed check. Each was quadratic for 1,000 hosts.
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

    def host_of(params: str) -> Optional[str]:
        """The longest host spelling that is `params` or starts it followed by "-" (the next parameter)."""
        if params in spelled:
            return spelled[params]
        end = len(params)
        while (end := params.rfind("-", 0, end)) > 0:
            if params[:end] in spelled:
                return spelled[params[:end]]
        return None

    class ByHost(LoadScopeScheduling):
        def __init__(self, config: Any, log: Any = None) -> None:
            super().__init__(config, log)
            self._indexes: dict[Any, dict[str, int]] = {}  # per worker: node id -> its index in the collection

        def _split_scope(self, nodeid: str) -> str:
            params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") and "[" in nodeid else ""
            return host_of(params) or nodeid

        def _assign_work_unit(self, node: Any) -> None:
            scope, work_unit = self.workqueue.popitem(last=False)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            index = self._indexes.get(node)
            if index is None:
                index = self._indexes[node] = {n: i for i, n in enumerate(self.registered_collections[node])}
            node.send_runtest_some([index[nodeid] for nodeid, completed in work_unit.items() if not completed])

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            super().mark_test_complete(node, item_index, duration)
            work = self.assigned_work.get(node, {})
            scope = self._split_scope(self.registered_collections[node][item_index])
            if scope in work and all(work[scope].values()):
                del work[scope]  # done: nothing of it to re-run if the worker crashes, nothing to count

    return ByHost(config, log)
