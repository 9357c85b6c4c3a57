"""The public check ids, their severity and what each certifies.

Ids appear in summary.json, waivers and dashboards: they never change meaning once
released, and a retired id is never reused. Parametrized checks add [param].
"""
from __future__ import annotations

from ..model import CheckResult, Outcome, Severity

REQUIRED, RECOMMENDED, INFO = Severity.REQUIRED, Severity.RECOMMENDED, Severity.INFO

CATALOG: dict[str, tuple[Severity, str]] = {
    "host.reachable": (REQUIRED, "the host answered and its facts were collected"),
    "cpu.virtualization": (REQUIRED, "the CPU exposes VT-x (vmx) or AMD-V (svm)"),
    "kvm.device": (REQUIRED, "/dev/kvm exists"),
    "kernel.config": (REQUIRED, "the kernel is built with the IOMMU, VFIO and KVM-VFIO options (=y or =m)"),
    "firmware.iommu_table": (REQUIRED, "the firmware describes an IOMMU (ACPI DMAR for VT-d, IVRS for AMD-Vi)"),
    "iommu.enabled": (REQUIRED, "the kernel runs the IOMMU: units in /sys/class/iommu, populated groups"),
    "kernel.cmdline": (RECOMMENDED, "the kernel command line enables, and does not undermine, the IOMMU"),
    "iommu.irq_remapping": (REQUIRED, "interrupt remapping is active"),
    "iommu.groups": (REQUIRED, "IOMMU groups exist"),
    "iommu.group_isolated": (REQUIRED, "the named device's IOMMU group can be assigned as named"),
    "device.present": (REQUIRED, "the named device exists on the host"),
    "device.host_network": (RECOMMENDED, "a named NIC does not carry the host's own network"),
    "device.live_migration": (INFO, "what a <hostdev> means for live migration"),
    "vfio.module": (REQUIRED, "the vfio module is loaded, built in or loadable"),
    "vfio.device_node": (RECOMMENDED, "/dev/vfio/vfio exists"),
    # End to end (--e2e): a device proven in a running guest, and the host left as it was.
    "e2e.leftovers": (REQUIRED, "changes an interrupted earlier run left behind were undone"),
    "e2e.nic": (REQUIRED, "a NIC attached as <hostdev>, proven in the guest, detached, host driver restored"),
    "e2e.pci": (REQUIRED, "a PCI device attached as <hostdev>, proven in the guest, detached, host driver restored"),
    "e2e.usb": (REQUIRED, "a USB disk attached as <hostdev>, proven read-only in the guest, detached"),
    "e2e.device": (REQUIRED, "the end-to-end flow for a device (an id used only when the check itself crashed)"),
}


def severity_of(check_id: str) -> Severity:
    return CATALOG[check_id.split("[", 1)[0]][0]


def result(check_id: str, outcome: Outcome, message: str, evidence: list[str] | None = None,
           remediation: str = "", caused_by: list[str] | None = None) -> CheckResult:
    """caused_by: the failed checks this outcome follows from, when the rule knows (root causes have none)."""
    return CheckResult(
        id=check_id,
        outcome=outcome,
        severity=severity_of(check_id),
        message=message,
        evidence=[e for e in (evidence or []) if e],
        remediation=remediation,
        caused_by=[c for c in caused_by or [] if c != check_id],
        fix=getattr(remediation, "action", None),  # a remedy.Remedy says what it changes
    )


def not_collected(check_id: str, what: str) -> CheckResult:
    """What was not collected is skipped with the reason, never failed."""
    return result(check_id, Outcome.SKIPPED, f"not judged: {what} was not collected")
