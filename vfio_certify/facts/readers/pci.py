"""PCI functions (sysfs attributes and links, named by lspci) and the IOMMU groups they fall into."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import PathState, Snapshot
from ..model import HostFacts
from ..pci import LspciEntry, PciDevice, build_pci_device, normalize_pci_address, parse_lspci_nnk
from ..pci_topology import ROOT_BUS_PREFIX, from_folders


def read_pci(snap: Snapshot, facts: HostFacts) -> None:
    lspci_out = snap.command(spec.LSPCI.line)
    lspci: dict[str, LspciEntry] = parse_lspci_nnk(lspci_out.stdout) if lspci_out else {}
    facts.lspci_addresses = sorted(lspci) if lspci_out else None
    names = snap.listdir(spec.PCI_DEVICES.path)
    if names is None:
        return
    devices: dict[str, PciDevice] = {}
    for name in names:
        address = normalize_pci_address(name)
        if not address:
            facts.notes.append(f"{spec.PCI_ATTRIBUTES.at(name)}: not a PCI address, ignored")
            continue
        base = spec.PCI_ATTRIBUTES.at(name)
        attrs = {a: snap.read_value(f"{base}/{a}") for a in spec.PCI_ATTRIBUTES.names}
        driver_link = spec.PCI_DRIVER.at(name)
        device = build_pci_device(
            address, attrs, snap.link_name(driver_link), snap.link_name(spec.PCI_IOMMU_GROUP.at(name)),
            snap.link_name(spec.PCI_PHYSFN.at(name)),
        )
        # No driver link is "unbound" only when its absence is known (the absence convention), else not collected.
        device.driver_source = driver_link
        if not device.driver:
            device.driver_state = (PathState.ABSENT if snap.state(driver_link) is PathState.ABSENT
                                   else PathState.NOT_COLLECTED)
        entry = lspci.get(address)
        if entry:
            device.description = entry.description
            if not device.driver and entry.driver:
                device.driver, device.driver_state = entry.driver, PathState.PRESENT
                device.driver_source = f"{spec.LSPCI.line} (Kernel driver in use)"
            elif device.driver_state is PathState.NOT_COLLECTED and lspci_out is not None and lspci_out.ok:
                # lspci -k prints "Kernel driver in use" for every bound function: none listed is unbound
                device.driver_state = PathState.ABSENT
                device.driver_source = f"{spec.LSPCI.line} (no 'Kernel driver in use')"
        devices[address] = device
    facts.pci = devices


def read_groups(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir(spec.IOMMU_GROUPS.path)
    if names is None:
        return
    groups: dict[int, list[str]] = {}
    noiommu = {int(n[8:]) for n in snap.listdir(spec.DEV_VFIO.path) or [] if n[:8] == "noiommu-" and n[8:].isdigit()}
    for name in names:
        if not name.isdigit():
            continue
        members = snap.listdir(spec.IOMMU_GROUP_MEMBERS.folder(name))
        # PCI functions by address; other members (an AMD IVRS ACPI device such as AMDI0020:00) by name
        listed = sorted(normalize_pci_address(m) or m for m in members or [])
        if int(name) in noiommu:  # vfio's own group for a device with no IOMMU: not an IOMMU group
            facts.noiommu_groups[int(name)] = listed
            continue
        if members is None:  # the group exists; who is in it was not collected: not "empty"
            facts.iommu_groups_unread.append(int(name))
            continue
        groups[int(name)] = listed
        for member in (m for m in members if normalize_pci_address(m) is None):
            link = spec.IOMMU_GROUP_OTHER_DRIVER.at(name, member)
            driver = snap.link_name(link)
            facts.other_group_members[member] = driver or ("" if snap.state(link) is PathState.ABSENT else None)
    facts.iommu_groups = dict(sorted(groups.items()))
    for number, members in facts.iommu_groups.items():
        for address in members:
            device = facts.pci_device(address) if facts.pci is not None else None
            if device is not None and device.iommu_group is None:
                device.iommu_group = number
    for device in (facts.pci or {}).values():  # its iommu_group link names vfio's no-IOMMU group
        if device.iommu_group in facts.noiommu_groups:
            device.iommu_group = None


def read_topology(snap: Snapshot, facts: HostFacts) -> None:
    """The PCI tree from the folders sysfs nests it in: /sys/devices/pci<domain>:<bus>/<function> for each
    root bus, /sys/bus/pci/devices/<bridge>/<function> behind each bridge. Not collected (None) unless the
    snapshot holds /sys/devices: an older snapshot has bridge folders without children, which is no tree."""
    buses = snap.listdir(spec.SYS_DEVICES.path)
    if buses is None:
        return
    root_buses = {bus: snap.listdir(spec.PCI_ROOT_BUS_FUNCTIONS.folder(bus)) or []
                  for bus in buses if bus.startswith(ROOT_BUS_PREFIX) and snap.is_dir(f"{spec.SYS_DEVICES.path}/{bus}")}
    behind = {}
    for name in snap.listdir(spec.PCI_DEVICES.path) or []:
        address = normalize_pci_address(name)
        folder = spec.PCI_BEHIND_BRIDGE.folder(name)
        if not address:
            continue
        children = [child for child in snap.listdir(folder) or [] if snap.is_dir(f"{folder}/{child}")]
        behind[address] = children
        for bus in (c for c in children if c.startswith(ROOT_BUS_PREFIX)):  # a root bus this function owns (VMD)
            root_buses[bus] = snap.listdir(spec.PCI_OWNED_ROOT_BUS_FUNCTIONS.folder(name, bus)) or []
    facts.pci_tree = from_folders(root_buses, behind)
