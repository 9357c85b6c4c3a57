"""The IOMMU story told by the kernel log (dmesg, or `journalctl -k`).

dmesg is supporting evidence only: it may be rotated away, restricted
(kernel.dmesg_restrict) or cut. Each list holds the matching lines as printed, so a
check can quote them as evidence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_TIMESTAMP = re.compile(r"^\s*(<\d+>)?\s*\[\s*[\d.]+\]\s*")
MAX_EVIDENCE_CHARS = 300

_PATTERNS = {
    "acpi_dmar": re.compile(r"\bACPI: DMAR 0x"),
    "acpi_ivrs": re.compile(r"\bACPI: IVRS 0x"),
    "dmar_iommu_enabled": re.compile(r"\bDMAR: IOMMU enabled\b"),
    "dmar_units": re.compile(r"\bDMAR: (dmar\d+: reg_base_addr|DRHD base)"),
    "vtd_initialized": re.compile(r"\bDMAR: Intel\(R\) Virtualization Technology for Directed I/O\b"),
    "iommu_disabled": re.compile(
        r"\bDMAR: IOMMU disabled\b|\bDMAR: Disable(d)? (IOMMU|DMAR)\b|\bAMD-Vi: (AMD IOMMU )?disabled\b"
        r"|\bIOMMU disabled by BIOS\b|\bDMAR: Firmware bug.*disabling\b"
    ),
    "amd_vi": re.compile(r"\bAMD-Vi:|\bAMD IOMMUv2\b|\bperf/amd_iommu\b"),
    "amd_vi_found": re.compile(r"\bAMD-Vi: Found IOMMU\b|\bperf/amd_iommu: Detected AMD IOMMU\b|\bAMD-Vi: IOMMU performance counters supported\b"),
    "irq_remapping_enabled": re.compile(
        r"\bDMAR-IR: Enabled IRQ remapping\b|\bAMD-Vi: Interrupt remapping enabled\b|\bEnabled IRQ remapping in (x2apic|xapic) mode\b"
    ),
    "irq_remapping_disabled": re.compile(
        r"\b(IRQ|Interrupt) remapping (was )?disabled\b|\bintremap=off\b|\bDMAR-IR: Failed\b"
        r"|\bNot enabling interrupt remapping\b"
    ),
    "unsafe_interrupts": re.compile(r"\ballow_unsafe_interrupts\b|No interrupt remapping support"),
    "group_additions": re.compile(r"Adding to iommu group \d+|iommu: Adding device \S+ to group \d+"),
    "default_domain": re.compile(r"\biommu: Default domain type:"),
    "no_iommu_group": re.compile(r"no iommu_group found"),
}
# x86 prints "Command line:" first (setup_arch), then "Kernel command line:"; either may be cut.
_COMMAND_LINE = re.compile(r"(?:^|kernel: )(?:Kernel )?[Cc]ommand line: (.*)$")  # dmesg or journalctl -k


@dataclass
class DmesgFacts:
    lines_read: int = 0
    command_line: str = ""
    matches: dict[str, list[str]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> list[str]:
        if name in _PATTERNS:
            return self.matches.get(name, [])
        raise AttributeError(name)

    def has(self, name: str) -> bool:
        return bool(self.matches.get(name))


def strip_timestamp(line: str) -> str:
    return _TIMESTAMP.sub("", line, count=1)


def parse_dmesg(text: str, max_per_kind: int = 20) -> DmesgFacts:
    facts = DmesgFacts()
    for raw in text.splitlines():
        facts.lines_read += 1
        line = raw.rstrip()
        if not line:
            continue
        body = strip_timestamp(line)
        evidence = line if len(line) <= MAX_EVIDENCE_CHARS else line[:MAX_EVIDENCE_CHARS] + " …"
        for kind, pattern in _PATTERNS.items():
            if pattern.search(body):
                found = facts.matches.setdefault(kind, [])
                if len(found) < max_per_kind:
                    found.append(evidence)
        match = _COMMAND_LINE.search(body)
        if match and len(match.group(1).strip()) > len(facts.command_line):
            facts.command_line = match.group(1).strip()  # the longest copy: the other may be cut short
    return facts
