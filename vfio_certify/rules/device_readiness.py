"""device.* readiness: will this device survive being handed to a VM, and the next reboot?

Kept apart from rules/device.py (presence and host use): reset, host console, boot binding, SR-IOV,
who already holds it, NUMA locality. Each judges the one snapshot; what it lacks makes it skipped.
"""
from __future__ import annotations

from typing import Optional

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..facts.libvirt import OpenVfioFile, OpenVfioFiles
from ..facts.model import PciReadiness
from ..facts.pci import PciDevice
from ..facts.readiness import parse_cpulist
from ..facts.usb import matching_usb
from ..model import CheckResult, Outcome
from . import remedy
from .catalog import INFO, NOT_APPLICABLE, RECOMMENDED, REQUIRED, check, not_collected, result

# AMD GPUs that come back from a VM unusable without a device-specific reset (the "reset bug"), by device id
# range, as gnif/vendor-reset's device table lists them.
_AMD_RESET_BUG = (
    (0x67C0, 0x67DF, "Polaris 10"), (0x67E0, 0x67FF, "Polaris 11"), (0x6980, 0x699F, "Polaris 12"),
    (0x6860, 0x687F, "Vega 10"), (0x66A0, 0x66AF, "Vega 20"),
    (0x7310, 0x731F, "Navi 10"), (0x7360, 0x7362, "Navi 12"), (0x7340, 0x734F, "Navi 14"),
)
_REAL_RESETS = ("flr", "af_flr", "pm", "acpi", "device_specific", "cxl_bus")


def _pci(facts: HostFacts, spec: DeviceSpec, check_id: str) -> tuple[Optional[PciDevice], Optional[CheckResult]]:
    """The named device and its readiness facts, or why it is not judged."""
    if facts.pci is None:
        return None, not_collected(check_id, "/sys/bus/pci/devices")
    device = facts.pci_device(spec.key)
    if device is None:
        return None, result(check_id, Outcome.SKIPPED,
                            f"not applicable: {spec.key} is not a PCI device on this host (see device.present)",
                            skip_reason=NOT_APPLICABLE)
    return device, None


def _readiness(facts: HostFacts, device: PciDevice, check_id: str, what: str) -> tuple[Optional[PciReadiness], Optional[CheckResult]]:
    if facts.readiness is None or device.address not in facts.readiness.devices:
        skipped = not_collected(check_id, what)
        skipped.evidence.append("the readiness sources are collected together with `lspci -vvv`, which this snapshot "
                                "lacks: it was made before they were collected")
        return None, skipped
    return facts.readiness.devices[device.address], None


def amd_reset_bug_family(device: PciDevice) -> str:
    if device.vendor != "1002":
        return ""
    try:
        number = int(device.device, 16)
    except ValueError:
        return ""
    return next((name for low, high, name in _AMD_RESET_BUG if low <= number <= high), "")


def reset_methods(facts: HostFacts, device: PciDevice, ready: PciReadiness) -> tuple[Optional[list[str]], list[str]]:
    """(the reset methods the kernel would use, evidence); None when the snapshot cannot tell."""
    lspci = (facts.readiness.lspci or {}).get(device.address) if facts.readiness else None
    evidence = [f"lspci -vvv: {line}" for line in (lspci.lines if lspci else [])]
    path = f"/sys/bus/pci/devices/{device.address}"
    if ready.reset_method is not None:
        return ready.reset_method, [f"{path}/reset_method: {' '.join(ready.reset_method) or '(empty)'}"] + evidence
    version = facts.kernel_version
    if version and version >= (5, 15, 0):  # reset_method and reset are shown exactly when a method exists
        if not ready.reset_file:
            return [], [f"{path}/reset_method and {path}/reset absent (kernel {facts.kernel_release}: no reset method)"] + evidence
        return None, [f"{path}/reset present but reset_method absent"] + evidence
    if lspci is None or (lspci.flreset is None and lspci.af_flr is None and lspci.nosoftrst is None):
        return None, [f"{path}/reset_method absent (kernel {facts.kernel_release or '?'} before 5.15)"] + evidence
    methods = [m for m, on in (("flr", lspci.flreset), ("af_flr", lspci.af_flr), ("pm", lspci.nosoftrst is False)) if on]
    if not methods and ready.reset_file:
        methods = ["bus"]  # the kernel offers a reset, and no function-level one: the secondary bus reset
    return methods, [f"kernel {facts.kernel_release} has no reset_method: read from lspci -vvv and {path}/reset"
                     + (" (present)" if ready.reset_file else " (absent)")] + evidence


