"""kernel.config[...] and kernel.cmdline: how the kernel was built and booted.

Command-line semantics follow the kernel, not substrings: parameter names treat '-'
and '_' alike; values are applied in order (the last one wins); `iommu=` values are
matched by prefix on x86 (`iommu=pti` acts as `pt`); `amd_iommu=on` is not a value
the kernel knows; `iommu=pt` selects passthrough for host DMA and enables nothing.
"""
from __future__ import annotations

from ..facts import HostFacts
from ..facts.cmdline import Param, parse_cmdline, values_of
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import not_collected, result
from .remedy import kernel_args

CONFIG = "kernel.config"
CMDLINE = "kernel.cmdline"

# Options every host needs; the vendor IOMMU driver is judged by the IOMMU's vendor.
CONFIG_OPTIONS = [
    "CONFIG_IOMMU_SUPPORT", "CONFIG_IOMMU_API", "CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU",
    "CONFIG_IRQ_REMAP", "CONFIG_VFIO", "CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1", "CONFIG_KVM_VFIO",
]
_VENDOR_OPTION = {"CONFIG_INTEL_IOMMU": "intel", "CONFIG_AMD_IOMMU": "amd"}
# Values the kernel's intel_iommu= and amd_iommu= parsers accept (comma separated).
INTEL_IOMMU_VALUES = {"on", "off", "igfx_off", "forcedac", "strict", "sp_off", "sm_on", "sm_off", "tboot_noforce"}
AMD_IOMMU_VALUES = {"fullflush", "force_enable", "off", "force_isolation", "pgtbl_v1", "pgtbl_v2",
                    "irtcachedis", "nohugepages", "v2_pgsizes_only"}
# x86 iommu= options, matched by prefix (arch/x86/kernel/pci-dma.c iommu_setup).
IOMMU_PREFIXES = ["off", "force", "noforce", "biomerge", "panic", "nopanic", "merge", "nomerge", "soft", "pt", "nopt"]
INTEL_DEFAULT_ON_SINCE = (6, 8)


def config_option(facts: HostFacts, option: str) -> CheckResult:
    check_id = f"{CONFIG}[{option}]"
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
    if value is None and config.truncated:
        return result(check_id, Outcome.FAILED,
                      f"{option} not found, and {config.source} is cut short (last line incomplete): re-collect it",
                      evidence + [f"{len(config.options)} options read before the cut"],
                      "Re-collect the kernel config; if the file on the host is damaged, reinstall the kernel package.")
    state = "not set" if value == "n" else ("absent" if value is None else f"set to {value!r}")
    return result(check_id, Outcome.FAILED, f"{option} is {state}: this kernel cannot assign devices", evidence,
                  f"Boot a kernel built with {option}=y or =m (your distribution's standard kernel has it).")


def intel_iommu_default_on(facts: HostFacts) -> tuple[bool, str]:
    """Whether VT-d is on without intel_iommu=on, and why we think so."""
    config = facts.kernel_config
    if config is not None and config.value("CONFIG_INTEL_IOMMU_DEFAULT_ON") is not None:
        value = config.value("CONFIG_INTEL_IOMMU_DEFAULT_ON")
        return value == "y", config.line("CONFIG_INTEL_IOMMU_DEFAULT_ON")
    if config is not None and config.value("CONFIG_INTEL_IOMMU") and not config.truncated:
        return False, "# CONFIG_INTEL_IOMMU_DEFAULT_ON absent from the config (default off)"
    version = facts.kernel_version
    if version and version >= INTEL_DEFAULT_ON_SINCE:
        return True, f"kernel {facts.kernel_release} >= 6.8 (VT-d on by default upstream; config not seen)"
    return False, f"kernel {facts.kernel_release or 'unknown'} (VT-d off by default before 6.8; config not seen)"


def iommu_cmdline_fix(facts: HostFacts) -> str:
    """Set the command line right for this host's IOMMU vendor."""
    params = facts.cmdline or []
    remove = [p.raw for p in params if (p.name in ("intel_iommu", "amd_iommu") and (p.value or "").split(",")[0] == "off")
              or (p.name == "iommu" and (p.value or "").startswith("off"))
              or p.name in ("nointremap",) or (p.name == "intremap" and p.value == "off")]
    add = []
    if facts.iommu_vendor != "amd" and not intel_iommu_default_on(facts)[0]:
        add.append("intel_iommu=on")
    return kernel_args(facts, add=add, remove=remove) if (add or remove) else kernel_args(facts, remove=remove)


def _last(params: list[Param], name: str) -> str | None:
    found = values_of(params, name)
    return found[-1] if found else None


