"""/etc/os-release: which distro family's commands a remediation should use."""
from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass
class OsRelease:
    id: str = ""
    id_like: tuple[str, ...] = ()
    pretty_name: str = ""
    version_id: str = ""

    @property
    def family(self) -> str:
        """'rhel', 'debian', 'suse', 'arch' or '' when unknown."""
        ids = (self.id, *self.id_like)
        if any(i in ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn") for i in ids):
            return "rhel"
        if any(i in ("debian", "ubuntu") for i in ids):
            return "debian"
        if any(i.startswith(("suse", "opensuse", "sles")) for i in ids):
            return "suse"
        if "arch" in ids:
            return "arch"
        return ""


def parse_os_release(text: str) -> OsRelease:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip().isidentifier():
            continue
        try:
            words = shlex.split(raw, posix=True)
        except ValueError:
            words = [raw.strip().strip("'\"")]
        values[key.strip()] = " ".join(words)
    return OsRelease(
        id=values.get("ID", "").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        pretty_name=values.get("PRETTY_NAME", ""),
        version_id=values.get("VERSION_ID", ""),
    )
