"""/proc/cpuinfo: vendor, model and flags of the first processor that has them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CpuInfo:
    vendor: str = ""  # GenuineIntel, AuthenticAMD, HygonGenuine, ...
    model_name: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    processors: int = 0

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
    info.flags = flags or frozenset()
    return info
