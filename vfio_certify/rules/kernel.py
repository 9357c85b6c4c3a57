"""kernel.config[...] and kernel.cmdline: how the kernel was built and booted.

How the kernel reads its command line is a fact (facts/kernel_cmdline.py); kernel.cmdline judges
what it leaves, one parameter family at a time, each family adding to one set of findings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..facts import HostFacts
from ..facts.cmdline import Param
from ..facts.kconfig import iommufd_container, parent_not_set
from ..facts.kernel_cmdline import (AMD_IOMMU_VALUES, INTEL_IOMMU_VALUES, intel_iommu_default_on, intremap_disabled_by,
                                    iommu_option_name, iommu_options, iommu_switch, kstrtobool, match, options,
                                    unsafe_interrupts_by, vtd_on_without_flag)
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import RECOMMENDED, REQUIRED, check, NOT_APPLICABLE, not_collected, result
from .remedy import kernel_args, kernel_build


# Options every host needs; the vendor IOMMU driver is judged by the IOMMU's vendor, and an option of
# one architecture is not applicable on the other (x86: VT-d, AMD-Vi, interrupt remapping; arm64: the
# SMMUv3 driver and the GIC ITS, which isolates MSIs there).
CONFIG_OPTIONS = [
    "CONFIG_IOMMU_SUPPORT", "CONFIG_IOMMU_API", "CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU",
    "CONFIG_IRQ_REMAP", "CONFIG_VFIO", "CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1", "CONFIG_KVM_VFIO",
    "CONFIG_ARM_SMMU_V3", "CONFIG_ARM_GIC_V3_ITS",
]
_VENDOR_OPTION = {"CONFIG_INTEL_IOMMU": "intel", "CONFIG_AMD_IOMMU": "amd"}
_ARCH_OPTION = {"CONFIG_INTEL_IOMMU": "x86", "CONFIG_AMD_IOMMU": "x86", "CONFIG_IRQ_REMAP": "x86",
                "CONFIG_ARM_SMMU_V3": "arm64", "CONFIG_ARM_GIC_V3_ITS": "arm64"}


def _not_applicable(facts: HostFacts, option: str) -> str:
    """Why `option` does not apply to this host ('' when it does)."""
    arch, wanted = facts.arch, _ARCH_OPTION.get(option)
    if wanted and arch and arch != wanted:
        return f"not applicable: {wanted} only, and this host is {arch}"
    if wanted == "arm64" and not arch:
        return "not applicable: arm64 only, and this host's architecture was not collected (uname -m, /proc/cpuinfo)"
    if option == "CONFIG_ARM_SMMU_V3" and facts.iort is not None and facts.iort.smmu_v1_v2 and not facts.iort.smmu_v3:
        return "not applicable: the firmware's IORT lists SMMUv1/v2 only (their driver is CONFIG_ARM_SMMU)"
    return ""


@check("kernel.config", REQUIRED, "the kernel is built with the IOMMU, VFIO and KVM-VFIO options (=y or =m)")
def config_option(facts: HostFacts, option: str) -> CheckResult:
    check_id = f"{config_option.id}[{option}]"
    if option == "CONFIG_VFIO_IOMMU_TYPE1" and iommufd_container(facts.kernel_config) and facts.kernel_config.value(option) not in ("y", "m"):
        return result(check_id, Outcome.PASSED, "not needed: iommufd provides the VFIO container (/dev/vfio/vfio)",
                      [iommufd_container(facts.kernel_config)])
    why_not = _not_applicable(facts, option)
    if why_not:
        return result(check_id, Outcome.SKIPPED, why_not, skip_reason=NOT_APPLICABLE)
    vendor_needed = _VENDOR_OPTION.get(option)
    if vendor_needed and not facts.iommu_vendor and not (facts.cpu and facts.cpu.flags):
        return result(check_id, Outcome.SKIPPED, "not judged: whether this host's IOMMU is Intel VT-d or AMD-Vi: "
                      "/proc/cpuinfo was not collected or is unreadable, and no IOMMU table or unit says")
    # A virtual machine with no IOMMU yet gets the one firmware.iommu_table's fix asks for, QEMU's intel-iommu (the
    # vIOMMU that device assignment works through, whatever the CPU's vendor): its kernel needs the VT-d driver.
    vm_to_get_vtd = bool(vendor_needed and facts.iommu_vendor_from_cpu and facts.cpu and facts.cpu.is_virtual_machine)
    if vm_to_get_vtd and vendor_needed != "intel":
        return result(check_id, Outcome.SKIPPED, "not applicable: a virtual machine with no IOMMU yet; the virtual IOMMU "
                      "it needs (QEMU's intel-iommu, see firmware.iommu_table) is driven by CONFIG_INTEL_IOMMU",
                      skip_reason=NOT_APPLICABLE)
    if vendor_needed and facts.iommu_vendor and facts.iommu_vendor != vendor_needed and not vm_to_get_vtd:
        if facts.iommu_vendor_from_cpu:
            cpu = "an AMD" if facts.iommu_vendor == "amd" else "an Intel"
            return result(check_id, Outcome.SKIPPED, f"not applicable: {cpu} CPU (no IOMMU table says otherwise)",
                          skip_reason=NOT_APPLICABLE)
        name = "AMD-Vi" if facts.iommu_vendor == "amd" else "Intel VT-d"
        return result(check_id, Outcome.SKIPPED, f"not applicable: this host's IOMMU is {name}",
                      skip_reason=NOT_APPLICABLE)
    config = facts.kernel_config
    if config is None:
        if facts.kernel_config_state is PathState.ABSENT:
            # Known absent, yet still evidence this check lacks (not "does not apply"): nothing else on the host
            # states how its kernel was built, so the host is incomplete until the config is there to collect.
            return result(check_id, Outcome.SKIPPED,
                          f"not judged: /boot/config-{facts.kernel_release} or /proc/config.gz was not collected: "
                          "neither exists on the host, so nothing shows how its kernel was built (install the kernel's "
                          f"build config as /boot/config-{facts.kernel_release}, or `modprobe configs` for /proc/config.gz, "
                          "then collect again)")
        return not_collected(check_id, "the kernel config (/boot/config-* or /proc/config.gz)")
    value = config.value(option)
    evidence = [config.line(option) + (f"   ({config.source})" if value is not None else "")]
    if value in ("y", "m"):
        how = "built in" if value == "y" else "a module"
        return result(check_id, Outcome.PASSED, f"{option}={value} ({how})", evidence)
    recollect = "Re-collect the kernel config; if the file on the host is damaged, reinstall the kernel package."
    if not config.options:
        return result(check_id, Outcome.FAILED,
                      f"{config.source} holds no kernel option (empty, or not a kernel config): re-collect it",
                      evidence, recollect)
    parent = parent_not_set(config, option) if value is None else ""
    if parent:  # left out of the file because its parent is off: the parent is what to fix
        return result(check_id, Outcome.FAILED,
                      f"{option} is absent because {parent} is not set: this kernel cannot assign devices",
                      evidence + [f"{config.line(parent)}   ({config.source})"],
                      kernel_build(parent, option, note="your distribution's standard kernel has them"))
    if value is None and config.truncated:  # the option may stand in the part that was cut off: not judged
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: the rest of {config.source} was not collected (the file is cut short: "
                      f"{config.truncated_why}), and {option} is not in what was read; re-collect it",
                      evidence + [f"{len(config.options)} options read before the cut"], recollect)
    running = _running_kernel_has(facts, option)
    if running:  # the file says otherwise than the kernel that runs: it is not this kernel's, or not whole
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: {config.line(option)}, yet the running kernel has it ({running}): {config.source} "
                      "is cut short or not this kernel's config; re-collect it", evidence + [running])
    state = "not set" if value == "n" else ("absent" if value is None else f"set to {value!r}")
    return result(check_id, Outcome.FAILED, f"{option} is {state}: this kernel cannot assign devices", evidence,
                  kernel_build(option, note="your distribution's standard kernel has it"))


def _running_kernel_has(facts: HostFacts, option: str) -> str:
    """What the running kernel shows of a config option ('' when it shows nothing): a module of it loaded,
    built in or installed, IOMMU groups (the IOMMU API), a VT-d or AMD-Vi unit, a remapped interrupt chip."""
    module = {"CONFIG_VFIO": "vfio", "CONFIG_VFIO_PCI": "vfio_pci", "CONFIG_VFIO_IOMMU_TYPE1": "vfio_iommu_type1"}.get(option)
    if module:
        m = facts.modules
        return next((f"{where} lists {module}" for where, names in (
            ("/proc/modules", m.loaded), ("modules.builtin", m.builtin), ("modules.dep", m.loadable),
            ("/sys/module", m.in_sysfs)) if names is not None and module in names), "")
    if option in ("CONFIG_IOMMU_SUPPORT", "CONFIG_IOMMU_API"):
        populated = sum(1 for members in (facts.iommu_groups or {}).values() if members)
        return f"/sys/kernel/iommu_groups: {populated} groups with devices" if populated else ""
    unit = {"CONFIG_INTEL_IOMMU": "dmar", "CONFIG_AMD_IOMMU": "ivhd"}.get(option)
    if unit:
        units = [u for u in facts.iommu_units or [] if u.startswith(unit)]
        return f"/sys/class/iommu: {', '.join(units[:4])}" if units else ""
    if option == "CONFIG_IRQ_REMAP" and facts.interrupts is not None and facts.interrupts.remapping_active:
        return "/proc/interrupts: remapped (IR-) interrupt chips"
    return ""


@dataclass
class _Findings:
    """What the command line's parameter families found, in the order the message lists them."""
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def _vendor_switches(params: list[Param], found: _Findings) -> None:
    """intel_iommu= and amd_iommu=: unknown or prefix-read options, and an IOMMU switched off."""
    for name, valid, label in (("intel_iommu", INTEL_IOMMU_VALUES, "VT-d"), ("amd_iommu", AMD_IOMMU_VALUES, "AMD-Vi")):
        for p in (p for p in params if p.name == name):
            given = options(p.value)
            if name == "amd_iommu" and "on" in given:
                found.warnings.append("amd_iommu=on is not a valid value (the kernel ignores it): AMD-Vi is on by "
                                      "default when the firmware has an IVRS table")
                if given == ["on"]:
                    found.remove.append(p.raw)
            unknown = [o for o in given if match(o, valid) is None and not (name == "amd_iommu" and o == "on")]
            if unknown:
                found.warnings.append(f"{p.raw}: the kernel ignores unknown option(s) {', '.join(unknown)}")
            loose = [f"{o} as {match(o, valid)}" for o in given if match(o, valid) not in (None, o)]
            if loose:
                found.warnings.append(f"{p.raw}: the kernel reads {', '.join(loose)} (it matches {name}= options by prefix)")
        offs = iommu_switch(params, name)[1]
        if offs:
            found.failures.append(f"{' '.join(offs)} {'disables' if len(offs) == 1 else 'disable'} {label}")
            found.remove += offs


