"""USB devices: sysfs attributes, named by lsusb (which also lists what sysfs missed)."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..model import HostFacts
from ..usb import UsbDevice, build_usb_device, parse_lsusb


def read_usb(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir(spec.USB_DEVICES.path)
    lsusb_out = snap.command(spec.LSUSB.line)
    listed = parse_lsusb(lsusb_out.stdout) if lsusb_out and lsusb_out.stdout.strip() else []
    devices: list[UsbDevice] = []
    source = spec.USB_ATTRIBUTES
    for name in names or []:
        if ":" in name:  # interfaces (4-1:1.0) are not devices
            continue
        attrs = {a: snap.read_value(f"{source.at(name)}/{a}") for a in source.names + source.text_names}
        device = build_usb_device(name, attrs)
        if device:
            devices.append(device)
    known = {d.bus_device for d in devices}
    for device in listed:  # lsusb knows names sysfs lacks; add what sysfs missed
        match = next((d for d in devices if d.bus_device == device.bus_device), None)
        if match and device.name:
            match.name = device.name
        elif device.bus_device not in known:
            devices.append(device)
    if names is not None or lsusb_out is not None:
        facts.usb = sorted(devices, key=lambda d: (d.busnum, d.devnum))
