"""USB devices: sysfs attributes from the snapshot and `lsusb` lines."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_LSUSB = re.compile(r"^Bus (\d{3}) Device (\d{3}): ID ([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\s?(.*)$")


@dataclass
class UsbDevice:
    sysfs_id: str  # "4-1", "" when only lsusb knew it
    vendor: str  # "152d"
    product: str  # "9561"
    busnum: int
    devnum: int
    name: str = ""  # "JMicron ... goreche" (lsusb) or manufacturer + product (sysfs)
    serial: str = ""
    device_class: str = ""  # bDeviceClass: "09" a hub, "00" per interface

    @property
    def vendor_product(self) -> str:
        return f"{self.vendor}:{self.product}"

    @property
    def bus_device(self) -> str:
        return f"{self.busnum:03d}.{self.devnum:03d}"

    @property
    def is_root_hub(self) -> bool:
        return self.vendor == "1d6b"

    @property
    def is_hub(self) -> bool:
        """A hub (root hubs included): QEMU's usb-host passes single devices through, never a hub."""
        return self.is_root_hub or self.device_class == "09" or (bool(self.sysfs_id) and self.devnum == 1)

    def summary(self) -> str:
        text = f"Bus {self.busnum:03d} Device {self.devnum:03d}: ID {self.vendor_product}"
        return f"{text} {self.name}".rstrip()


def parse_lsusb(text: str) -> list[UsbDevice]:
    devices = []
    for line in text.splitlines():
        match = _LSUSB.match(line.strip())
        if match:
            bus, dev, vendor, product, name = match.groups()
            devices.append(UsbDevice("", vendor.lower(), product.lower(), int(bus), int(dev), name.strip()))
    return devices


def build_usb_device(sysfs_id: str, attrs: dict[str, Optional[str]]) -> Optional[UsbDevice]:
    """A UsbDevice from sysfs attribute texts; None for interfaces and unreadable entries."""
    vendor, product = (attrs.get("idVendor") or "").strip().lower(), (attrs.get("idProduct") or "").strip().lower()
    try:
        busnum, devnum = int((attrs.get("busnum") or "").strip()), int((attrs.get("devnum") or "").strip())
    except ValueError:
        return None
    if not re.fullmatch(r"[0-9a-f]{4}", vendor) or not re.fullmatch(r"[0-9a-f]{4}", product):
        return None
    name = " ".join(x.strip() for x in (attrs.get("manufacturer"), attrs.get("product")) if x and x.strip())
    return UsbDevice(sysfs_id, vendor, product, busnum, devnum, name, (attrs.get("serial") or "").strip(),
                     (attrs.get("bDeviceClass") or "").strip().lower())


def matching_usb(devices: list[UsbDevice], bus_device: Optional[tuple[int, int]], vendor_product: str) -> list[UsbDevice]:
    """The devices a --device names: by bus.device when given (004.002), else by vendor:product."""
    if bus_device:
        return [d for d in devices if (d.busnum, d.devnum) == bus_device]
    return [d for d in devices if d.vendor_product == vendor_product]
