"""cpu.virtualization: VT-x or AMD-V in the CPU flags."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from .catalog import REQUIRED, check, not_collected, result
from .remedy import firmware_virtualization


@check("cpu.virtualization", REQUIRED, "the CPU exposes VT-x (vmx) or AMD-V (svm)")
def virtualization(facts: HostFacts) -> CheckResult:
    cpu = facts.cpu
    if cpu is None:
        return not_collected(virtualization.id, "/proc/cpuinfo")
    if not cpu.flags:
        return result(virtualization.id, Outcome.FAILED, "/proc/cpuinfo lists no CPU flags (file empty or cut short)",
                      [f"{cpu.processors} processor entries read"], "Re-collect /proc/cpuinfo from the host.")
    nested = cpu.is_virtual_machine
    evidence = [f"model name: {cpu.model_name}" if cpu.model_name else "", f"vendor_id: {cpu.vendor}" if cpu.vendor else ""]
    flag = cpu.virtualization
    if flag:
        evidence.append(f"flags: {flag}" + (" hypervisor" if nested else ""))
        name = "Intel VT-x (vmx)" if flag == "vmx" else "AMD-V (svm)"
        message = f"{name} available on {cpu.processors} CPUs"
        if nested:
            message += "; this host is itself a virtual machine (nested virtualization)"
        return result(virtualization.id, Outcome.PASSED, message, evidence)
    evidence.append("flags: neither vmx nor svm" + (", hypervisor present" if nested else ""))
    if nested:
        fix = (
            "This host is a virtual machine whose hypervisor does not pass hardware virtualization through: "
            "enable nested virtualization on the outer host (modprobe kvm_intel nested=1 or kvm_amd nested=1) "
            "and give this VM the host CPU model (libvirt: <cpu mode='host-passthrough'/>)."
        )
    else:
        fix = firmware_virtualization(facts)
    return result(virtualization.id, Outcome.FAILED, "the CPU exposes neither VT-x (vmx) nor AMD-V (svm)", evidence, fix)
