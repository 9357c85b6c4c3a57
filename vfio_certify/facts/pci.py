"""PCI functions: sysfs attributes from the snapshot, names from `lspci -nnk`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..snapshot.reader import PathState
from .fact import Fact

# (base class, subclass) -> name; base class alone as a fallback (PCI Code and ID Assignment spec).
_CLASS_NAMES = {
    (0x01, 0x00): "SCSI storage controller", (0x01, 0x01): "IDE interface",
    (0x01, 0x04): "RAID bus controller", (0x01, 0x06): "SATA controller",
    (0x01, 0x07): "Serial Attached SCSI controller", (0x01, 0x08): "Non-Volatile memory controller",
    (0x02, 0x00): "Ethernet controller", (0x02, 0x07): "InfiniBand controller", (0x02, 0x80): "Network controller",
    (0x03, 0x00): "VGA compatible controller", (0x03, 0x02): "3D controller", (0x03, 0x80): "Display controller",
    (0x04, 0x03): "Audio device", (0x04, 0x01): "Multimedia audio controller",
    (0x05, 0x00): "RAM memory", (0x06, 0x00): "Host bridge", (0x06, 0x01): "ISA bridge",
    (0x06, 0x04): "PCI bridge", (0x06, 0x09): "PCI bridge", (0x06, 0x80): "Bridge",
    (0x08, 0x06): "IOMMU", (0x08, 0x80): "System peripheral", (0x0C, 0x03): "USB controller",
    (0x0C, 0x05): "SMBus", (0x10, 0x80): "Encryption controller", (0x11, 0x01): "Signal processing controller",
    (0x12, 0x00): "Processing accelerators", (0x13, 0x00): "Non-Essential Instrumentation",
}
_BASE_NAMES = {
    0x01: "Mass storage controller", 0x02: "Network controller", 0x03: "Display controller",
    0x04: "Multimedia controller", 0x05: "Memory controller", 0x06: "Bridge",
    0x07: "Communication controller", 0x08: "Generic system peripheral", 0x0C: "Serial bus controller",
    0x10: "Encryption controller", 0x11: "Signal processing controller", 0x12: "Processing accelerators",
}
# Header type 1 functions: PCI-to-PCI bridges and root ports. They never get assigned
# and do not break a group's viability.
_BRIDGE_CLASSES = {(0x06, 0x04), (0x06, 0x09)}
# Domains are 4 hex digits, or more past 0xffff: Intel VMD puts its child devices in domain 10000 and up.
_ADDRESS = re.compile(r"^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")
_LSPCI_HEAD = re.compile(r"^((?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+(.*)$")


def normalize_pci_address(text: str) -> Optional[str]:
    """'07:00.1' or '0000:07:00.1' -> '0000:07:00.1', '10000:e1:00.0' as is (sysfs spells the domain %04x);
    None when it is not a PCI address."""
    match = _ADDRESS.match(text.strip())
    if not match:
        return None
    domain, bus, slot, function = match.groups()
    return f"{int(domain or '0', 16):04x}:{bus.lower()}:{slot.lower()}.{function}"


def _hex(value: Optional[str], digits: int) -> str:
    if not value:
        return ""
    text = value.strip().lower()
    text = text[2:] if text.startswith("0x") else text
    try:
        return f"{int(text, 16):0{digits}x}"
    except ValueError:
        return ""


@dataclass
class PciDevice:
    address: str
    vendor: str = ""  # "8086"
    device: str = ""  # "1521"
    class_code: str = ""  # "020000"
    driver: str = ""
    iommu_group: Optional[int] = None
    driver_override: str = ""
    sriov_totalvfs: Optional[int] = None
    sriov_numvfs: Optional[int] = None
    physfn: str = ""
    description: str = ""  # from lspci, "Ethernet controller [0200]: Intel Corporation I350 ..."
    # whether `driver` is known: PRESENT bound, ABSENT known unbound, NOT_COLLECTED (driver link not collected)
    driver_state: Optional[PathState] = None  # None: PRESENT when driver is set, else ABSENT (hand-built devices)
    driver_source: str = ""  # what told: the sysfs driver link or lspci -nnk

    def __post_init__(self) -> None:
        if self.driver:
            self.driver_state = PathState.PRESENT
        elif self.driver_state is None or self.driver_state is PathState.PRESENT:
            self.driver_state = PathState.ABSENT

    @property
    def bound(self) -> Fact[str]:
        """The driver this function is bound to: known, known unbound, or not collected."""
        source = self.driver_source or f"/sys/bus/pci/devices/{self.address}/driver"
        return Fact(self.driver_state or PathState.ABSENT, source, self.driver or None)

    @property
    def vendor_device(self) -> str:
        return f"{self.vendor}:{self.device}" if self.vendor and self.device else ""

    @property
    def class_pair(self) -> tuple[int, int]:
        code = self.class_code or "000000"
        try:
            return int(code[0:2], 16), int(code[2:4], 16)
        except ValueError:
            return 0, 0

    @property
    def class_name(self) -> str:
        pair = self.class_pair
        if not self.class_code:
            return ""
        return _CLASS_NAMES.get(pair) or _BASE_NAMES.get(pair[0]) or f"class {self.class_code}"

    @property
    def is_bridge(self) -> bool:
        return self.class_pair in _BRIDGE_CLASSES

    @property
    def name(self) -> str:
        """lspci's vendor and device names without the class prefix."""
        _, sep, rest = self.description.partition(": ")
        return rest if sep else self.description

    def summary(self) -> str:
        bits = [self.address, self.vendor_device or "?:?", self.class_name or "unknown class"]
        if self.name:
            bits.append(f"({self.name})")
        bits.append(f"driver {self.driver}" if self.driver else
                    "driver not collected" if self.driver_state is PathState.NOT_COLLECTED else "no driver")
        return " ".join(bits)


@dataclass
class LspciEntry:
    address: str
    description: str
    driver: str = ""
    modules: list[str] = field(default_factory=list)


def parse_lspci_nnk(text: str) -> dict[str, LspciEntry]:
    entries: dict[str, LspciEntry] = {}
    current: Optional[LspciEntry] = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            match = _LSPCI_HEAD.match(line.strip())
            current = None
            if match:
                address = normalize_pci_address(match.group(1))
                if address:
                    current = entries[address] = LspciEntry(address, match.group(2).strip())
            continue
        if current is None:
            continue
        key, _, value = line.strip().partition(":")
        if key == "Kernel driver in use":
            current.driver = value.strip()
        elif key == "Kernel modules":
            current.modules = [m.strip() for m in value.split(",") if m.strip()]
    return entries


def build_pci_device(address: str, attrs: dict[str, Optional[str]], driver: Optional[str],
                     group: Optional[str], physfn: Optional[str]) -> PciDevice:
    """A PciDevice from sysfs attribute texts (pure: the caller reads the files)."""

    def as_int(value: Optional[str]) -> Optional[int]:
        try:
            return int((value or "").strip())
        except ValueError:
            return None

    override = (attrs.get("driver_override") or "").strip()
    return PciDevice(
        address=address,
        vendor=_hex(attrs.get("vendor"), 4),
        device=_hex(attrs.get("device"), 4),
        class_code=_hex(attrs.get("class"), 6),
        driver=driver or "",
        iommu_group=as_int(group),
        driver_override="" if override in ("(null)", "") else override,
        sriov_totalvfs=as_int(attrs.get("sriov_totalvfs")),
        sriov_numvfs=as_int(attrs.get("sriov_numvfs")),
        physfn=physfn or "",
    )
