"""kvm.device: /dev/kvm."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import REQUIRED, check, not_collected, result
from .remedy import load_module


@check("kvm.device", REQUIRED, "/dev/kvm exists")
def device(facts: HostFacts) -> CheckResult:
    if facts.kvm_device is PathState.NOT_COLLECTED:
        return not_collected(device.id, "/dev")
    if facts.kvm_device is PathState.PRESENT:
        return result(device.id, Outcome.PASSED, "/dev/kvm exists", ["/dev/kvm present"])
    if facts.arch == "arm64":
        return result(device.id, Outcome.FAILED, "/dev/kvm does not exist: KVM did not initialise", ["/dev/kvm absent"],
                      "On arm64 KVM is built into the kernel (CONFIG_KVM=y) and starts only when the kernel was entered "
                      "at EL2 (see cpu.virtualization); check `dmesg | grep kvm` for the reason.")
    vendor = facts.cpu.vendor_short if facts.cpu else ""
    module = {"intel": "kvm_intel", "amd": "kvm_amd"}.get(vendor, "kvm_intel or kvm_amd")
    loaded = facts.modules.loaded or {}
    evidence = ["/dev/kvm absent"]
    evidence.append(f"loaded kvm modules: {', '.join(m for m in loaded if m.startswith('kvm')) or 'none'}"
                    if facts.modules.loaded is not None else "")
    cause = []
    running = sorted(m for m in {*loaded, *(facts.modules.in_sysfs or ())} if m in ("kvm_intel", "kvm_amd"))
    if running:  # KVM runs: its node is missing from /dev, not from the kernel
        return result(device.id, Outcome.FAILED, f"/dev/kvm does not exist although {running[0]} is loaded", evidence,
                      "Check that devtmpfs is mounted on /dev (mount | grep devtmpfs) and that udev runs; inside a "
                      "container, pass /dev/kvm in (--device /dev/kvm).")
    if facts.cpu is not None and not facts.cpu.virtualization:
        fix = "The CPU exposes no VT-x/AMD-V (see cpu.virtualization): fix that first; /dev/kvm appears once kvm loads."
        cause = ["cpu.virtualization"]
    else:
        fix = load_module(facts, module if vendor else "kvm_intel") if vendor else f"modprobe {module}"
    return result(device.id, Outcome.FAILED, f"/dev/kvm does not exist ({module} not loaded?)", evidence, fix,
                  caused_by=cause)