@check("device.reset", REQUIRED, "the device can be reset between VM boots (reset_method; FLReset/NoSoftRst before 5.15)")
def reset(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{reset.id}[{spec.key}]"
    device, skipped = _pci(facts, spec, check_id)
    if skipped:
        return skipped
    ready, skipped = _readiness(facts, device, check_id, f"/sys/bus/pci/devices/{device.address}/reset_method")
    if skipped:
        return skipped
    methods, evidence = reset_methods(facts, device, ready)
    if methods is None:
        return result(check_id, Outcome.SKIPPED, f"not judged: how it resets was not collected (neither /sys/bus/pci/devices/"
                      f"{device.address}/reset_method nor its lspci -vvv capabilities say)", evidence)
    family = amd_reset_bug_family(device)
    if family:
        evidence.insert(0, f"{device.vendor_device} is an AMD {family} GPU (vendor-reset's device table)")
        loaded = "vendor_reset" in (facts.modules.loaded or {})
        if "device_specific" in methods and loaded:
            return result(check_id, Outcome.PASSED, f"AMD {family}: vendor-reset is loaded and reset_method starts "
                          "with device_specific", evidence)
        return result(check_id, Outcome.WARNING,
                      f"AMD {family} GPU: the \"reset bug\" family; its {'/'.join(methods) or 'reset'} does not bring it "
                      "back after a VM used it (the next VM start hangs or gets a dead GPU) unless vendor-reset handles it",
                      evidence, remedy.vendor_reset(facts, device.address))
    if not methods and ready.reset_method == [] and ready.reset_file:
        # the kernel shows reset_method only for a function it found a method for: empty is every method switched off
        return result(check_id, Outcome.FAILED,
                      f"{device.address}'s reset methods are switched off (its reset_method is empty, written so "
                      "through sysfs): after a VM has used it, the next VM gets it in whatever state the last one "
                      "left (libvirt may hang stopping the VM)", evidence, remedy.reset_methods_off(facts, device.address))
    if not methods:
        return result(check_id, Outcome.FAILED,
                      f"{device.address} has no reset method: after a VM has used it, the next VM gets it in whatever "
                      "state the last one left (libvirt may hang stopping the VM)", evidence,
                      remedy.no_reset(facts, device.address))
    real = [m for m in methods if m in _REAL_RESETS]
    if real:
        return result(check_id, Outcome.PASSED, f"reset by {real[0]}" + (f" (then {', '.join(methods[1:])})"
                                                                         if len(methods) > 1 else ""), evidence)
    bus = device.address.rsplit(":", 1)[0]
    # every function on its bus: sysfs's, and lspci's (a function lspci lists is there, whatever sysfs shows)
    on_bus = {*(facts.pci or {}), *(facts.lspci_addresses or ())}
    siblings = sorted(a for a in on_bus if a.startswith(bus + ":") and a != device.address)
    if not siblings:
        return result(check_id, Outcome.PASSED, "reset by a secondary bus reset; it is alone behind its bridge", evidence)
    others = [facts.pci[a].summary() if a in (facts.pci or {}) else f"{a} (listed by lspci -nnk)" for a in siblings]
    return result(check_id, Outcome.WARNING,
                  f"only a bus reset, which resets every function behind the same bridge too: {', '.join(siblings)}; "
                  "libvirt resets it only when all of them are assigned to the same VM or unused", evidence + others,
                  f"Assign {', '.join([device.address] + siblings)} to the same VM, or leave the others unbound.")


def _display(device: PciDevice) -> bool:
    return device.class_pair[0] == 0x03


@check("device.host_console", REQUIRED, "a display device is not held by the host console (boot VGA, efifb/simpledrm in its BAR)")
def host_console(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{host_console.id}[{spec.key}]"
    device, skipped = _pci(facts, spec, check_id)
    if skipped:
        return skipped
    if not device.class_code:
        return not_collected(check_id, f"/sys/bus/pci/devices/{device.address}/class (whether it is a display device)")
    if not _display(device):
        return result(check_id, Outcome.SKIPPED, f"not applicable: not a display device ({device.class_name or 'unknown class'})",
                      skip_reason=NOT_APPLICABLE)
    ready, skipped = _readiness(facts, device, check_id, "/proc/iomem and boot_vga")
    if skipped:
        return skipped
    info = facts.readiness
    path = f"/sys/bus/pci/devices/{device.address}"
    held, evidence = [], []
    if ready.boot_vga is not None:
        evidence.append(f"{path}/boot_vga: {int(ready.boot_vga)}")
    for line in (info.iomem or {}).get(device.address, []):
        held.append(line.split(" : ", 1)[1])
        evidence.append(f"/proc/iomem: {device.address} > {line}")
    fbs = sorted(fb for fb, on in (info.framebuffers or {}).items() if on == device.address)
    if fbs:
        held.append(f"{', '.join(fbs)} (framebuffer device on it, driver {device.driver or 'none'})")
        evidence.append(f"/sys/class/graphics/{fbs[0]}/device -> {device.address}")
    log = info.console_log
    if log:
        evidence += [f"dmesg: {line}" for line in log.lines if device.address in line or "framebuffer" in line][:4]
        if log.efifb_bar == device.address and info.iomem is None:
            held.append("efifb (dmesg: one of its BARs was assigned to efifb)")
    if held:
        return result(check_id, Outcome.FAILED,
                      f"the host console holds {device.address}: {'; '.join(dict.fromkeys(held))}. vfio-pci cannot "
                      "reserve that BAR (\"BAR n: can't reserve\") and the guest driver fails", evidence,
                      remedy.free_host_console(facts, device.address))
    if info.iomem is None:
        evidence.append("/proc/iomem was not collected: whether a framebuffer sits in its BARs is unknown")
        if ready.boot_vga:
            return result(check_id, Outcome.SKIPPED, "not judged: /proc/iomem was not collected", evidence)
    elif info.iomem_devices is not None and device.address not in info.iomem_devices:
        # A real /proc/iomem lists every BAR the kernel assigned: one that lacks this device's was cut short or
        # garbled, and cannot say that no framebuffer sits in them.
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: {device.address}'s BARs in /proc/iomem were not collected (the file does not list "
                      "them: cut short or unreadable)", evidence)
    unknown_fbs = sorted(fb for fb, on in (info.framebuffers or {}).items() if not on)
    if ready.boot_vga and (info.framebuffers is None or unknown_fbs):
        # the boot display with a framebuffer that may sit on it: which device each fbN is on was not collected
        what = ("/sys/class/graphics" if info.framebuffers is None else
                f"the device link of /sys/class/graphics/{unknown_fbs[0]}")
        return result(check_id, Outcome.SKIPPED, f"not judged: {what} was not collected, so whether a framebuffer "
                      f"holds the boot display {device.address} is unknown", evidence)
    if ready.boot_vga or (log and log.boot_vga == device.address):
        return result(check_id, Outcome.WARNING,
                      f"{device.address} is the boot VGA device: no framebuffer holds it now, but the firmware and "
                      "the boot loader draw on it, and a kernel that starts efifb/simpledrm on it takes it back",
                      evidence, remedy.free_host_console(facts, device.address))
    return result(check_id, Outcome.PASSED, "not the boot display, and no framebuffer sits in its BARs", evidence)


def _ids_on_cmdline(params, device: PciDevice) -> list[str]:
    return [p.raw for p in params or [] if p.name in ("vfio_pci.ids", "vfio-pci.ids") and device.vendor_device
            in (p.value or "").lower().split(",")]


@check("device.vfio_binding", RECOMMENDED, "how the device reaches vfio-pci, and whether that survives a reboot")
def vfio_binding(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{vfio_binding.id}[{spec.key}]"
    device, skipped = _pci(facts, spec, check_id)
    if skipped:
        return skipped
    info = facts.readiness
    if info is None or info.bindings is None:
        return not_collected(check_id, "/etc/modprobe.d, /etc/modules-load.d, /etc/driverctl.d and the initramfs "
                                       "configuration")
    evidence = [f"{device.address} {device.vendor_device} driver {device.driver or 'none'}"]
    running = _ids_on_cmdline(facts.kernel_params.value, device)
    next_boot = [(b.source, _ids_on_cmdline(b.args, device)) for b in facts.boot_configs]
    ways = []
    if running:
        evidence.append(f"/proc/cmdline: {' '.join(running)}")
    for source, found in next_boot:
        if found:
            ways.append(f"{' '.join(found)} in {source}")
    mine = [b for b in info.bindings if (b.kind == "ids" and device.vendor_device in b.ids)
            or (b.kind == "driverctl" and b.address == device.address)]
    ways += [f"{b.line} ({b.source})" for b in mine]
    early = [b for b in info.bindings if b.kind in ("initramfs", "softdep")]
    stale = [b for b in info.bindings if b.kind == "stale"]
    version = facts.kernel_version
    for b in stale:
        evidence.append(f"{b.source}: {b.line}: " + ("harmless: vfio_virqfd was merged into vfio in 6.2 (modprobe only "
                                                      "prints that it is not found)" if version and version >= (6, 2, 0)
                                                      else "needed before 6.2"))
    evidence += [f"{b.source}: {b.line}" for b in early]
    if running and next_boot and not any(found for _, found in next_boot):
        return result(check_id, Outcome.WARNING,
                      f"vfio-pci.ids takes {device.vendor_device} now, but the next boot's command line lacks it: "
                      "after a reboot the host driver gets it", evidence + [f"{s}: no vfio-pci.ids" for s, _ in next_boot],
                      remedy.kernel_args(facts, add=running))
    if running or ways:
        modprobe_only = not running and all(b.kind == "ids" for b in mine) and not any(f for _, f in next_boot)
        builtin = "vfio_pci" in (facts.modules.builtin or set())
        if modprobe_only and not early and not builtin and device.driver not in ("vfio-pci", ""):
            return result(check_id, Outcome.WARNING,
                          f"options vfio-pci ids= binds {device.vendor_device} only if vfio-pci loads before "
                          f"{device.driver}: nothing makes it load first", evidence + ways,
                          remedy.bind_at_boot(facts, device))
        return result(check_id, Outcome.PASSED, "bound to vfio-pci at every boot: " + "; ".join(ways or running),
                      evidence + ways)
    if device.driver == "vfio-pci":
        return result(check_id, Outcome.WARNING,
                      f"{device.address} is on vfio-pci now, but nothing binds it at boot: after a reboot its host "
                      "driver takes it (fine with <hostdev managed='yes'>, which re-binds it at VM start)", evidence,
                      remedy.bind_at_boot(facts, device))
    return result(check_id, Outcome.PASSED,
                  f"no boot binding, and none is needed with <hostdev managed='yes'>: libvirt moves it from "
                  f"{device.driver or 'no driver'} to vfio-pci when the VM starts and back when it stops", evidence)


@check("device.sriov", INFO, "SR-IOV: a VF's PF and their groups, a PF's VFs and how to create them at boot")
def sriov(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    """INFO: a VF that shares its PF's group already fails the required iommu.group_isolated; this check explains
    the SR-IOV side (which PF, whose driver, how VFs are made persistent) rather than block twice."""
    check_id = f"{sriov.id}[{spec.key}]"
    device, skipped = _pci(facts, spec, check_id)
    if skipped:
        return skipped
    if device.physfn:
        pf = facts.pci_device(device.physfn)
        evidence = [f"/sys/bus/pci/devices/{device.address}/physfn -> {device.physfn}"]
        if pf is None:
            return result(check_id, Outcome.WARNING, f"a VF of {device.physfn}, which is not in the snapshot", evidence)
        evidence.append(f"PF {pf.summary()}, group {pf.iommu_group}; VF group {device.iommu_group}")
        if pf.iommu_group is not None and pf.iommu_group == device.iommu_group:
            return result(check_id, Outcome.WARNING,
                          f"VF {device.address} shares IOMMU group {device.iommu_group} with its PF {pf.address} "
                          f"({pf.driver or 'no driver'}): no ACS above them, so the VF cannot go alone", evidence,
                          "Enable ACS (or ARI/SR-IOV) in the firmware setup, or use a slot whose root port has ACS.")
        return result(check_id, Outcome.PASSED,
                      f"a VF of {pf.address}, whose driver {pf.driver or '(none)'} must stay bound (it created the VF); "
                      f"in group {device.iommu_group}, apart from the PF (group {pf.iommu_group})", evidence)
    if not device.sriov_totalvfs:
        return result(check_id, Outcome.SKIPPED, "not applicable: neither an SR-IOV PF nor a VF", skip_reason=NOT_APPLICABLE)
    vfs = sorted(a for a, d in (facts.pci or {}).items() if d.physfn == device.address)
    groups = [f"{a} (group {facts.pci[a].iommu_group})" for a in vfs]
    evidence = [f"sriov_totalvfs={device.sriov_totalvfs} sriov_numvfs={device.sriov_numvfs or 0}"] + groups
    how = remedy.persistent_vfs(facts, device)
    evidence.append(how)  # a passed result's fix is not shown: the how-to is part of what it says
    if not device.sriov_numvfs:
        return result(check_id, Outcome.PASSED, f"an SR-IOV PF with {device.sriov_totalvfs} VFs possible, none "
                      "enabled: assign a VF rather than the PF to share it", evidence, how)
    return result(check_id, Outcome.PASSED, f"an SR-IOV PF with {device.sriov_numvfs} of {device.sriov_totalvfs} VFs "
                  "enabled: assigning the PF destroys them; assign a VF instead", evidence, how)


def _held_keys(facts: HostFacts, spec: DeviceSpec) -> Optional[list[str]]:
    if spec.is_pci:
        return [spec.key]
    matches = matching_usb(facts.usb or [], spec.usb_bus_device, spec.usb_vendor_product)
    if len(matches) != 1:
        return None
    usb = matches[0]
    return [f"usb {usb.vendor_product}", f"usb {usb.bus_device}"]


def _open_group(facts: HostFacts, spec: DeviceSpec) -> tuple[list[OpenVfioFile], list[str], str]:
    """(who holds the device open through /dev/vfio: its group's node or iommufd's node of the device, evidence,
    what is missing to say nobody does)."""
    scan = facts.libvirt.vfio_open
    if not spec.is_pci:
        return [], [], ""
    if scan is None:
        return [], [], "/dev/vfio (whether a process holds a VFIO group open)"
    device = facts.pci_device(spec.key)
    if device is None:  # not on this host (device.present says so): nothing holds it
        return [], [], ""
    holders, evidence, missing = _group_holders(scan, device, spec)
    by_node, node_evidence, node_missing = _device_node_holders(scan, device)
    return holders + by_node, evidence + node_evidence, " and ".join(m for m in (missing, node_missing) if m)


def _group_holders(scan: OpenVfioFiles, device: PciDevice, spec: DeviceSpec) -> tuple[list[OpenVfioFile], list[str], str]:
    group = str(device.iommu_group) if device.iommu_group is not None else None
    if group is None and scan.groups:
        return [], [], f"{spec.key}'s IOMMU group (which /dev/vfio node is its)"
    if group not in scan.groups:
        return [], [f"/dev/vfio/{group} absent: no process can hold {spec.key}'s group open" if group else
                    "/dev/vfio has no group node: no process can hold a group open"], ""
    node = f"/dev/vfio/{group}"
    if scan.files is None:
        return [], [], f"the scan of who holds {node} open"
    holders = [f for f in scan.files if f.group == group]
    if holders or not scan.gap:
        return holders, [f"open files under /dev/vfio: {len(scan.files)}; {len(holders) or 'no'} process(es) hold {node}"], ""
    return [], [f"open files under /dev/vfio: {scan.gap}"], f"the scan of who holds {node} open ({scan.gap})"


def _device_node_holders(scan: OpenVfioFiles, device: PciDevice) -> tuple[list[OpenVfioFile], list[str], str]:
    """Holders of iommufd's node of the device (/dev/vfio/devices/vfioN): a QEMU given it through iommufd holds
    that node, not the group's. Looked at only when the scan found such nodes held."""
    held = [f for f in scan.files or [] if f.device_node]
    if not held:
        return [], [], ""
    if scan.devices is None:
        return [], [], f"which device {held[0].path} is (/sys/class/vfio-dev)"
    mine = sorted(n for n, address in scan.devices.items() if address == device.address)
    holders = [f for f in held if f.device_node in mine]
    return holders, [f"iommufd device nodes held: {', '.join(sorted({f.path for f in held}))}; "
                     + (f"{device.address} is /dev/vfio/devices/{', '.join(mine)}" if mine else
                        f"none of them is {device.address} (/sys/class/vfio-dev)")], ""


@check("device.in_use", REQUIRED, "the device is not already assigned: no domain's XML or QEMU process holds it, "
                                  "no process holds its /dev/vfio/<group> (or iommufd's node of it) open")
def in_use(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{in_use.id}[{spec.key}]"
    lv = facts.libvirt
    if lv is None:
        return not_collected(check_id, "virsh list --all")
    if not spec.is_pci and facts.usb is None:
        return not_collected(check_id, "/sys/bus/usb/devices and lsusb")
    keys = _held_keys(facts, spec)
    if keys is None:
        return result(check_id, Outcome.SKIPPED, f"not applicable: {spec.key} is not on this host (see device.present)",
                      skip_reason=NOT_APPLICABLE)
    by_domain: dict[str, list[str]] = {}
    for h in lv.held:
        if h.key in keys:
            by_domain.setdefault(h.domain, []).append(h.source)
    held = [f"domain {d!r} ({'; '.join(dict.fromkeys(sources))})" for d, sources in by_domain.items()]
    held += [why for address, why in (lv.processes or {}).items() if address in keys]
    evidence = [f"virsh list --all: {len(lv.domains)} domain(s)" if lv.domains is not None else
                ("virsh: not installed" if not lv.virsh else f"virsh list --all failed: {lv.list_error}")]
    holders, open_evidence, open_missing = _open_group(facts, spec)
    evidence += open_evidence + [f"/proc/{f.pid}/fd/{f.fd} -> {f.target or f.path} ({f.comm or 'exited'})" for f in holders]
    held += [f.summary() for f in holders]
    if held:
        fixes = ["Detach it there first (virsh detach-device <domain> hostdev.xml --live --config, or remove the "
                 "<hostdev> with virsh edit), or name another device."] if by_domain or len(held) > len(holders) else []
        if holders:
            who = ", ".join(sorted({f"pid {f.pid} {f.comm}".strip() for f in holders}))
            fixes.append(f"Stop what holds {holders[0].path} open ({who}): shut its VM or application down cleanly"
                         + ("." if fixes else ", or name another device."))
        return result(check_id, Outcome.FAILED, f"{spec.key} is already assigned: {'; '.join(dict.fromkeys(held))}",
                      evidence, " ".join(fixes))
    missing = []
    if lv.virsh and lv.domains is None:
        # libvirtd did not answer: no domain it manages can start now, and the definitions it would start
        # later are the files in /etc/libvirt/qemu; a QEMU still running shows in ps
        if lv.persistent_xml is None:
            missing.append(f"the domains (virsh list --all failed: {lv.list_error}) and /etc/libvirt/qemu")
        else:
            evidence.append(f"judged on /etc/libvirt/qemu ({len(lv.persistent_xml)} definition(s)) and the QEMU processes")
    if lv.xml_missing:
        missing.append(f"the XML of {', '.join(lv.xml_missing)}")
    if lv.processes is None:
        missing.append("the QEMU processes (ps -eo pid,args)")
    if open_missing:
        missing.append(open_missing)
    if missing:
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: {' and '.join(missing)} {'was' if len(missing) == 1 else 'were'} not collected", evidence)
    return result(check_id, Outcome.PASSED, f"no domain and no QEMU process holds {spec.key}"
                  + (", and no process holds its VFIO group open" if open_evidence and spec.is_pci else ""), evidence)


def _slower(ready: PciReadiness) -> list[str]:
    link = ready.link
    found = []
    for what in ("speed", "width"):
        now, best = link.get(f"current_link_{what}", ""), link.get(f"max_link_{what}", "")
        if now and best and now != best and _number(now) < _number(best):
            found.append(f"link {what} {now} of {best}")
    return found


def _number(text: str) -> float:
    try:
        return float(text.split()[0].lstrip("x"))
    except (ValueError, IndexError):
        return 0.0


@check("device.numa", INFO, "the device's NUMA node and local CPUs (pin the VM there); its link below capability")
def numa(facts: HostFacts, spec: DeviceSpec) -> CheckResult:
    check_id = f"{numa.id}[{spec.key}]"
    device, skipped = _pci(facts, spec, check_id)
    if skipped:
        return skipped
    ready, skipped = _readiness(facts, device, check_id, f"/sys/bus/pci/devices/{device.address}/numa_node")
    if skipped:
        return skipped
    cpus = ready.local_cpulist
    evidence = [f"numa_node: {ready.numa_node if ready.numa_node is not None else 'absent'}",
                f"local_cpulist: {cpus or 'absent'}"] + [f"{k}: {v}" for k, v in sorted(ready.link.items())]
    where = ("no NUMA affinity (a single-node host or firmware without _PXM)" if ready.numa_node in (None, -1)
             else f"on NUMA node {ready.numa_node}, local CPUs {cpus or '?'} ({len(parse_cpulist(cpus))} CPUs): pin "
                  "the VM's vCPUs and memory there (<cputune>, <numatune>)")
    slower = _slower(ready)
    if slower:
        idle = " (a GPU lowers its link speed when idle: look again under load)" if _display(device) else ""
        return result(check_id, Outcome.WARNING, f"{where}; the link runs below its capability: {', '.join(slower)}"
                      + idle, evidence, "Check the slot's wiring (an x16 slot wired x4), riser cables and the "
                      "firmware's PCIe speed setting.")
    return result(check_id, Outcome.PASSED, where, evidence)
