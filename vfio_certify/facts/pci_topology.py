"""The PCI tree: which bridge each function sits behind (pure, forgiving; never raises).

sysfs nests every PCI function under its upstream bridge: the device path of a function behind a root
port and a switch is `/sys/devices/pci0000:00/0000:00:01.2/0000:02:00.0/0000:03:02.0/0000:06:00.0`, and
`/sys/bus/pci/devices/<BDF>` links to it (`ls -l` shows `-> ../../../devices/pci0000:00/...`). A parent
is a bridge's PCI address, or the root bus's own name (`pci0000:00`) for a function on a root bus (a root
port or an integrated endpoint). A function missing from a `Topology` has no known place: never guessed.
"""
from __future__ import annotations

import re
from typing import Iterable

from .pci import normalize_pci_address

ROOT_BUS_PREFIX = "pci"  # a root bus as sysfs names it: pci<domain>:<bus>

_FUNCTION = r"[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
# one device path: the root bus, then the chain of functions from it, each the parent of the next
_DEVICE_PATH = re.compile(rf"\b(pci[0-9a-fA-F]{{4,}}:[0-9a-fA-F]{{2}})((?:/{_FUNCTION})+)(?![0-9a-zA-Z:.])")

Topology = dict[str, str]  # function -> its parent: a bridge's address or the root bus (pci0000:00)


def is_root_bus(parent: str) -> bool:
    return parent.startswith(ROOT_BUS_PREFIX)


def parse_device_paths(text: str) -> Topology:
    """Every function named in the sysfs device paths of `text` (`ls -l /sys/bus/pci/devices`, `readlink`,
    `find /sys/devices`, a `tree` listing) -> its parent. A path cut off mid-name yields its whole names only;
    a function given two different parents (a garbled line) keeps the first."""
    found: Topology = {}
    for match in _DEVICE_PATH.finditer(text or ""):
        parent = match.group(1).lower()
        for name in match.group(2).strip("/").split("/"):
            address = normalize_pci_address(name)
            if address is None:
                break
            found.setdefault(address, parent)
            parent = address
    return found


def from_folders(root_buses: dict[str, Iterable[str]], behind: dict[str, Iterable[str]]) -> Topology:
    """The tree from folder listings: each root bus (`pci0000:00`) -> the functions on it, and each function
    -> the entries of its device folder (the functions behind a bridge are folders named by their address;
    any other entry is ignored)."""
    found: Topology = {}
    for bus, names in root_buses.items():
        for name in names:
            address = normalize_pci_address(name)
            if address:
                found.setdefault(address, bus.lower())
    for parent, names in behind.items():
        for name in names:
            address = normalize_pci_address(name)
            if address and address != parent:
                found.setdefault(address, parent)
    return found


def root_port(address: str, tree: Topology) -> str:
    """The function on a root bus above `address` (itself when it sits on a root bus); "" when its chain
    does not reach a root bus (a part of the tree that was not collected)."""
    seen: set[str] = set()
    while address not in seen:
        seen.add(address)
        parent = tree.get(address, "")
        if not parent:
            return ""
        if is_root_bus(parent):
            return address
        address = parent
    return ""  # a loop: garbled input, no place
