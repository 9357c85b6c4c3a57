"""The devices a user names with --device: PCI addresses and USB devices."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .facts.pci import normalize_pci_address

_USB_BUS_DEVICE = re.compile(r"^(\d{1,3})\.(\d{1,3})$")
_USB_VENDOR_PRODUCT = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")


class DeviceSpecError(ValueError):
    """A --device value that names no device form; str() is the one-line usage error."""


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "pci" or "usb"
    key: str  # the normalized form used in check ids: 0000:07:00.1, 10000:e1:00.0, 004.002, 152d:9561
    given: str  # as typed

    @property
    def is_pci(self) -> bool:
        return self.kind == "pci"

    @property
    def usb_bus_device(self) -> tuple[int, int] | None:
        match = _USB_BUS_DEVICE.match(self.key)
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def usb_vendor_product(self) -> str | None:
        return self.key if _USB_VENDOR_PRODUCT.match(self.key) else None


def parse_device(text: str) -> DeviceSpec:
    given = text.strip()
    address = normalize_pci_address(given)
    if address:
        return DeviceSpec("pci", address, given)
    match = _USB_BUS_DEVICE.match(given)
    if match:
        bus, dev = int(match.group(1)), int(match.group(2))
        if 1 <= bus <= 255 and 1 <= dev <= 127:
            return DeviceSpec("usb", f"{bus:03d}.{dev:03d}", given)
    match = _USB_VENDOR_PRODUCT.match(given)
    if match:
        return DeviceSpec("usb", given.lower(), given)
    raise DeviceSpecError(
        f"--device {given!r}: not a PCI address (0000:07:00.1, 07:00.1, or 10000:e1:00.0 behind Intel VMD), "
        "a USB bus.device (004.002) or a USB vendor:product (152d:9561)"
    )


def parse_devices(texts: list[str]) -> list[DeviceSpec]:
    specs: list[DeviceSpec] = []
    for text in texts:
        spec = parse_device(text)
        if spec.key not in {s.key for s in specs}:
            specs.append(spec)
    return specs