def _iommu_param(params: list[Param], found: _Findings) -> None:
    """iommu=: off, pt (and what is read as pt by prefix), options ignored after usedac or unknown."""
    for p in (p for p in params if p.name == "iommu"):
        value, read = p.value or "", iommu_options(p.value)
        if len(read) < len(options(value)):
            found.warnings.append(f"iommu={value}: the kernel stops reading at usedac and ignores "
                                  + ",".join(options(value)[len(read):]))
        for option in read:  # iommu=pt,nomerge: each option on its own
            said = f"iommu={value}" if option == value else f"{option} in iommu={value}"
            matched = iommu_option_name(option)
            if matched == "off":
                found.failures.append(f"{said} turns the IOMMU off")
                found.remove.append(p.raw)
            elif matched == "pt" and option != "pt":
                found.warnings.append(f"{said} is read as iommu=pt (the kernel matches iommu= values by prefix)"
                                      + ("; page-table isolation is pti=on" if option == "pti" else ""))
            elif matched == "pt":
                found.notes.append("iommu=pt: host-owned devices use identity (passthrough) DMA; assigned devices are "
                                   "still translated. It enables nothing by itself")
            elif matched is None:
                found.warnings.append(f"{said}: not an option the kernel knows")


def _intel_default(facts: HostFacts, params: list[Param], found: _Findings) -> None:
    """An Intel host without intel_iommu=on/off: VT-d on by default, on anyway (platform opt-in, a built-in
    command line), intel_iommu=on missing, or (sysfs and a whole dmesg not collected) not known to be missing."""
    if facts.iommu_vendor != "intel" or iommu_switch(params, "intel_iommu")[0] is not None:
        return
    default_on, why = intel_iommu_default_on(facts)
    shown_on = vtd_on_without_flag(facts)
    if default_on:
        found.notes.append(f"VT-d is on by default here ({why}); intel_iommu=on is not needed")
    elif shown_on:
        found.notes.append(f"VT-d is on without intel_iommu=on on the command line ({shown_on}); nothing to add")
    elif facts.iommu_units is None and facts.iommu_groups is None and (facts.dmesg is None or facts.dmesg.not_covering()):
        gap = facts.dmesg.not_covering() if facts.dmesg else "dmesg was not collected"
        found.warnings.append(f"intel_iommu=on is not on the command line and this kernel does not enable VT-d by "
                              f"default ({why}); whether the firmware forces it on is not known (/sys/class/iommu was "
                              f"not collected, {gap})")
        found.add.append("intel_iommu=on")
    else:
        found.failures.append(f"intel_iommu=on is missing and this kernel does not enable VT-d by default ({why})")
        found.add.append("intel_iommu=on")


