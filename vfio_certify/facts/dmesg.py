"""The IOMMU story told by the kernel log (dmesg, or `journalctl -k`).

dmesg is supporting evidence only: it may be rotated away, restricted
(kernel.dmesg_restrict) or cut. Each list holds the matching lines as printed, so a
check can quote them as evidence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

# What comes before the kernel's message: a syslog priority, a syslog/journal "Nov 24 10:00:00 host kernel: "
# (or ISO date), dmesg's "[   12.345678] " or dmesg -T's "[Tue Nov 24 10:00:00 2026] ", and journalctl -o
# short-monotonic's "[   12.345678] host kernel: ". Patterns match from the message's first character, so a
# device string the kernel prints mid-line (usb 1-3: Product: ..., an ATA model) is never taken as proof.
_PREFIX = re.compile(
    r"^\s*(?:<\d+>)?\s*"
    r"(?:(?:[A-Z][a-z]{2} +\d{1,2} |\d{4}-\d\d-\d\dT)[\d:.,]+(?:Z|[+-]\d\d:?\d\d)? \S+ kernel: )?"
    r"(?:\[\s*(?:[\d.]+|[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} [\d:]{8} \d{4})\]\s*(?:\S+ kernel: )?)?"
)
MAX_EVIDENCE_CHARS = 300

_PCI = r"(?:pci [0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]: )?"  # pci_info(): the device comes first
_CMDLINE = r"(?:Kernel )?[Cc]ommand line: "
_PATTERNS = {
    "acpi_dmar": re.compile(r"^ACPI: DMAR 0x"),
    "acpi_ivrs": re.compile(r"^ACPI: IVRS 0x"),
    # intel_iommu_setup() prints it on reading intel_iommu=on, before any DMAR table is read: not proof.
    "dmar_iommu_enabled": re.compile(r"^DMAR: IOMMU enabled\b"),
    "dmar_units": re.compile(r"^DMAR: (dmar\d+: reg_base_addr|DRHD base)"),
    # Lines printed only while (or because) the kernel parsed the firmware's DMAR / IVRS table.
    "dmar_parsed": re.compile(r"^DMAR: (Host address width \d+|RMRR base|ATSR flags|SATC flags)"),
    "platform_optin": re.compile(r"^DMAR: Intel-IOMMU force enabled due to platform opt in"),
    "ivrs_parsed": re.compile(rf"^{_PCI}AMD-Vi: (ivrs, add|Using global IVHD EFR|Using IVHD type)"),
    "vtd_initialized": re.compile(r"^DMAR: Intel\(R\) Virtualization Technology for Directed I/O\b"),
    "iommu_disabled": re.compile(
        r"^DMAR: (IOMMU disabled|Disabled? (IOMMU|DMAR)|Firmware bug.*disabling)\b"
        rf"|^{_PCI}AMD-Vi: (AMD IOMMU |IOMMU )?disabled\b|^IOMMU disabled by BIOS\b"
    ),
    "amd_vi": re.compile(rf"^{_PCI}AMD-Vi: |^AMD IOMMUv2\b|^perf/amd_iommu: "),
    "amd_vi_found": re.compile(
        rf"^{_PCI}AMD-Vi: (Found IOMMU|IOMMU performance counters supported)\b|^perf/amd_iommu: Detected AMD IOMMU\b"
    ),
    "irq_remapping_enabled": re.compile(
        rf"^(DMAR-IR: )?Enabled IRQ remapping in (x2apic|xapic) mode\b|^{_PCI}AMD-Vi: Interrupt remapping enabled\b"
    ),
    "irq_remapping_disabled": re.compile(
        r"^(DMAR-IR: |AMD-Vi: )?(IRQ|Interrupt) remapping (was )?disabled\b|^DMAR-IR: Failed\b"
        rf"|^Failed to enable irq remapping\b|^(DMAR-IR: )?Not enabling interrupt remapping\b|^{_CMDLINE}.*\bintremap=off\b"
    ),
    "unsafe_interrupts": re.compile(
        r"^\w+: No interrupt remapping support\b|^[\w-]+ \S+: MSI interrupts are not secure\b"
        rf"|^{_CMDLINE}.*\ballow_unsafe_interrupts\b"
    ),
    # arm64: the IORT is there on every GICv3-ITS system (MSIs need it), so it shows the firmware's tables, not an SMMU
    "acpi_iort": re.compile(r"^ACPI: IORT 0x"),
    # arm_smmu_device_hw_probe() prints the sizes only once it has read the SMMU's ID registers
    "smmu_probed": re.compile(r"^arm-smmu-v3 \S+: ias \d+-bit, oas \d+-bit\b|^arm-smmu \S+: SMMUv[12] with:?$"),
    # the GIC ITS translates (and so isolates) MSIs per device; GICv2m does not
    "gic_its": re.compile(r"^ITS@0x[0-9a-fA-F]+: allocated \d+ Devices\b|^ITS \[mem 0x"),
    "gic_its_absent": re.compile(r"^ITS: No ITS available\b"),
    "gic_v2m": re.compile(r"^GICv2m: range\["),
    # KVM on arm64 runs only if the kernel was entered at EL2 (kvm_arch_init / init_subsystems)
    "kvm_hyp_initialized": re.compile(r"^kvm \[\d+\]: (?:Protected )?(?:VHE|[hn]VHE|Hyp(?: [hn]VHE)?) mode initialized successfully\b"),
    "kvm_hyp_unavailable": re.compile(r"^kvm \[\d+\]: HYP mode not available\b"),
    "cpu_boot_el": re.compile(r"^CPU: All CPU\(s\) started at EL[123]\b|^CPU: CPUs started in inconsistent modes\b"),
    "group_additions": re.compile(r"^[\w-]+ \S+: Adding to iommu group \d+$|^iommu: Adding device \S+ to group \d+$"),
    "default_domain": re.compile(r"^iommu: Default domain type:"),
    # QEMU's error (pasted from its stderr or a libvirt log), not the kernel's: the device has no group.
    "no_iommu_group": re.compile(r"(^|\bqemu-system-[\w-]+: .*: )vfio \S+: no iommu_group found\b"),
}
# Most of a boot log matches no pattern: such a line is passed over after two tests of plain text, not 26 searches.
# A line any pattern matches begins with one of _STARTS or holds one of _HOLDS (where a pattern's line may begin
# with anything: a device name, pci_info()'s "pci 0000:...: "). tests/test_fuzz_parsers.py checks every pattern
# against them with lines generated from the pattern itself: a new pattern needs its words here.
_STARTS = (
    "ACPI: ", "DMAR", "AMD IOMMUv2", "perf/amd_iommu: ", "IOMMU disabled by BIOS", "Enabled IRQ remapping",
    "IRQ remapping", "Interrupt remapping", "Failed to enable irq remapping", "Not enabling interrupt remapping",
    "Command line: ", "command line: ", "Kernel Command line: ", "Kernel command line: ",
    "arm-smmu", "ITS", "GICv2m: ", "kvm [", "CPU: ", "iommu: ",
)
_HOLDS = ("AMD-Vi: ", ": No interrupt remapping support", ": MSI interrupts are not secure", ": Adding to iommu group ",
          ": no iommu_group found")


def may_match(body: str) -> bool:
    """False only for a message no pattern of _PATTERNS can match."""
    if body.startswith(_STARTS):
        return True
    for words in _HOLDS:  # a loop: half the time of any() over a generator, on every line
        if words in body:
            return True
    return False


# x86 prints "Command line:" first (setup_arch), then "Kernel command line:"; either may be cut.
_COMMAND_LINE = re.compile(rf"^{_CMDLINE}(.*)$")
# How much of the boot a log covers. The kernel's first message is its banner, at 0.000000; what follows
# IOMMU initialisation (a rootfs initcall): the end of kernel init, module loads, udev and systemd.
_TIME = re.compile(r"^\s*(?:<\d+>)?\s*\[\s*(\d+\.\d+)\]")
_BANNER = re.compile(r"^Linux version \S+")
_AFTER_IOMMU_INIT = re.compile(
    r"^(Freeing unused kernel|Run /\S+ as init process|Write protecting the kernel read-only data"
    r"|systemd\[1\]: |VFIO - User Level meta-driver|(kvm|kvm_intel|kvm_amd|SVM|VMX): "
    r"|EXT4-fs \(\S+\): mounted filesystem|VFS: Mounted root)"
    r"|^\S+ \S+ \S+: renamed from \S+$|^\S+: port \d+\(\S+\) entered"
)


@dataclass
class DmesgFacts:
    lines_read: int = 0
    command_line: str = ""
    matches: dict[str, list[str]] = field(default_factory=dict)
    has_banner: bool = False  # the kernel's first message ("Linux version ...") is in it
    first_time: Optional[float] = None  # the first line's timestamp (s), when lines carry one
    last_time: Optional[float] = None
    after_iommu_init: bool = False  # a line the kernel prints only after IOMMU initialisation

    def not_covering(self, through_iommu_init: bool = True) -> str:
        """'' when this log covers the boot (from the kernel's first message, and with `through_iommu_init`
        past IOMMU initialisation), else why not: what a missing line then proves nothing about."""
        if not self.lines_read or not any(self.matches.values()) and not self.has_banner and self.first_time is None:
            return "dmesg is empty" if not self.lines_read else "dmesg holds no kernel boot messages"
        if self.first_time is not None and self.first_time > 0:
            return f"dmesg does not cover boot (starts at {self.first_time:g} s: the ring buffer wrapped, or an excerpt)"
        if not self.has_banner:
            return "dmesg does not cover boot (no 'Linux version' line: an excerpt, e.g. grep output)"
        if through_iommu_init and not self.after_iommu_init:
            end = f" (last line at {self.last_time:g} s)" if self.last_time is not None else ""
            return f"dmesg ends before IOMMU initialisation finished{end}"
        return ""

    def __getattr__(self, name: str) -> list[str]:
        if name in _PATTERNS:
            return self.matches.get(name, [])
        raise AttributeError(name)

    def has(self, name: str) -> bool:
        return bool(self.matches.get(name))


def strip_prefix(line: str) -> str:
    """The kernel's message without the timestamp or syslog/journal prefix before it."""
    return _PREFIX.sub("", line, count=1)


def parse_dmesg(text: str, max_per_kind: int = 20) -> DmesgFacts:
    facts = DmesgFacts()
    for raw in text.splitlines():
        facts.lines_read += 1
        line = raw.rstrip()
        if not line:
            continue
        body = strip_prefix(line)
        stamp = _TIME.match(line)
        if stamp:
            seconds = float(stamp.group(1))
            facts.first_time = seconds if facts.first_time is None else facts.first_time
            facts.last_time = seconds
        facts.has_banner = facts.has_banner or bool(_BANNER.match(body))
        facts.after_iommu_init = facts.after_iommu_init or bool(_AFTER_IOMMU_INIT.search(body))
        if not may_match(body):
            continue
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
