"""Kernel build configuration (/boot/config-$(uname -r) or /proc/config.gz)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass
class KernelConfig:
    source: str = ""  # where it was read from, e.g. /boot/config-5.14.0-...
    options: dict[str, str] = field(default_factory=dict)  # name -> y, m, n (not set), or the value
    truncated: bool = False  # the file was cut short (see truncated_why)
    truncated_why: str = ""  # "last line incomplete", or the menu-end marker missing at its end
    unreadable_lines: int = 0

    def value(self, name: str) -> Optional[str]:
        """'y', 'm', 'n' ('is not set'), another value, or None when the option is not in the file."""
        return self.options.get(name)

    def enabled(self, name: str) -> bool:
        return self.options.get(name) in ("y", "m")

    def line(self, name: str) -> str:
        value = self.options.get(name)
        if value is None:
            return f"{name} absent from {self.source}"
        if value == "n":
            return f"# {name} is not set"
        return f"{name}={value}"


def parse_kernel_config(text: str, source: str = "") -> KernelConfig:
    config = KernelConfig(source=source)
    lines = text.split("\n")
    if text and not text.endswith("\n"):
        config.truncated, config.truncated_why = True, "last line incomplete"
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        match = _SET.match(line)
        if match:
            config.options[match.group(1)] = match.group(2).strip().strip('"')
            continue
        match = _NOT_SET.match(line)
        if match:
            config.options[match.group(1)] = "n"
            continue
        if not line.startswith("#"):
            config.unreadable_lines += 1
    # Since 5.x the writer closes every menu with "# end of <menu>", so a whole file ends with one ("# end of
    # Kernel hacking"), followed at most by options a config fragment appended (a blank line, then CONFIG_ lines,
    # as a 6.18 kernel's /proc/config.gz ends with CONFIG_IO_URING_ZCRX=y). Anything else after the last marker
    # (a menu's comment header, an unclosed menu) means the file was cut at a line end.
    ends = [i for i, ln in enumerate(lines) if ln.startswith("# end of ")]
    tail = [ln.strip() for ln in lines[ends[-1] + 1:]] if ends else []
    if not config.truncated and any(ln and not (_SET.match(ln) or _NOT_SET.match(ln)) for ln in tail):
        config.truncated, config.truncated_why = True, "its last menu is never closed ('# end of ...')"
    if config.truncated and lines and lines[-1].strip():
        # The cut line may hold half a value ("CONFIG_VFIO=") or half a name: do not trust it.
        match = _SET.match(lines[-1].strip())
        if match:
            config.options.pop(match.group(1), None)
    return config


# An option the Kconfig writer leaves out of the file when its parent (the menu or option it depends on) is off.
PARENTS = {
    "CONFIG_VFIO_PCI": "CONFIG_VFIO", "CONFIG_VFIO_IOMMU_TYPE1": "CONFIG_VFIO", "CONFIG_VFIO_PCI_CORE": "CONFIG_VFIO",
    "CONFIG_KVM_VFIO": "CONFIG_KVM", "CONFIG_INTEL_IOMMU": "CONFIG_IOMMU_SUPPORT", "CONFIG_AMD_IOMMU": "CONFIG_IOMMU_SUPPORT",
    "CONFIG_IRQ_REMAP": "CONFIG_IOMMU_SUPPORT", "CONFIG_INTEL_IOMMU_DEFAULT_ON": "CONFIG_INTEL_IOMMU",
}


def parent_not_set(config: KernelConfig, name: str) -> str:
    """For an option absent from the file: the ancestor whose being off left it out ('CONFIG_VFIO'), or ''."""
    parent = PARENTS.get(name)
    while parent and config.value(name) is None:
        if config.value(parent) == "n":
            return parent
        name, parent = parent, PARENTS.get(parent)
    return ""


def iommufd_container(config: KernelConfig | None) -> str:
    """The config lines saying iommufd provides /dev/vfio/vfio instead of VFIO's type1 container (6.2+:
    CONFIG_IOMMUFD_VFIO_CONTAINER=y with CONFIG_VFIO_CONTAINER off): then no vfio_iommu_type1 is needed. '' if not."""
    if config is None or config.value("CONFIG_IOMMUFD_VFIO_CONTAINER") != "y" or config.value("CONFIG_VFIO_CONTAINER") == "y":
        return ""
    return f"{config.line('CONFIG_IOMMUFD_VFIO_CONTAINER')}, {config.line('CONFIG_VFIO_CONTAINER')}"