def _acs_override(params: list[Param], found: _Findings) -> None:
    """pcie_acs_override: a security finding, whatever its value."""
    acs = [p.raw for p in params if p.name == "pcie_acs_override"]
    if acs:
        found.failures.append(f"{acs[0]} is a security finding: it makes the kernel pretend devices are isolated "
                              "when they can still reach each other by DMA (peer-to-peer)")
        found.remove.extend(acs)


def _interrupts(params: list[Param], found: _Findings) -> None:
    """intremap=/nointremap and vfio_iommu_type1.allow_unsafe_interrupts."""
    for raw in intremap_disabled_by(params):
        found.failures.append(f"{raw} disables interrupt remapping")
        found.remove.append(raw)
    unsafe = unsafe_interrupts_by(params)
    if unsafe:
        found.warnings.append(f"{unsafe}: VFIO will assign devices without interrupt remapping (MSI injection risk)")
    for p in params:
        if p.name == "intremap" and p.value is None:
            found.warnings.append("intremap without a value changes nothing (the kernel refuses it): intremap=on or =off")
            found.remove.append(p.raw)
        if p.name == "vfio_iommu_type1.allow_unsafe_interrupts" and kstrtobool(p.value) is None:
            found.warnings.append(f"{p.raw}: not a boolean the kernel reads (y/n, 1/0, on/off, true/false): refused, "
                                  "and a modular vfio_iommu_type1 then fails to load")


