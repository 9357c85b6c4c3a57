"""/proc/interrupts: interrupt chips named IR-* mean the IOMMU remaps interrupts.

This holds after dmesg has rotated away: with remapping on, the IO-APIC and MSI
chips are listed as IR-IO-APIC, IR-PCI-MSI (or IR-PCI-MSIX-...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_IR_CHIP = re.compile(r"\bIR-[A-Za-z0-9-]+")
_PLAIN_CHIP = re.compile(r"\b(IO-APIC|PCI-MSI(?:X)?(?:-[0-9a-fA-F:.]+)?)\b")


@dataclass
class InterruptFacts:
    remapped_chips: set[str] = field(default_factory=set)
    plain_chips: set[str] = field(default_factory=set)
    evidence: list[str] = field(default_factory=list)

    @property
    def remapping_active(self) -> bool:
        return bool(self.remapped_chips)


def _short(line: str) -> str:
    # Drop the per-CPU counters: "  24:  0 0 ... IR-PCI-MSI 512000-edge ahci" -> "24: IR-PCI-MSI 512000-edge ahci"
    irq, _, rest = line.strip().partition(":")
    words = [w for w in rest.split() if not w.isdigit()]
    return f"{irq}: {' '.join(words)}"


def parse_interrupts(text: str, max_evidence: int = 3) -> InterruptFacts:
    facts = InterruptFacts()
    for line in text.splitlines():
        ir = _IR_CHIP.findall(line)
        if ir:
            facts.remapped_chips.update(ir)
            if len(facts.evidence) < max_evidence:
                facts.evidence.append(_short(line))
            continue
        for chip in _PLAIN_CHIP.findall(line):
            facts.plain_chips.add(chip)
    return facts
