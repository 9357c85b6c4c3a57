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
from .catalog import RECOMMENDED, REQUIRED, check, not_collected, result
from .remedy import kernel_args


# Options every host needs; the vendor IOMMU driver is judged by the IOMMU's vendor.
CONFIG_OPTIONS = [
    "CONFIG_IOMMU_SUPPORT", "CONFIG_IOMMU_API", "CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU",
    "CONFIG_IRQ_REMAP", "CONFIG_VFIO", "CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1", "CONFIG_KVM_VFIO",
]
_VENDOR_OPTION = {"CONFIG_INTEL_IOMMU": "intel", "CONFIG_AMD_IOMMU": "amd"}


@check("kernel.config", REQUIRED, "the kernel is built with the IOMMU, VFIO and KVM-VFIO options (=y or =m)")
def config_option(facts: HostFacts, option: str) -> CheckResult:
    check_id = f"{config_option.id}[{option}]"
    if option == "CONFIG_VFIO_IOMMU_TYPE1" and iommufd_container(facts.kernel_config) and facts.kernel_config.value(option) not in ("y", "m"):
        return result(check_id, Outcome.PASSED, "not needed: iommufd provides the VFIO container (/dev/vfio/vfio)",
                      [iommufd_container(facts.kernel_config)])
    vendor_needed = _VENDOR_OPTION.get(option)
    if vendor_needed and facts.iommu_vendor and facts.iommu_vendor != vendor_needed:
        if facts.iommu_vendor_from_cpu:
            cpu = "an AMD" if facts.iommu_vendor == "amd" else "an Intel"
            return result(check_id, Outcome.SKIPPED, f"not applicable: {cpu} CPU (no IOMMU table says otherwise)")
        name = "AMD-Vi" if facts.iommu_vendor == "amd" else "Intel VT-d"
        return result(check_id, Outcome.SKIPPED, f"not applicable: this host's IOMMU is {name}")
    config = facts.kernel_config
    if config is None:
        if facts.kernel_config_state is PathState.ABSENT:
            return result(check_id, Outcome.SKIPPED,
                          f"not judged: neither /boot/config-{facts.kernel_release} nor /proc/config.gz exists on the host "
                          "(install the kernel's config file, or build with CONFIG_IKCONFIG_PROC)")
        return not_collected(check_id, "the kernel config (/boot/config-* or /proc/config.gz)")
    value = config.value(option)
    evidence = [config.line(option) + (f"   ({config.source})" if value is not None else "")]
    if value in ("y", "m"):
        how = "built in" if value == "y" else "a module"
        return result(check_id, Outcome.PASSED, f"{option}={value} ({how})", evidence)
    parent = parent_not_set(config, option) if value is None else ""
    if parent:  # left out of the file because its parent is off: the parent is what to fix
        return result(check_id, Outcome.FAILED,
                      f"{option} is absent because {parent} is not set: this kernel cannot assign devices",
                      evidence + [f"{config.line(parent)}   ({config.source})"],
                      f"Boot a kernel built with {parent}=y or =m and {option}=y or =m "
                      "(your distribution's standard kernel has them).")
    if value is None and config.truncated:
        return result(check_id, Outcome.FAILED,
                      f"{option} not found, and {config.source} is cut short ({config.truncated_why}): re-collect it",
                      evidence + [f"{len(config.options)} options read before the cut"],
                      "Re-collect the kernel config; if the file on the host is damaged, reinstall the kernel package.")
    state = "not set" if value == "n" else ("absent" if value is None else f"set to {value!r}")
    return result(check_id, Outcome.FAILED, f"{option} is {state}: this kernel cannot assign devices", evidence,
                  f"Boot a kernel built with {option}=y or =m (your distribution's standard kernel has it).")


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


def _vfio_pci_ids(params: list[Param], found: _Findings) -> None:
    found.notes += [f"{p.raw}: vfio-pci claims these devices at boot" for p in params if p.name == "vfio_pci.ids"]


@check("kernel.cmdline", RECOMMENDED, "the kernel command line enables, and does not undermine, the IOMMU")
def cmdline(facts: HostFacts) -> CheckResult:
    kernel_params = facts.kernel_params  # /proc/cmdline, else dmesg's Command line
    if kernel_params.unknown:
        return not_collected(cmdline.id, kernel_params.source)
    params = kernel_params.value
    found = _Findings()
    _vendor_switches(params, found)
    _iommu_param(params, found)
    _intel_default(facts, params, found)
    _acs_override(params, found)
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
    iommu_bits = [p.raw for p in params if p.name in ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict")]
    summary = ("IOMMU parameters: " + " ".join(iommu_bits)) if iommu_bits else "no IOMMU parameter needed"
    return result(cmdline.id, Outcome.PASSED, f"command line is sound for device assignment ({summary})", evidence)


_IOMMU_PARAM_NAMES = ("intel_iommu", "amd_iommu", "iommu", "pcie_acs_override", "intremap", "nointremap",
                      "vfio_pci.ids", "vfio_iommu_type1.allow_unsafe_interrupts", "iommu.passthrough")


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