def cmdline(facts: HostFacts) -> CheckResult:
    params = facts.cmdline
    if params is None:
        if facts.dmesg and facts.dmesg.command_line:
            params = parse_cmdline(facts.dmesg.command_line)
        else:
            return not_collected(CMDLINE, "/proc/cmdline")
    failures: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    add: list[str] = []
    remove: list[str] = []
    vendor = facts.iommu_vendor

    for name, valid, label in (("intel_iommu", INTEL_IOMMU_VALUES, "VT-d"), ("amd_iommu", AMD_IOMMU_VALUES, "AMD-Vi")):
        value = _last(params, name)
        if value is None:
            continue
        options = [o for o in value.split(",") if o]
        unknown = [o for o in options if o not in valid]
        if "off" in options:
            failures.append(f"{name}=off disables {label}")
            remove.append(f"{name}={value}")
        if name == "amd_iommu" and "on" in unknown:
            warnings.append("amd_iommu=on is not a valid value (the kernel ignores it): AMD-Vi is on by default "
                            "when the firmware has an IVRS table")
            remove.append("amd_iommu=on")
            unknown.remove("on")
        if unknown:
            warnings.append(f"{name}={value}: the kernel ignores unknown option(s) {', '.join(unknown)}")
    intel = _last(params, "intel_iommu")
    for value in values_of(params, "iommu"):
        for option in [o for o in value.split(",") if o]:  # iommu=pt,nomerge: each option on its own
            said = f"iommu={value}" if option == value else f"{option} in iommu={value}"
            matched = next((p for p in sorted(IOMMU_PREFIXES, key=len, reverse=True) if option.startswith(p)), None)
            if matched == "off":
                failures.append(f"{said} turns the IOMMU off")
                remove.append(f"iommu={value}")
            elif matched == "pt" and option != "pt":
                warnings.append(f"{said} is read as iommu=pt (the kernel matches iommu= values by prefix)"
                                + ("; page-table isolation is pti=on" if option == "pti" else ""))
            elif matched == "pt":
                notes.append("iommu=pt: host-owned devices use identity (passthrough) DMA; assigned devices are still "
                             "translated. It enables nothing by itself")
            elif matched is None:
                warnings.append(f"{said}: not an option the kernel knows")
    intel_options = (intel or "").split(",")
    if vendor == "intel" and "on" not in intel_options and "off" not in intel_options:
        default_on, why = intel_iommu_default_on(facts)
        if not default_on:
            failures.append(f"intel_iommu=on is missing and this kernel does not enable VT-d by default ({why})")
            add.append("intel_iommu=on")
        else:
            notes.append(f"VT-d is on by default here ({why}); intel_iommu=on is not needed")
    acs = [p.raw for p in params if p.name == "pcie_acs_override"]
    if acs:
        failures.append(f"{acs[0]} is a security finding: it makes the kernel pretend devices are isolated "
                        "when they can still reach each other by DMA (peer-to-peer)")
        remove.extend(acs)
    for p in params:
        if p.name in ("nointremap",) or (p.name == "intremap" and p.value == "off"):
            failures.append(f"{p.raw} disables interrupt remapping")
            remove.append(p.raw)
        if p.name == "vfio_iommu_type1.allow_unsafe_interrupts" and (p.value or "1") not in ("0", "N", "n"):
            warnings.append(f"{p.raw}: VFIO will assign devices without interrupt remapping (MSI injection risk)")
        if p.name == "vfio_pci.ids":
            notes.append(f"{p.raw}: vfio-pci claims these devices at boot")

    pending = _pending_boot_changes(facts, params)
    if pending:
        warnings.append("reboot pending: " + pending)

    evidence = [f"/proc/cmdline: {facts.cmdline_text}" if facts.cmdline is not None else f"dmesg: Kernel command line: {facts.dmesg.command_line}"]
    evidence += [f"{b.source}: {line}" for b in facts.boot_configs for line in b.evidence[:2]]
    evidence += [f"note: {n}" for n in notes]
    if failures:
        return result(CMDLINE, Outcome.FAILED, "; ".join(failures + warnings), evidence,
                      kernel_args(facts, add=add, remove=sorted(set(remove), key=remove.index)))
    if warnings:
        fix = kernel_args(facts, remove=sorted(set(remove), key=remove.index)) if remove else (
            "Reboot into the configured command line." if pending else "")
        return result(CMDLINE, Outcome.WARNING, "; ".join(warnings), evidence, fix)
    iommu_bits = [p.raw for p in params if p.name in ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict")]
    summary = ("IOMMU parameters: " + " ".join(iommu_bits)) if iommu_bits else "no IOMMU parameter needed"
    return result(CMDLINE, Outcome.PASSED, f"command line is sound for device assignment ({summary})", evidence)


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
