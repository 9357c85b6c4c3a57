"""Preflight: before anything is touched, refuse a device the static checks or libvirt say no to.

Pure: it judges HostFacts (and what other domains hold), using the same rules as the static
certification, so a refusal reads like the static report's failure and carries its fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..model import CheckResult, Outcome
from ..rules import device as device_rules
from ..rules import device_readiness
from ..rules import iommu, vfio
from .hostdev import managed_for, nodedev_name

_OK = (Outcome.PASSED, Outcome.WARNING)


@dataclass
class Preflight:
    refusals: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    remediation: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals


def preflight(facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec], held_by: dict[str, str],
              force: bool = False) -> Preflight:
    """held_by: domain name -> why it holds this device (from the other domains' XML)."""
    result = Preflight()

    def need(check: CheckResult, overridable: bool = False, strict: bool = False) -> None:
        result.evidence.append(f"{check.id}: {check.outcome.value}: {check.message}")
        if check.outcome is Outcome.PASSED or (check.outcome in _OK and not strict) or (overridable and force):
            return
        result.refusals.append(f"{check.id}: {check.message}" + (" (--force overrides this)" if overridable else ""))
        if check.remediation:
            result.remediation.append(check.remediation)

    need(device_rules.present(facts, spec), strict=not spec.is_pci)  # an ambiguous USB vendor:product: libvirt refuses
    if not spec.is_pci:
        network = device_rules.host_network(facts, spec)  # a USB network adapter the host uses
        if network.outcome is not Outcome.SKIPPED:
            need(network, overridable=True)
    # Already held by a domain or QEMU, or held by the host console: refused. Not collected (skipped) is not a
    # refusal here: held_by below asks libvirt itself.
    readiness = [device_readiness.in_use(facts, spec)] + ([device_readiness.host_console(facts, spec)] if spec.is_pci else [])
    for check in readiness:
        if check.outcome is Outcome.FAILED:
            need(check)
        else:
            result.evidence.append(f"{check.id}: {check.outcome.value}: {check.message}")
    if spec.is_pci:
        resetting = device_readiness.reset(facts, spec)
        result.evidence.append(f"{resetting.id}: the reset it relies on: {resetting.outcome.value}: {resetting.message}")
        need(iommu.enabled(facts))
        need(iommu.group_isolated(facts, spec, named))
        need(vfio.module(facts, "vfio_pci"))
        network = device_rules.host_network(facts, spec)
        if network.outcome is not Outcome.SKIPPED:
            need(network, overridable=True)
        device = facts.pci_device(spec.key)
        if device is not None and device.driver == "pci-stub":  # legacy KVM assignment's stub, not VFIO's
            result.refusals.append(f"{spec.key} is held by pci-stub: VFIO needs it on vfio-pci, and libvirt's managed "
                                   "re-bind could hand it to its host driver afterwards")
            result.remediation.append(f"Keep it for VMs on vfio-pci instead: driverctl set-override {spec.key} vfio-pci "
                                      "(or vfio-pci.ids= in place of pci-stub.ids= on the kernel command line)")
        if device is not None and device.class_pair[0] == 0x02 and network.outcome is Outcome.SKIPPED and not force:
            result.refusals.append(f"device.host_network: {network.message}: whether the host uses this NIC is "
                                   "unknown (--force overrides this)")
        if device is not None and device.sriov_numvfs:
            n = device.sriov_numvfs
            result.evidence.append(f"{spec.key}: an SR-IOV PF with sriov_numvfs={n}")
            if not force:
                result.refusals.append(f"{spec.key} is an SR-IOV PF with sriov_numvfs={n}: unbinding it destroys its "
                                       f"{n} VFs, which the host or other VMs may use (--force overrides this)")
                result.remediation.append(f"Assign one of its VFs instead, or set sriov_numvfs to 0 first: "
                                          f"echo 0 > /sys/bus/pci/devices/{spec.key}/sriov_numvfs")
        named_pci = {s.key for s in named if s.is_pci} - {spec.key}
        members = (facts.iommu_groups or {}).get(device.iommu_group, []) if device is not None else []
        on_host = [a for a in members if a in named_pci and managed_for(getattr(facts.pci_device(a), "driver", ""))]
        if on_host:  # viable with the whole group named, but each device is attached on its own
            result.evidence.append(f"group {device.iommu_group} is viable only with {', '.join(on_host)} off its host "
                                   "driver too: the devices are attached one at a time, so this attach fails unless "
                                   f"that is on vfio-pci first (virsh nodedev-detach {nodedev_name(on_host[0])})")
    for domain, why in held_by.items():
        result.refusals.append(f"{spec.key} is already assigned to domain {domain!r} ({why}): detach it there first")
    return result
