"""HostOverview for the certification page: the host's facts and its IOMMU group table."""
from __future__ import annotations

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..model import DeviceView, GroupView, HostOverview, Outcome
from ..rules import iommu
from ..rules.remedy import boot_setup


def overview_from_facts(facts: HostFacts, devices: list[DeviceSpec], source: str = "") -> HostOverview:
    named = {d.key for d in devices if d.is_pci}
    cpu = facts.cpu
    overview = HostOverview(
        hostname=facts.hostname,
        kernel_release=facts.kernel_release,
        distro=facts.os.pretty_name if facts.os else "",
        cpu_model=cpu.name if cpu else "",
        cpu_vendor=cpu.vendor if cpu else "",
        iommu_vendor=_iommu_vendor_text(facts),
        cmdline=facts.cmdline_text,
        collected_at=facts.collected_at,
        groups_collected=facts.iommu_groups is not None,
        pci_tree_collected=facts.pci_tree is not None,
        boot=boot_setup(facts),
    )
    verdicts: dict[int, bool] = {}
    blocking: set[str] = set()  # the members that keep a named device's group from a VM, as the rule judges them
    for spec in devices:
        device = facts.pci_device(spec.key) if spec.is_pci else None
        if device is None or device.iommu_group is None:
            continue
        outcome = iommu.group_isolated(facts, spec, devices).outcome
        ok = outcome in (Outcome.PASSED, Outcome.WARNING)
        named_pci = {d.key for d in devices if d.is_pci}
        blocking |= {b.split()[0] for b in iommu.blocking_members(facts, device.iommu_group, named_pci)[0]}
        verdicts[device.iommu_group] = verdicts.get(device.iommu_group, True) and ok
    tree = facts.pci_tree or {}
    for number, members in (facts.iommu_groups or {}).items():
        rows = []
        for address in members:
            device = facts.pci_device(address)
            if device is None:
                rows.append(DeviceView(address, "", "", "", "", "", False, address in named, address in blocking,
                                       tree.get(address, "")))
                continue
            rows.append(DeviceView(
                address=address, class_code=f"0x{device.class_code}" if device.class_code else "",
                class_name=device.class_name, vendor_device=device.vendor_device, name=device.name,
                driver=device.driver, is_bridge=device.is_bridge, named=address in named, blocks=address in blocking,
                parent=tree.get(address, ""),
            ))
        overview.groups.append(GroupView(number, rows, verdicts.get(number)))
    return overview


def _iommu_vendor_text(facts: HostFacts) -> str:
    name = {"intel": "Intel VT-d", "amd": "AMD-Vi", "arm": "Arm SMMU"}.get(facts.iommu_vendor, "")
    if name and facts.iommu_vendor_from_cpu:
        return f"none found (an {name} host by its CPU vendor)"
    return name
