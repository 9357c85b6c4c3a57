"""The firmware's IOMMU tables (ACPI DMAR for VT-d, IVRS for AMD-Vi) and the IOMMU units the kernel made."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..model import HostFacts


def read_firmware(snap: Snapshot, facts: HostFacts) -> None:
    if snap.listdir(spec.ACPI_TABLES.path) is not None:
        facts.acpi_tables = {t.path.rsplit("/", 1)[1]: snap.exists(t.path) for t in (spec.ACPI_DMAR, spec.ACPI_IVRS)}
    facts.iommu_units = snap.listdir(spec.IOMMU_UNITS.folder())
