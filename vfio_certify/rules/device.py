"""device.*: the devices named with --device, on this host."""
from __future__ import annotations

import re

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..facts.pci import PciDevice
from ..facts.usb import UsbDevice
from ..model import CheckResult, Outcome
from .catalog import not_collected, result

PRESENT = "device.present"
HOST_NETWORK = "device.host_network"
LIVE_MIGRATION = "device.live_migration"


def _pci_present(facts: HostFacts, spec: DeviceSpec, check_id: str) -> CheckResult:
    if facts.pci is None:
        return not_collected(check_id, "/sys/bus/pci/devices")
    device = facts.pci_device(spec.key)
    if device is None:
        bus = spec.key.rsplit(":", 1)[0]
        nearby = [d.summary() for a, d in facts.pci.items() if a.startswith(bus + ":")]
        if not nearby:
            nearby = [d.summary() for d in facts.pci.values() if d.class_pair[0] in (0x02, 0x03, 0x0C)][:8]
        return result(check_id, Outcome.FAILED, f"no PCI device {spec.key} on this host",
                      [f"/sys/bus/pci/devices/{spec.key} absent"] + nearby[:8],
                      "List the host's devices with `lspci -Dnn` and name one of them with --device.")
    details = [device.summary()]
    if device.driver_override:
        details.append(f"driver_override={device.driver_override}")
    if device.sriov_totalvfs:
        details.append(f"SR-IOV capable: {device.sriov_totalvfs} VFs, {device.sriov_numvfs or 0} enabled "
                       f"(echo N > /sys/bus/pci/devices/{device.address}/sriov_numvfs to share it between VMs)")
    if device.physfn:
        details.append(f"an SR-IOV virtual function of {device.physfn}")
    message = f"{device.address} {device.vendor_device} {device.class_name or ''}".rstrip()
    message += f" ({device.name})" if device.name else ""
    message += f", driver {device.driver}" if device.driver else ", no driver bound"
    return result(check_id, Outcome.PASSED, message, details)


def usb_matches(devices: list[UsbDevice], spec: DeviceSpec) -> list[UsbDevice]:
    bus_dev = spec.usb_bus_device
    if bus_dev:
        return [d for d in devices if (d.busnum, d.devnum) == bus_dev]
    return [d for d in devices if d.vendor_product == spec.usb_vendor_product]


def _usb_present(facts: HostFacts, spec: DeviceSpec, check_id: str) -> CheckResult:
    if facts.usb is None:
        return not_collected(check_id, "/sys/bus/usb/devices and lsusb")
    matches = usb_matches(facts.usb, spec)
    if not matches:
        others = [d.summary() for d in facts.usb if not d.is_root_hub][:8]
        return result(check_id, Outcome.FAILED, f"no USB device {spec.key} on this host",
                      others or ["no USB device besides root hubs"],
                      "List the host's USB devices with `lsusb` and name one as bus.device (004.002) or vendor:product.")
    if len(matches) > 1:
        return result(check_id, Outcome.WARNING,
                      f"{len(matches)} USB devices match {spec.key}: libvirt refuses an ambiguous vendor:product",
                      [d.summary() for d in matches],
                      "Name the device by bus.device instead (" + ", ".join(d.bus_device for d in matches) + ").")
    device = matches[0]
    message = device.summary()
    evidence = [device.summary()] + ([f"serial {device.serial}"] if device.serial else [])
    if spec.usb_bus_device:
        message += f"; bus.device changes when it is re-plugged, {device.vendor_product} does not"
    return result(check_id, Outcome.PASSED, message, evidence)


def present(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{PRESENT}[{spec.key}]"
    return _pci_present(facts, spec, check_id) if spec.is_pci else _usb_present(facts, spec, check_id)


def _interfaces_of(facts: HostFacts, device: PciDevice) -> list[str]:
    return sorted(n for n, i in (facts.net or {}).items() if i.device == device.address)


def host_network(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{HOST_NETWORK}[{spec.key}]"
    device = facts.pci_device(spec.key) if spec.is_pci else None
    if device is None:
        return result(check_id, Outcome.SKIPPED, "not judged: not a PCI device on this host")
    if device.class_pair[0] != 0x02:
        return result(check_id, Outcome.SKIPPED, f"not a network device ({device.class_name or 'unknown class'})")
    if facts.net is None:
        return not_collected(check_id, "/sys/class/net")
    names = _interfaces_of(facts, device)
    if not names:
        return result(check_id, Outcome.PASSED, f"{spec.key} has no host network interface (driver {device.driver or 'none'})")
    findings, evidence = [], []
    for name in names:
        iface = facts.net[name]
        word = re.compile(rf"\bdev {re.escape(name)}\b")
        routes = [r for r in facts.routes or [] if word.search(r)]
        if any(r.startswith("default") for r in routes):
            findings.append(f"{name} carries the default route")
        elif routes:
            findings.append(f"{name} carries {len(routes)} route(s)")
        evidence += routes[:3]
        if facts.ssh_session_address and facts.ssh_session_address in (facts.addresses or {}).get(name, []):
            findings.append(f"{name} carries the SSH session this certification runs over ({facts.ssh_session_address})")
        if iface.master:
            findings.append(f"{name} is a member of {iface.master} (bond or bridge)")
        uppers = sorted(n for n, i in facts.net.items() if name in i.lowers and n != iface.master)
        if uppers:
            findings.append(f"{name} carries {', '.join(uppers)} (VLAN or macvlan on top of it)")
    evidence.insert(0, f"{spec.key} is the host's {', '.join(names)}")
    if findings:
        return result(check_id, Outcome.FAILED,
                      f"{spec.key} is in use by the host: {'; '.join(findings)}. Assigning it cuts that traffic off",
                      evidence, "Pick a port the host does not use, or move the host's addresses and routes off "
                      f"{', '.join(names)} first (and out of any bond or bridge).")
    return result(check_id, Outcome.PASSED, f"{spec.key} ({', '.join(names)}) carries no host route and is in no bond or bridge", evidence)


def live_migration(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{LIVE_MIGRATION}[{spec.key}]"
    kind = "PCI" if spec.is_pci else "USB"
    return result(check_id, Outcome.PASSED,
                  f"a VM holding this {kind} <hostdev> cannot be live-migrated: libvirt refuses to migrate it "
                  "while the device is attached (detach first, or pair a virtio NIC with the VF through <teaming>)",
                  [])
