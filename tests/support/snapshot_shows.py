"""What a snapshot plainly shows, read straight from its files (not through vfio-certify's facts layer),
and the failed results whose fix asks for something it shows: "modprobe kvm_intel" beside kvm_intel in
/proc/modules, "no PCI device 0000:2d:00.0" beside it in lspci, "enable the IOMMU in the firmware" beside
populated IOMMU groups, "boot a kernel built with CONFIG_VFIO" with vfio loaded."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vfio_certify.model import CheckResult, Outcome

_MODULE_LINE = re.compile(r"^([a-z0-9_]+) \d+ \d+ ", re.M)
_LSPCI_LINE = re.compile(r"^(?:([0-9a-f]{4}):)?([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ", re.M)
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace") if path.is_file() and not path.is_symlink() else ""
    except OSError:
        return ""


def _names(path: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith(".snapshot")) if path.is_dir() else []
    except OSError:
        return []


@dataclass(frozen=True)
class Shown:
    modules: frozenset[str]  # in /proc/modules, or a /sys/module folder (loaded or built in)
    pci: frozenset[str]  # in /sys/bus/pci/devices or lspci -nnk
    populated_groups: int
    iommu_units: tuple[str, ...]
    kvm_node: bool
    vfio_node: bool
    remapped_irqs: bool  # an IR- chip in /proc/interrupts
    cmdline: tuple[str, ...]

    @classmethod
    def read(cls, snapshot: Path) -> "Shown":
        root = snapshot / "root"
        modules = set(_MODULE_LINE.findall(_text(root / "proc/modules"))) | set(_names(root / "sys/module"))
        pci = {a for a in _names(root / "sys/bus/pci/devices") if _PCI_ADDRESS.match(a)}
        pci |= {f"{domain or '0000'}:{rest}" for domain, rest in _LSPCI_LINE.findall(_text(snapshot / "commands/lspci_-nnk"))}
        groups = root / "sys/kernel/iommu_groups"
        populated = sum(1 for g in _names(groups) if _names(groups / g / "devices"))
        return cls(frozenset(modules), frozenset(pci), populated, tuple(_names(root / "sys/class/iommu")),
                   os.path.lexists(root / "dev/kvm"), os.path.lexists(root / "dev/vfio/vfio"),
                   "IR-" in _text(root / "proc/interrupts"), tuple(_text(root / "proc/cmdline").split()))


# CONFIG_X whose presence the running host shows: a module of it loaded (or built in), or what only it makes.
_CONFIG_SHOWN_BY = {
    "CONFIG_VFIO": lambda s: "vfio" in s.modules,
    "CONFIG_VFIO_PCI": lambda s: "vfio_pci" in s.modules,
    "CONFIG_VFIO_IOMMU_TYPE1": lambda s: "vfio_iommu_type1" in s.modules,
    "CONFIG_IOMMU_SUPPORT": lambda s: s.populated_groups > 0,
    "CONFIG_IOMMU_API": lambda s: s.populated_groups > 0,
    "CONFIG_INTEL_IOMMU": lambda s: any(u.startswith("dmar") for u in s.iommu_units),
    "CONFIG_AMD_IOMMU": lambda s: any(u.startswith("ivhd") for u in s.iommu_units),
    "CONFIG_IRQ_REMAP": lambda s: s.remapped_irqs,
}
_IOMMU_FIRMWARE_FIX = ("Enable Intel VT-d", "Enable the IOMMU in the firmware setup")
_VTX_FIRMWARE_FIX = "Enable 'Intel Virtualization Technology' (VT-x)"


def unfounded(result: CheckResult, shown: Shown) -> list[str]:
    """Why a failed result's message or fix asks for what the snapshot shows the host has ([] if none)."""
    if result.outcome is not Outcome.FAILED:
        return []
    said, fix, why = result.message, result.remediation, []
    for module in sorted(shown.modules):
        if f"{module} not loaded" in said or re.search(rf"^modprobe {module.replace('_', '-')}$", fix, re.M):
            why.append(f"asks to load {module}, which is loaded")
    why += [f"says there is no PCI device {a}, which the snapshot lists"
            for a in re.findall(r"no PCI device (\S+)", said) if a in shown.pci]
    if any(f in fix for f in _IOMMU_FIRMWARE_FIX) and (shown.populated_groups or shown.iommu_units):
        why.append(f"asks to enable the IOMMU in the firmware beside {shown.populated_groups} populated groups "
                   f"and units {', '.join(shown.iommu_units) or 'none'}")
    if _VTX_FIRMWARE_FIX in fix and (shown.kvm_node or {"kvm_intel", "kvm_amd"} & shown.modules):
        why.append("asks to enable VT-x/AMD-V in the firmware while KVM runs")
    why += [f"asks for a kernel built with {option}, which the running host shows"
            for option, shows in _CONFIG_SHOWN_BY.items()
            if re.search(rf"Boot a kernel built with {option}=", fix) and shows(shown)]
    intel = [t.split("=", 1)[1] for t in shown.cmdline if t.startswith("intel_iommu=")]
    if intel and intel[-1] == "on" and re.search(r"(?i)(add|--args=\")[^\n]*intel_iommu=on", fix):
        why.append("asks to add intel_iommu=on, which the command line has")
    if "/dev/kvm does not exist" in said and shown.kvm_node:
        why.append("says /dev/kvm does not exist, which the snapshot has")
    if "/dev/vfio/vfio does not exist" in said and shown.vfio_node:
        why.append("says /dev/vfio/vfio does not exist, which the snapshot has")
    return why