def _iommu_core(params: list[Param], found: _Findings) -> None:
    """iommu.passthrough= and iommu.strict= (drivers/iommu/iommu.c, every architecture): host DMA policy only."""
    for p in params:
        if p.name not in ("iommu.passthrough", "iommu.strict"):
            continue
        value = kstrtobool(p.value)
        if value is None:
            found.warnings.append(f"{p.raw}: not a boolean the kernel reads (y/n, 1/0, on/off): ignored")
        elif p.name == "iommu.passthrough" and value:
            found.notes.append(f"{p.raw}: host-owned devices bypass translation (identity DMA); assigned devices "
                               "are still translated. It enables nothing by itself")
        elif p.name == "iommu.strict" and not value:
            found.notes.append(f"{p.raw}: lazy IOTLB invalidation for host-owned devices; no effect on assignment")


# x86-only parameters: arch/x86 and the VT-d / AMD-Vi drivers read them; an arm64 kernel passes them to init.
_X86_ONLY = ("intel_iommu", "amd_iommu", "iommu", "intremap", "nointremap")


def _arm64_params(params: list[Param], found: _Findings) -> None:
    """arm64: the SMMU needs no parameter; x86 ones are ignored; disable_bypass=0 lets unattached devices DMA freely."""
    ignored = [p.raw for p in params if p.name in _X86_ONLY]
    if ignored:
        found.warnings.append(f"{' '.join(ignored)}: x86 parameter(s), unknown to an arm64 kernel (ignored): the SMMU "
                              "needs no parameter, it is enabled in the firmware")
        found.remove += ignored
    for p in params:
        if p.name in ("arm_smmu_v3.disable_bypass", "arm_smmu.disable_bypass") and kstrtobool(p.value) is False:
            found.warnings.append(f"{p.raw}: DMA from devices no driver has attached to the SMMU passes untranslated "
                                  "instead of being blocked (newer kernels no longer have this parameter)")
            found.remove.append(p.raw)


