"""/proc/cpuinfo: vendor, model and flags of the first processor that has them.

x86 lists vendor_id and flags (vmx, svm); arm64 lists "CPU implementer", "CPU part" and Features, and
has no flag for virtualization at all: there KVM needs the kernel booted at EL2 (dmesg, /dev/kvm)."""
from __future__ import annotations

from dataclasses import dataclass, field


# arm64 MIDR implementer/part -> core name (arch/arm64/include/asm/cputype.h), for the servers and boards
# that assign devices; an unknown pair is named by its numbers.
ARM_CORES = {
    ("0x41", "0xd08"): "Arm Cortex-A72", ("0x41", "0xd05"): "Arm Cortex-A55", ("0x41", "0xd0b"): "Arm Cortex-A76",
    ("0x41", "0xd0c"): "Arm Neoverse N1", ("0x41", "0xd40"): "Arm Neoverse V1", ("0x41", "0xd49"): "Arm Neoverse N2",
    ("0x41", "0xd4f"): "Arm Neoverse V2", ("0x48", "0xd01"): "HiSilicon TaiShan v110 (Kunpeng 920)",
    ("0xc0", "0xac3"): "AmpereOne",
}


@dataclass
class CpuInfo:
    vendor: str = ""  # GenuineIntel, AuthenticAMD, HygonGenuine, ...
    model_name: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    processors: int = 0
    implementer: str = ""  # arm64 MIDR fields: "0x41" (Arm), "0x48" (HiSilicon), "0xc0" (Ampere), ...
    part: str = ""  # "0xd0c" (Neoverse N1), "0xd4f" (Neoverse V2), ...
    features: frozenset[str] = field(default_factory=frozenset)  # arm64 "Features" (fp asimd ...)

    @property
    def name(self) -> str:
        """The model name (x86), or the arm64 core named from its implementer and part."""
        if self.model_name or not self.implementer:
            return self.model_name
        return ARM_CORES.get((self.implementer, self.part), f"arm64 implementer {self.implementer} part {self.part}")

    @property
    def arch(self) -> str:
        """'arm64' or 'x86' as the file's own keys say, '' when it shows neither."""
        if self.implementer or self.features:
            return "arm64"
        if self.vendor or self.flags:
            return "x86"
        return ""

    @property
    def vendor_short(self) -> str:
        if self.vendor == "GenuineIntel":
            return "intel"
        if self.vendor in ("AuthenticAMD", "HygonGenuine"):
            return "amd"
        return ""

    @property
    def virtualization(self) -> str:
        """'vmx' (Intel VT-x), 'svm' (AMD-V) or '' when the CPU exposes neither."""
        if "vmx" in self.flags:
            return "vmx"
        if "svm" in self.flags:
            return "svm"
        return ""

    @property
    def is_virtual_machine(self) -> bool:
        return "hypervisor" in self.flags


def parse_cpuinfo(text: str) -> CpuInfo:
    info = CpuInfo()
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            info.processors += 1
        elif key == "vendor_id" and not info.vendor:
            info.vendor = value
        elif key == "model name" and not info.model_name:
            info.model_name = value
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
        elif key == "CPU implementer" and not info.implementer:
            info.implementer = value
        elif key == "CPU part" and not info.part:
            info.part = value
        elif key == "Features" and not info.features:
            info.features = frozenset(value.split())
    info.flags = flags or frozenset()
    return info
