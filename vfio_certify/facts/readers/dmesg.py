"""The kernel log: what the IOMMU and VFIO drivers said at boot."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..dmesg import parse_dmesg
from ..model import HostFacts


def read_dmesg(snap: Snapshot, facts: HostFacts) -> None:
    dmesg = snap.command(spec.DMESG.line)
    if dmesg is not None:
        if dmesg.ok or dmesg.stdout.strip():
            facts.dmesg = parse_dmesg(dmesg.stdout)
        if not dmesg.ok:
            reason = dmesg.stderr.strip().splitlines()[-1] if dmesg.stderr.strip() else "no message"
            facts.notes.append(f"dmesg exited {dmesg.rc}: {reason}")
