"""cpu.virtualization: VT-x or AMD-V in the CPU flags; on arm64, the kernel entered at EL2."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import REQUIRED, check, not_collected, result
from .remedy import firmware_virtualization


@check("cpu.virtualization", REQUIRED,
       "the CPU can run KVM guests: VT-x (vmx) or AMD-V (svm); on arm64, the kernel runs at EL2")
def virtualization(facts: HostFacts) -> CheckResult:
    if facts.arch == "arm64":
        return _arm64_el2(facts)
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
    return result(virtualization.id, Outcome.FAILED, "the CPU exposes neither VT-x (vmx) nor AMD-V (svm)", evidence,
                  firmware_virtualization(facts))


_EL2_FIX = (
    "KVM on arm64 needs the kernel entered at EL2. A server's firmware does this by default; where EL2 is taken "
    "(a vendor hypervisor such as Gunyah on some boards, or a cloud VM: arm64 instances other than *.metal give no "
    "EL2 to their guest) KVM cannot run. Boot the host kernel directly from the firmware (UEFI/U-Boot at EL2), or "
    "use a bare-metal instance."
)


def _arm64_el2(facts: HostFacts) -> CheckResult:
    """arm64 /proc/cpuinfo has no vmx/svm: KVM runs when the kernel was entered at EL2, which KVM's init line
    (or its 'HYP mode not available'), the boot CPU line and /dev/kvm (created only by an initialised KVM) show."""
    d, cpu = facts.dmesg, facts.cpu
    cpu_line = [f"CPU implementer {cpu.implementer}, part {cpu.part} (arm64 cpuinfo has no vmx/svm flag)"] \
        if cpu and cpu.implementer else []
    el_lines = d.cpu_boot_el[:1] if d else []
    if d and d.kvm_hyp_unavailable or any("EL1" in line or "inconsistent" in line for line in el_lines):
        return result(virtualization.id, Outcome.FAILED,
                      "the kernel was not entered at EL2: KVM cannot run on this host",
                      (d.kvm_hyp_unavailable[:1] if d else []) + el_lines + cpu_line, _EL2_FIX)
    kvm_up = d.kvm_hyp_initialized[:1] if d else []
    if kvm_up or facts.kvm_device is PathState.PRESENT:
        evidence = kvm_up + el_lines + (["/dev/kvm present (KVM initialised at EL2)"]
                                        if facts.kvm_device is PathState.PRESENT else []) + cpu_line
        mode = next((m for m in ("Protected", "VHE", "nVHE", "hVHE", "Hyp") if kvm_up and f" {m} " in f" {kvm_up[0]} "), "")
        return result(virtualization.id, Outcome.PASSED,
                      "the kernel runs at EL2: KVM is available" + (f" ({mode} mode)" if mode else ""), evidence)
    if d is None and facts.kvm_device is PathState.NOT_COLLECTED:
        return not_collected(virtualization.id, "dmesg and /dev")
    evidence = ([f"dmesg ({d.lines_read} lines): no 'kvm [1]: ... mode initialized successfully' line"] if d else [])
    evidence += el_lines + ([f"/dev/kvm {'absent' if facts.kvm_device is PathState.ABSENT else 'not collected'}"]) + cpu_line
    return result(virtualization.id, Outcome.WARNING,
                  "could not tell whether the kernel runs at EL2: no KVM initialisation line and no /dev/kvm "
                  "(see kvm.device)", evidence)
