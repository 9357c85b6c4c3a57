"""The firmware's IOMMU tables (ACPI DMAR for VT-d, IVRS for AMD-Vi, IORT's SMMU nodes on arm64) and the
IOMMU units the kernel made."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..iort import parse_iort
from ..model import DeviceTreeFacts, HostFacts


def read_firmware(snap: Snapshot, facts: HostFacts) -> None:
    if snap.listdir(spec.ACPI_TABLES.path) is not None:
        facts.acpi_tables = {t.path.rsplit("/", 1)[1]: snap.exists(t.path)
                             for t in (spec.ACPI_DMAR, spec.ACPI_IVRS, spec.ACPI_IORT)}
    data = snap.read_bytes(spec.ACPI_IORT.path)
    if data:  # an empty file is a mark of existence (an older collector): its nodes were not read
        facts.iort = parse_iort(data)
        if facts.iort.problem:
            facts.notes.append(f"{spec.ACPI_IORT.path}: {facts.iort.problem}")
    facts.iort_state = snap.state(spec.ACPI_IORT.path)
    facts.iommu_units = snap.listdir(spec.IOMMU_UNITS.folder())
    read_devicetree(snap, facts)


def _nodes(snap: Snapshot, base: str, depth: int) -> list[str]:
    """Node paths (relative to `base`) down to `depth` levels: the folders the collection made."""
    found, level = [], [""]
    for _ in range(depth):
        level = [f"{parent}/{n}".lstrip("/") for parent in level for n in snap.listdir(f"{base}/{parent}".rstrip("/")) or []
                 if snap.listdir(f"{base}/{parent}/{n}".replace("//", "/")) is not None]
        found += level
    return found


def read_devicetree(snap: Snapshot, facts: HostFacts) -> None:
    base = spec.DEVICETREE.path
    if snap.listdir(base) is None:
        return
    model = snap.read_text(spec.DT_MODEL.path)
    tree = DeviceTreeFacts(present=model is not None, model=(model or "").strip("\x00 \n"))
    for node in _nodes(snap, base, 2):
        parts, depth = node.split("/"), node.count("/")
        if snap.exists(spec.DT_IOMMU_CELLS[depth].at(*parts)):
            compatible = snap.read_bytes(spec.DT_MMU_COMPATIBLE[depth].at(*parts)) or b""
            tree.iommus[node] = ", ".join(c.decode("ascii", "replace") for c in compatible.split(b"\0") if c)
        if snap.exists(spec.DT_IOMMU_MAP[depth].at(*parts)):
            tree.pcie_iommu_maps.append(node)
    tree.present = tree.present or bool(tree.iommus or tree.pcie_iommu_maps)
    facts.devicetree = tree
