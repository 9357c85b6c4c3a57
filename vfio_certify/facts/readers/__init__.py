"""The readers: one module per area, each filling its own fields of HostFacts from the snapshot.

Readers are the only code that knows snapshot paths, and they name every path through its source in
collect/spec.py. `read_host_facts` runs them all in order (`read_net` needs the PCI devices); one that
raises (a bug: parsers must not) leaves its facts unread and is named in `read_errors`.
"""
from __future__ import annotations

from ...snapshot.reader import Snapshot
from ..model import HostFacts
from .boot import read_boot_configs, read_cmdline
from .dmesg import read_dmesg
from .firmware import read_firmware
from .identity import read_identity
from .interrupts import read_interrupts
from .kernel_config import read_kernel_config
from .modules import read_modules
from .net import read_net
from .libvirt import read_libvirt
from .pci import read_groups, read_pci, read_topology
from .readiness import read_readiness
from .usb import read_usb

READERS = (read_identity, read_kernel_config, read_cmdline, read_boot_configs, read_dmesg, read_firmware,
           read_pci, read_groups, read_topology, read_usb, read_modules, read_net, read_interrupts,
           read_readiness, read_libvirt)


def read_host_facts(snap: Snapshot) -> HostFacts:
    """Every reader runs; one that raises leaves its facts unread and says so in `read_errors`, which
    fails host.reachable: the host is judged on the rest, and never certified."""
    facts = HostFacts(
        hostname=snap.hostname,
        kernel_release=snap.kernel_release,
        collected_at=str(snap.meta.get("collected_at") or ""),
    )
    for reader in READERS:
        try:
            reader(snap, facts)
        except Exception as exc:  # noqa: BLE001 -- reported, never lost
            detail = " ".join(str(exc).split())[:200]
            facts.read_errors.append(f"{reader.__name__.lstrip('_')}: {type(exc).__name__}"
                                     + (f": {detail}" if detail else ""))
    return facts
