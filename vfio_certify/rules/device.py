"""device.*: the devices named with --device, on this host."""
from __future__ import annotations

import re
from typing import Optional

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..facts.pci import PciDevice
from ..facts.usb import UsbDevice, matching_usb
from ..model import CheckResult, Outcome
from .catalog import INFO, RECOMMENDED, REQUIRED, check, NOT_APPLICABLE, not_collected, result


def _pci_present(facts: HostFacts, spec: DeviceSpec, check_id: str) -> CheckResult:
    if facts.pci is None:
        return not_collected(check_id, "/sys/bus/pci/devices")
    device = facts.pci_device(spec.key)
    if device is None and spec.key in (facts.lspci_addresses or []):
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: lspci lists {spec.key}, but /sys/bus/pci/devices/{spec.key} was not collected",
                      [f"/sys/bus/pci/devices holds {len(facts.pci)} functions, not {spec.key}"])
    if device is None:
        bus = spec.key.rsplit(":", 1)[0]
        nearby = [d.summary() for a, d in facts.pci.items() if a.startswith(bus + ":")]
        if not nearby:
            nearby = [d.summary() for d in facts.pci.values() if d.class_pair[0] in (0x02, 0x03, 0x0C)][:8]
        # 07:00.1 means domain 0000: the same bus:slot.function in another domain (VMD, multi-segment hosts)
        elsewhere = [a for a in facts.pci if a.split(":", 1)[1] == spec.key.split(":", 1)[1] and a != spec.key]
        return result(check_id, Outcome.FAILED,
                      f"no PCI device {spec.key} on this host" + (f" (but {', '.join(elsewhere)} exists: name it with "
                                                                   "its domain)" if elsewhere else ""),
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
    return matching_usb(devices, spec.usb_bus_device, spec.usb_vendor_product)


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
        return result(check_id, Outcome.FAILED,
                      f"{len(matches)} USB devices match {spec.key}: libvirt refuses an ambiguous vendor:product",
                      [d.summary() for d in matches],
                      "Name the device by bus.device instead (" + ", ".join(d.bus_device for d in matches) + ").")
    device = matches[0]
    if device.is_hub:
        return result(check_id, Outcome.FAILED,
                      f"{spec.key} is a USB {'root hub' if device.is_root_hub or device.devnum == 1 else 'hub'}: "
                      "QEMU's usb-host passes single devices through, never a hub", [device.summary()],
                      "Name the device plugged into it (lsusb -t shows the tree).")
    message = device.summary()
    evidence = [device.summary()] + ([f"serial {device.serial}"] if device.serial else [])
    if spec.usb_bus_device:
        message += f"; bus.device changes when it is re-plugged, {device.vendor_product} does not"
    return result(check_id, Outcome.PASSED, message, evidence)


@check("device.present", REQUIRED, "the named device exists on the host")
def present(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{present.id}[{spec.key}]"
    return _pci_present(facts, spec, check_id) if spec.is_pci else _usb_present(facts, spec, check_id)


def _interfaces_of(facts: HostFacts, device: PciDevice) -> list[str]:
    return sorted(n for n, i in (facts.net or {}).items() if i.device == device.address)


def _is_link_local(route: str) -> bool:
    """fe80::/64 is on every IPv6-enabled interface that is up: it carries no configured traffic."""
    return route.startswith("fe80::/64 ")


def _host_use(facts: HostFacts, name: str) -> tuple[list[str], list[str]]:
    """What the host does with netdev `name`: (findings, evidence)."""
    iface, findings = facts.net[name], []
    word = re.compile(rf"(?:^|\s)dev {re.escape(name)}(?:\s|$)")  # not eth0.100 for eth0
    routes = [r for r in facts.routes or [] if word.search(r) and not _is_link_local(r)]
    if any(r.startswith("default") for r in routes):
        findings.append(f"{name} carries the default route")
    elif routes:
        findings.append(f"{name} carries {len(routes)} route(s)")
    addresses = [a for a in (facts.addresses or {}).get(name, []) if not a.lower().startswith("fe80:")]
    if addresses and not routes:  # routes in another table (policy routing), or a /32 with none at all
        findings.append(f"{name} has the address(es) {', '.join(addresses[:3])}")
    if facts.ssh_session_address and facts.ssh_session_address in (facts.addresses or {}).get(name, []):
        findings.append(f"{name} carries the SSH session this certification runs over ({facts.ssh_session_address})")
    if iface.master:
        findings.append(f"{name} is a member of {iface.master} (bond or bridge)")
    uppers = sorted(n for n, i in facts.net.items() if name in i.lowers and n != iface.master)
    if uppers:
        findings.append(f"{name} carries {', '.join(uppers)} (VLAN or macvlan on top of it)")
    return findings, routes[:3]


def _usb_netdevs(facts: HostFacts, spec: DeviceSpec, check_id: str) -> tuple[Optional[CheckResult], list[str]]:
    """(None, netdevs on the named USB device: a USB NIC's netdev sits on one of its interfaces, 4-1:1.0), or
    (the skipped result saying why it is not judged, [])."""
    if facts.usb is None:
        return not_collected(check_id, "/sys/bus/usb/devices"), []
    matches = usb_matches(facts.usb, spec)
    if len(matches) != 1:  # not on the host, or ambiguous: device.present fails
        return result(check_id, Outcome.SKIPPED, "not applicable: see device.present", skip_reason=NOT_APPLICABLE), []
    if not matches[0].sysfs_id:  # only lsusb knew it: which netdev sits on it is in sysfs
        return not_collected(check_id, "/sys/bus/usb/devices"), []
    usb = matches[0].sysfs_id
    return None, sorted(n for n, i in (facts.net or {}).items() if i.device.split(":", 1)[0] == usb)


_ROUTE = re.compile(r"^(?:(?:unicast|local|broadcast|multicast|throw|unreachable|prohibit|blackhole|nat|anycast) )?"
                    r"(?:default|[0-9a-fA-F.:]+(?:/\d{1,3})?)(?:\s|$)")


# A NIC's name under systemd's or the kernel's own naming: it sits on a device (virtual netdevs have other names).
_PHYSICAL_NAME = re.compile(r"^(?:en|eth|wl|ww|ib)[a-z0-9]")


def _routes_unreadable(facts: HostFacts) -> str:
    """Why the routing table cannot show that an interface carries nothing ('' when it can): it is empty (a host
    whose NIC is up has at least its link's route), a line is not a route (a file cut short or garbled), or a
    route, bridge or bond names an interface /sys/class/net does not list (a folder missing from the snapshot)."""
    if not facts.routes:
        return "the routing table (ip -o route) is empty"
    for line in facts.routes:
        special = _ROUTE.match(line) and line.split()[0] in ("unreachable", "prohibit", "blackhole", "throw")
        if not _ROUTE.match(line) or not (special or re.search(r"\s(?:dev|via|nexthop)\s", line)):
            return f"the routing table (ip -o route) is damaged or cut short: {line[:60]!r} is not a route"
    named = set(re.findall(r"\bdev (\S+)", " ".join(facts.routes)))
    named |= {n for i in (facts.net or {}).values() for n in (i.master, *i.lowers) if n}
    unlisted = sorted(n for n in named if n not in (facts.net or {}))
    if unlisted:  # a route, bridge or bond names an interface /sys/class/net does not list: the listing is not whole
        return f"/sys/class/net lacks {', '.join(unlisted[:3])}, which routes, bridges or bonds name"
    return ""


@check("device.host_network", RECOMMENDED, "a named NIC does not carry the host's own network")
def host_network(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{host_network.id}[{spec.key}]"
    vf_names: dict[str, str] = {}
    if spec.is_pci:
        if facts.pci is None:
            return not_collected(check_id, "/sys/bus/pci/devices")
        device = facts.pci_device(spec.key)
        if device is None:  # the PCI list was collected and does not hold it: device.present fails
            return result(check_id, Outcome.SKIPPED, f"not applicable: {spec.key} is not on this host (see device.present)",
                          skip_reason=NOT_APPLICABLE)
        if not device.class_code:
            return not_collected(check_id, f"/sys/bus/pci/devices/{spec.key}/class")
        if device.class_pair[0] != 0x02:
            return result(check_id, Outcome.SKIPPED, f"not applicable: not a network device ({device.class_name})",
                          skip_reason=NOT_APPLICABLE)
        if facts.net is None:
            return not_collected(check_id, "/sys/class/net")
        # An SR-IOV PF takes its VFs with it: unbinding it destroys them, so their host use is its own.
        vfs = sorted(a for a, d in (facts.pci or {}).items() if d.physfn == device.address)
        names = _interfaces_of(facts, device)
        vf_names = {n: vf for vf in vfs for n in _interfaces_of(facts, facts.pci[vf])}
        unplaced = sorted(n for n, i in facts.net.items() if not i.device and _PHYSICAL_NAME.match(n))
        if not names and not vf_names and (_routes_unreadable(facts) or unplaced):
            why = _routes_unreadable(facts) or (f"which device {', '.join(unplaced[:3])} sits on: its "
                                                "/sys/class/net/*/device link was not collected")
            return result(check_id, Outcome.SKIPPED, f"not judged: {why}", [f"{spec.key} has no netdev in /sys/class/net"])
        if not names and not vf_names:
            return result(check_id, Outcome.PASSED,
                          f"{spec.key} has no host network interface (driver {device.driver or 'none'})"
                          + (f"; its {len(vfs)} VF(s) have none either" if vfs else ""))
    else:  # a USB network adapter passed through as a USB <hostdev> takes its netdev from the host as well
        if facts.net is None:
            return not_collected(check_id, "/sys/class/net")
        skipped, names = _usb_netdevs(facts, spec, check_id)
        if skipped is not None:
            return skipped
        if not names:
            return result(check_id, Outcome.SKIPPED, "not applicable: not a network device (no netdev on it)",
                          skip_reason=NOT_APPLICABLE)
    findings, evidence = [], []
    for name in names + sorted(vf_names):
        found, routes = _host_use(facts, name)
        via = f"VF {vf_names[name]}: " if name in vf_names else ""
        findings += [via + f for f in found]
        evidence += routes
    if facts.routes is None and not findings:
        return result(check_id, Outcome.SKIPPED, "not judged: the routing table (ip -o route) was not collected",
                      [f"{spec.key} is the host's {', '.join(names + sorted(vf_names))}"])
    if not findings and _routes_unreadable(facts):
        return result(check_id, Outcome.SKIPPED, f"not judged: {_routes_unreadable(facts)}",
                      [f"{spec.key} is the host's {', '.join(names + sorted(vf_names))}"])
    evidence.insert(0, f"{spec.key} is the host's {', '.join(names)}" if names else f"{spec.key} has no netdev")
    if vf_names:
        evidence.insert(1, "its VFs: " + ", ".join(f"{vf} ({n})" for n, vf in sorted(vf_names.items())))
    if findings:
        return result(check_id, Outcome.FAILED,
                      f"{spec.key} is in use by the host: {'; '.join(findings)}. Assigning it cuts that traffic off",
                      evidence, "Pick a port the host does not use, or move the host's addresses and routes off "
                      f"{', '.join(names or sorted(vf_names))} first (and out of any bond or bridge).")
    return result(check_id, Outcome.PASSED, f"{spec.key} ({', '.join(names)}) carries no host route and is in no bond or bridge", evidence)


@check("device.live_migration", INFO, "what a <hostdev> means for live migration")
def live_migration(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    """libvirt's qemuMigrationSrcIsAllowedHostdev: USB hostdevs may migrate (the destination must have the
    device); PCI ones block it unless the device supports VFIO migration or is a NIC VF under <teaming>."""
    check_id = f"{live_migration.id}[{spec.key}]"
    if not spec.is_pci:
        return result(check_id, Outcome.PASSED,
                      "a VM holding this USB <hostdev> can be live-migrated only to a host that has the same device "
                      "(libvirt looks it up there by the same vendor:product or bus.device)", [])
    return result(check_id, Outcome.PASSED,
                  "a VM holding this PCI <hostdev> cannot be live-migrated while it is attached (detach first, pair a "
                  "virtio NIC with the VF through <teaming>, or use a device and driver with VFIO migration support)",
                  [])
