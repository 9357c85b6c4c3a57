"""/proc/interrupts: interrupt chips named IR-* mean the IOMMU remaps interrupts.

This holds after dmesg has rotated away: with remapping on, the IO-APIC and MSI
chips are listed as IR-IO-APIC, IR-PCI-MSI (or IR-PCI-MSIX-...). The chip is the first word after
the per-CPU counts: the action names at the end of a line (a renamed NIC: "IR-x") are never read as one.

On arm64 the GIC ITS isolates MSIs instead (each device's MSIs are translated by its DeviceID): its chips
are ITS-MSI (PCI), ITS-pMSI (platform devices, such as the SMMU's own queues) and, since the MSI parent
rework, ITS-PCI-MSI(X)-<address>. MSIs through GICv2m ("MSI", "GICv2m-...") are not isolated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_IR_CHIP = re.compile(r"IR-[A-Za-z0-9-]+")
_PLAIN_CHIP = re.compile(r"(IO-APIC|PCI-MSI(?:X)?(?:-[0-9a-fA-F:.]+)?|MSI$|GICv2m[\w:.-]*)")
_ITS_CHIP = re.compile(r"ITS-[A-Za-z0-9:.-]+")


@dataclass
class InterruptFacts:
    remapped_chips: set[str] = field(default_factory=set)
    plain_chips: set[str] = field(default_factory=set)
    evidence: list[str] = field(default_factory=list)
    its_chips: set[str] = field(default_factory=set)  # arm64: MSIs translated by the GIC ITS
    its_evidence: list[str] = field(default_factory=list)

    @property
    def remapping_active(self) -> bool:
        return bool(self.remapped_chips)

    @property
    def msi_isolated_by_its(self) -> bool:
        return bool(self.its_chips)


def _short(line: str) -> str:
    # Drop the per-CPU counters: "  24:  0 0 ... IR-PCI-MSI 512000-edge ahci" -> "24: IR-PCI-MSI 512000-edge ahci"
    irq, _, rest = line.strip().partition(":")
    words = [w for w in rest.split() if not w.isdigit()]
    return f"{irq}: {' '.join(words)}"


def parse_interrupts(text: str, max_evidence: int = 3) -> InterruptFacts:
    facts = InterruptFacts()
    for line in text.splitlines():
        _, colon, rest = line.partition(":")
        chip = next((w for w in rest.split() if not w.isdigit()), "") if colon else ""
        ir, its, plain = _IR_CHIP.match(chip), _ITS_CHIP.match(chip), _PLAIN_CHIP.match(chip)
        if ir:
            facts.remapped_chips.add(ir.group(0))
            if len(facts.evidence) < max_evidence:
                facts.evidence.append(_short(line))
        elif its:
            facts.its_chips.add(its.group(0))
            if len(facts.its_evidence) < max_evidence:
                facts.its_evidence.append(_short(line))
        elif plain:
            facts.plain_chips.add(plain.group(1))
    return facts
