"""The ACPI IORT table (/sys/firmware/acpi/tables/IORT, Arm DEN 0049): which SMMUs the firmware describes.

On arm64 the IORT is to the SMMU what DMAR is to VT-d, with one difference: every GICv3 ITS system has
an IORT, because MSIs need it, so the table being there proves nothing. Its nodes do: an SMMUv3 (or
SMMUv1/v2) node per SMMU, and each PCI root complex node maps its requester ids either to an SMMU
(translated) or straight to the ITS group (no translation for that PCI segment). A firmware whose SMMU
is switched off in its setup leaves the SMMU nodes out.

The table is binary and comes from the host as is: every length and offset is checked before it is used,
and a damaged table yields what could be read plus a note, never an exception.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

ITS_GROUP, NAMED_COMPONENT, ROOT_COMPLEX, SMMU_V1_V2, SMMU_V3, PMCG, RMR = range(7)
_HEADER = 48  # ACPI header (36) + node count, node array offset, reserved


@dataclass
class IortFacts:
    smmu_v3: list[int] = field(default_factory=list)  # base addresses of the SMMUv3 nodes
    smmu_v1_v2: list[int] = field(default_factory=list)
    its_groups: int = 0
    root_complexes: dict[int, bool] = field(default_factory=dict)  # PCI segment -> its ids go through an SMMU
    problem: str = ""  # why (part of) the table could not be read

    @property
    def smmus(self) -> int:
        return len(self.smmu_v3) + len(self.smmu_v1_v2)

    def summary(self) -> str:
        parts = [f"{len(self.smmu_v3)} SMMUv3 node(s)" + (f" at {', '.join(f'0x{b:x}' for b in self.smmu_v3[:4])}"
                                                        if self.smmu_v3 else "")]
        if self.smmu_v1_v2:
            parts.append(f"{len(self.smmu_v1_v2)} SMMUv1/v2 node(s)")
        parts.append(f"{self.its_groups} ITS group(s)")
        if self.root_complexes:
            behind = sorted(s for s, smmu in self.root_complexes.items() if smmu)
            direct = sorted(s for s, smmu in self.root_complexes.items() if not smmu)
            parts.append(f"PCI segments behind an SMMU: {', '.join(f'{s:04x}' for s in behind) or 'none'}"
                         + (f"; mapped straight to the ITS: {', '.join(f'{s:04x}' for s in direct)}" if direct else ""))
        return "IORT: " + ", ".join(parts) + (f" ({self.problem})" if self.problem else "")


def parse_iort(data: bytes) -> IortFacts:
    facts = IortFacts()
    if len(data) < _HEADER or data[:4] != b"IORT":
        facts.problem = "not an IORT table" if data[:4] != b"IORT" else f"only {len(data)} bytes"
        return facts
    declared = struct.unpack_from("<I", data, 4)[0]
    if declared > len(data):
        facts.problem = f"cut short: {len(data)} of {declared} bytes"
    elif declared >= _HEADER:
        data = data[:declared]
    count, offset = struct.unpack_from("<II", data, 36)
    nodes: dict[int, int] = {}  # offset -> type
    mappings: list[tuple[int, list[int]]] = []  # (segment, output node offsets) per root complex
    for _ in range(min(count, 4096)):
        if offset + 16 > len(data):
            facts.problem = facts.problem or "a node runs past the end of the table"
            break
        kind, node_length, _rev, _ident, n_maps, map_ref = struct.unpack_from("<BHBIII", data, offset)
        if node_length < 16 or offset + node_length > len(data):
            facts.problem = facts.problem or f"a node at offset {offset} has an impossible length {node_length}"
            break
        nodes[offset] = kind
        if kind == ITS_GROUP:
            facts.its_groups += 1
        elif kind == SMMU_V3 and node_length >= 24:
            facts.smmu_v3.append(struct.unpack_from("<Q", data, offset + 16)[0])
        elif kind == SMMU_V1_V2 and node_length >= 24:
            facts.smmu_v1_v2.append(struct.unpack_from("<Q", data, offset + 16)[0])
        elif kind == ROOT_COMPLEX and node_length >= 32:
            segment = struct.unpack_from("<I", data, offset + 28)[0]
            targets = [struct.unpack_from("<I", data, offset + map_ref + 20 * i + 12)[0]
                       for i in range(min(n_maps, 1024)) if map_ref and offset + map_ref + 20 * (i + 1) <= offset + node_length]
            mappings.append((segment, targets))
        offset += node_length
    for segment, targets in mappings:
        facts.root_complexes[segment] = any(nodes.get(t) in (SMMU_V3, SMMU_V1_V2) for t in targets)
    return facts
