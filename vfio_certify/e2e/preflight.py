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
from ..rules import iommu, vfio

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
    if spec.is_pci:
        need(iommu.enabled(facts))
        need(iommu.group_isolated(facts, spec, named))
        need(vfio.module(facts, "vfio_pci"))
        network = device_rules.host_network(facts, spec)
        if network.outcome is not Outcome.SKIPPED:
            need(network, overridable=True)
    for domain, why in held_by.items():
        result.refusals.append(f"{spec.key} is already assigned to domain {domain!r} ({why}): detach it there first")
    return result
