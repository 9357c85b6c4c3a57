"""Host binaries the lab needs, and the Debian package that ships each."""

from __future__ import annotations

import os
import shutil
from typing import Dict, Iterable, List, Optional, Tuple

# binary -> Debian package (all in scripts/apt-packages.txt; scripts/setup.sh
# installs them).
BINARIES: Dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virt-xml-validate": "libvirt-clients",
    "busybox": "busybox-static",
    "dropbear": "dropbear-bin",
    "dropbearkey": "dropbear-bin",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "unshare": "util-linux",
    "mount": "mount",
    "ldd": "libc-bin",
    "xmllint": "libxml2-utils",   # virt-xml-validate runs it
}

# What booting the lab needs (XML validation needs VALIDATE_BINARIES).
LAB_BINARIES = tuple(b for b in BINARIES if b not in ("virt-xml-validate", "xmllint"))
VALIDATE_BINARIES = ("virt-xml-validate", "xmllint")

# Extra places to look: daemons live in sbin, which a non-login PATH may lack.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/libexec")


def which(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    for d in _EXTRA_DIRS:
        cand = os.path.join(d, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def require(name: str) -> str:
    path = which(name)
    if path is None:
        raise MissingTool(name)
    return path


class MissingTool(RuntimeError):
    def __init__(self, binary: str):
        self.binary = binary
        self.package = BINARIES.get(binary, "?")
        super().__init__(
            f"needs {self.package} for {binary} (scripts/setup.sh installs it)"
        )


def missing(binaries: Iterable[str] = LAB_BINARIES) -> List[Tuple[str, str]]:
    """[(binary, package)] for every binary that is not installed."""
    return [(b, BINARIES.get(b, "?")) for b in binaries if which(b) is None]


def newest_kernel(boot: str = "/boot") -> Optional[str]:
    """Path of the newest /boot/vmlinuz-* (by kernel version), or None."""
    try:
        names = [n for n in os.listdir(boot) if n.startswith("vmlinuz-")]
    except OSError:
        return None
    if not names:
        return None

    def key(name: str):
        ver = name[len("vmlinuz-"):]
        parts = []
        for chunk in ver.replace("-", ".").split("."):
            parts.append((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk))
        return parts

    return os.path.join(boot, sorted(names, key=key)[-1])


def unavailable_reason(binaries: Iterable[str] = LAB_BINARIES) -> Optional[str]:
    """A one-line skip reason naming the package, or None if the lab can run."""
    gone = missing(binaries)
    if gone:
        binary, pkg = gone[0]
        more = f" (and {len(gone) - 1} more: " + ", ".join(
            sorted({p for _, p in gone[1:]})) + ")" if len(gone) > 1 else ""
        return f"needs {pkg} for {binary} (scripts/setup.sh installs it){more}"
    if newest_kernel() is None:
        return "needs linux-image-amd64 for /boot/vmlinuz-* (scripts/setup.sh installs it)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "needs the libvirt-python module (pip install libvirt-python; scripts/setup.sh installs it)"
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return "needs jinja2 (scripts/setup.sh installs it)"
    if os.geteuid() != 0:
        return "the lab runs a private root libvirtd in a mount namespace: needs root"
    return None
