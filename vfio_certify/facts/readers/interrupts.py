"""Interrupt remapping: /proc/interrupts and vfio_iommu_type1's allow_unsafe_interrupts."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..interrupts import parse_interrupts
from ..model import HostFacts


def read_interrupts(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text(spec.PROC_INTERRUPTS.path)
    facts.interrupts = parse_interrupts(text) if text is not None else None
    facts.allow_unsafe_interrupts = snap.read_value(spec.ALLOW_UNSAFE_INTERRUPTS.path)
