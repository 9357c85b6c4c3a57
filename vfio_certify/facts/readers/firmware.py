"""The firmware's IOMMU tables (ACPI DMAR for VT-d, IVRS for AMD-Vi, IORT's SMMU nodes on arm64) and the
IOMMU units the kernel made."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..iort import parse_iort
from ..model import HostFacts


def read_firmware(snap: Snapshot, facts: HostFacts) -> None:
    if snap.listdir(spec.ACPI_TABLES.path) is not None:
        facts.acpi_tables = {t.path.rsplit("/", 1)[1]: snap.exists(t.path)
                             for t in (spec.ACPI_DMAR, spec.ACPI_IVRS, spec.ACPI_IORT)}
    data = snap.read_bytes(spec.ACPI_IORT.path)
    if data:  # an empty file is a mark of existence (an older collector): its nodes were not read
        facts.iort = parse_iort(data)
        if facts.iort.problem:
            facts.notes.append(f"{spec.ACPI_IORT.path}: {facts.iort.problem}")
    facts.iommu_units = snap.listdir(spec.IOMMU_UNITS.folder())