def _vfio_pci_ids(params: list[Param], found: _Findings) -> None:
    found.notes += [f"{p.raw}: vfio-pci claims these devices at boot" for p in params if p.name == "vfio_pci.ids"]


@check("kernel.cmdline", RECOMMENDED, "the kernel command line enables, and does not undermine, the IOMMU")
def cmdline(facts: HostFacts) -> CheckResult:
    kernel_params = facts.kernel_params  # /proc/cmdline, else dmesg's Command line
    if kernel_params.unknown:
        return not_collected(cmdline.id, kernel_params.source)
    params = kernel_params.value
    found = _Findings()
    if facts.arch == "arm64":
        _arm64_params(params, found)
    else:
        _vendor_switches(params, found)
        _iommu_param(params, found)
        _intel_default(facts, params, found)
    _iommu_core(params, found)
    _acs_override(params, found)
    if facts.arch == "arm64":
        _interrupts([p for p in params if p.name not in _X86_ONLY], found)
    else:
        _interrupts(params, found)
    _vfio_pci_ids(params, found)
    pending = _pending_boot_changes(facts, params)
    if pending:
        found.warnings.append("reboot pending: " + pending)

    evidence = [kernel_params.source]
    evidence += [f"{b.source}: {line}" for b in facts.boot_configs for line in b.evidence[:2]]
    evidence += [f"note: {n}" for n in found.notes]
    remove = sorted(set(found.remove), key=found.remove.index)
    if found.failures:
        return result(cmdline.id, Outcome.FAILED, "; ".join(found.failures + found.warnings), evidence,
                      kernel_args(facts, add=found.add, remove=remove))
    if found.warnings:
        fix = (kernel_args(facts, add=found.add, remove=remove) if remove or found.add
               else ("Reboot into the configured command line." if pending else ""))
        return result(cmdline.id, Outcome.WARNING, "; ".join(found.warnings), evidence, fix)
    iommu_bits = [p.raw for p in params if p.name in ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict",
                                                      "arm_smmu_v3.disable_bypass", "arm_smmu.disable_bypass")]
    summary = ("IOMMU parameters: " + " ".join(iommu_bits)) if iommu_bits else "no IOMMU parameter needed"
    return result(cmdline.id, Outcome.PASSED, f"command line is sound for device assignment ({summary})", evidence)


_IOMMU_PARAM_NAMES = ("intel_iommu", "amd_iommu", "iommu", "pcie_acs_override", "intremap", "nointremap",
                      "vfio_pci.ids", "vfio_iommu_type1.allow_unsafe_interrupts", "iommu.passthrough", "iommu.strict",
                      "arm_smmu_v3.disable_bypass", "arm_smmu.disable_bypass")


def _pending_boot_changes(facts: HostFacts, running: list[Param]) -> str:
    """IOMMU-related args the boot configuration has that the running kernel lacks (or vice versa)."""
    def relevant(params: list[Param]) -> set[str]:
        return {f"{p.name}={p.value}" if p.value is not None else p.name for p in params if p.name in _IOMMU_PARAM_NAMES}

    now = relevant(running)
    for boot in facts.boot_configs:
        configured = relevant(boot.args)
        added, dropped = sorted(configured - now), sorted(now - configured)
        if boot.source == "/etc/default/grub" and not added:
            continue  # args may come from elsewhere (BLS entries); only what grub adds is telling
        if added or (dropped and boot.source != "/etc/default/grub"):
            parts = []
            if added:
                parts.append(f"{boot.source} has {' '.join(added)} but the running kernel booted without it")
            if dropped and boot.source != "/etc/default/grub":
                parts.append(f"{boot.source} no longer has {' '.join(dropped)}")
            hint = "" if boot.source != "/etc/default/grub" else (
                " (regenerate the boot loader config: grub2-mkconfig / update-grub, then reboot)")
            return "; ".join(parts) + hint
    return ""
