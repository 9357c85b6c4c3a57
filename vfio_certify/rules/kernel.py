"""kernel.config[...] and kernel.cmdline: how the kernel was built and booted.

Command-line semantics follow the kernel, not substrings: parameter names treat '-'
and '_' alike; every occurrence is applied in order, each comma-separated option
matched by prefix (`iommu=pti` acts as `pt`, `intel_iommu=on1` as `on`), so the last
on/off option wins for intel_iommu= and intremap=, while one `off` in amd_iommu= or
iommu= is for good; `amd_iommu=on` is not a value the kernel knows; `iommu=pt`
selects passthrough for host DMA and enables nothing.
"""
from __future__ import annotations

from ..facts import HostFacts
from ..facts.cmdline import Param, parse_cmdline
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import NOT_APPLICABLE, not_collected, result
from .remedy import kernel_args

CONFIG = "kernel.config"
CMDLINE = "kernel.cmdline"

# Options every host needs; the vendor IOMMU driver is judged by the IOMMU's vendor.
CONFIG_OPTIONS = [
    "CONFIG_IOMMU_SUPPORT", "CONFIG_IOMMU_API", "CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU",
    "CONFIG_IRQ_REMAP", "CONFIG_VFIO", "CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1", "CONFIG_KVM_VFIO",
]
_VENDOR_OPTION = {"CONFIG_INTEL_IOMMU": "intel", "CONFIG_AMD_IOMMU": "amd"}
# The options of intel_iommu= (intel_iommu_setup) and amd_iommu= (parse_amd_iommu_options), in the order the
# kernel tries them: each comma-separated option is matched by prefix (strncmp), the first match wins.
INTEL_IOMMU_VALUES = ("on", "off", "igfx_off", "forcedac", "strict", "sp_off", "sm_on", "sm_off", "tboot_noforce")
AMD_IOMMU_VALUES = ("fullflush", "force_enable", "off", "force_isolation", "pgtbl_v1", "pgtbl_v2",
                    "irtcachedis", "nohugepages", "v2_pgsizes_only")
# x86 iommu= options, matched by prefix: arch/x86/kernel/pci-dma.c iommu_setup (which stops reading after usedac),
# then the AMD GART's gart_parse_options (arch/x86/kernel/amd_gart_64.c; a leading number is the aperture size).
IOMMU_PREFIXES = ["off", "force", "noforce", "biomerge", "panic", "nopanic", "merge", "nomerge", "forcesac", "allowdac",
                  "nodac", "usedac", "soft", "pt", "nopt",
                  "fullflush", "nofullflush", "noagp", "noaperture", "allowed", "memaper"]
INTEL_DEFAULT_ON_SINCE = (6, 8)


def iommufd_container(facts: HostFacts) -> str:
    """The config lines saying iommufd provides /dev/vfio/vfio instead of VFIO's type1 container (6.2+:
    CONFIG_IOMMUFD_VFIO_CONTAINER=y with CONFIG_VFIO_CONTAINER off): then no vfio_iommu_type1 is needed. '' if not."""
    config = facts.kernel_config
    if config is None or config.value("CONFIG_IOMMUFD_VFIO_CONTAINER") != "y" or config.value("CONFIG_VFIO_CONTAINER") == "y":
        return ""
    return f"{config.line('CONFIG_IOMMUFD_VFIO_CONTAINER')}, {config.line('CONFIG_VFIO_CONTAINER')}"


def config_option(facts: HostFacts, option: str) -> CheckResult:
    check_id = f"{CONFIG}[{option}]"
    if option == "CONFIG_VFIO_IOMMU_TYPE1" and iommufd_container(facts) and facts.kernel_config.value(option) not in ("y", "m"):
        return result(check_id, Outcome.PASSED, "not needed: iommufd provides the VFIO container (/dev/vfio/vfio)",
                      [iommufd_container(facts)])
    vendor_needed = _VENDOR_OPTION.get(option)
    if vendor_needed and facts.iommu_vendor and facts.iommu_vendor != vendor_needed:
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
    if value is None and config.truncated:
        return result(check_id, Outcome.FAILED,
                      f"{option} not found, and {config.source} is cut short ({config.truncated_why}): re-collect it",
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


def vtd_running(facts: HostFacts) -> bool:
    """sysfs shows VT-d at work: dmar units in /sys/class/iommu and populated /sys/kernel/iommu_groups."""
    return any(u.startswith("dmar") for u in facts.iommu_units or []) and any((facts.iommu_groups or {}).values())


def _options(value: str | None) -> list[str]:
    return [o for o in (value or "").split(",") if o]


def _match(option: str, names) -> str | None:
    """The kernel's strncmp(option, name, strlen(name)) chain: the first name the option starts with."""
    return next((n for n in names if option.startswith(n)), None)


def iommu_switch(params: list[Param], name: str) -> tuple[bool | None, list[str]]:
    """What intel_iommu= or amd_iommu= leave the IOMMU: on (True), off (False) or unsaid (None), and the args that
    turn it off when it ends off. intel_iommu_setup runs once per occurrence: the last on/off option seen wins.
    parse_amd_iommu_options knows no `on`: one `off` anywhere disables AMD-Vi for good."""
    state, offs = None, []
    for p in (p for p in params if p.name == name):
        for option in _options(p.value):
            matched = _match(option, INTEL_IOMMU_VALUES if name == "intel_iommu" else AMD_IOMMU_VALUES)
            if matched in ("on", "off"):
                state = matched == "on"
                if not state:
                    offs.append(p.raw)
    return state, (list(dict.fromkeys(offs)) if state is False else [])


def _iommu_options(value: str | None) -> list[str]:
    """The iommu= options the kernel reads: iommu_setup returns at usedac, ignoring what follows."""
    options = _options(value)
    return options[: next((i + 1 for i, o in enumerate(options) if o.startswith("usedac")), len(options))]


def iommu_off_by(params: list[Param]) -> list[str]:
    """The iommu= args that turn the IOMMU off (no_iommu: nothing clears it)."""
    return [p.raw for p in params if p.name == "iommu" and any(o.startswith("off") for o in _iommu_options(p.value))]


def intremap_disabled_by(params: list[Param]) -> list[str]:
    """The args that leave interrupt remapping off; empty when it is left on. nointremap disables; intremap=
    (setup_irqremap) walks comma-separated options by prefix, the last on/off wins; a bare intremap is -EINVAL."""
    off, offs = False, []
    for p in params:
        if p.name == "nointremap":
            off = True
            offs.append(p.raw)
        elif p.name == "intremap":
            for matched in filter(None, (_match(o, ("on", "off")) for o in _options(p.value))):
                off = matched == "off"
                if off:
                    offs.append(p.raw)
    return list(dict.fromkeys(offs)) if off else []


def kstrtobool(value: str | None) -> bool | None:
    """A boolean module parameter as the kernel reads it (param_set_bool, lib/kstrtox.c); None when it is refused."""
    if value is None:
        return True  # a bare flag
    head = value[:2].lower()
    if head[:1] in ("y", "t", "1") or head == "on":
        return True
    return False if head[:1] in ("n", "f", "0") or head == "of" else None


def unsafe_interrupts_by(params: list[Param]) -> str:
    """The vfio_iommu_type1.allow_unsafe_interrupts arg that leaves it true (the last value accepted wins), or ''."""
    state, raw = False, ""
    for p in params:
        if p.name == "vfio_iommu_type1.allow_unsafe_interrupts" and kstrtobool(p.value) is not None:
            state, raw = kstrtobool(p.value), p.raw
    return raw if state else ""


def iommu_cmdline_fix(facts: HostFacts) -> str:
    """Set the command line right for this host's IOMMU vendor ('' when it needs no change)."""
    params = facts.cmdline or []
    remove = (iommu_switch(params, "intel_iommu")[1] + iommu_switch(params, "amd_iommu")[1] + iommu_off_by(params)
              + intremap_disabled_by(params))
    kept = [p for p in params if p.raw not in remove]
    add = []
    if facts.iommu_vendor != "amd" and not iommu_switch(kept, "intel_iommu")[0] and not intel_iommu_default_on(facts)[0]:
        add.append("intel_iommu=on")
    return kernel_args(facts, add=add, remove=remove) if (add or remove) else ""


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
        for p in (p for p in params if p.name == name):
            options = _options(p.value)
            if name == "amd_iommu" and "on" in options:
                warnings.append("amd_iommu=on is not a valid value (the kernel ignores it): AMD-Vi is on by default "
                                "when the firmware has an IVRS table")
                if options == ["on"]:
                    remove.append(p.raw)
            unknown = [o for o in options if _match(o, valid) is None and not (name == "amd_iommu" and o == "on")]
            if unknown:
                warnings.append(f"{p.raw}: the kernel ignores unknown option(s) {', '.join(unknown)}")
            loose = [f"{o} as {_match(o, valid)}" for o in options if _match(o, valid) not in (None, o)]
            if loose:
                warnings.append(f"{p.raw}: the kernel reads {', '.join(loose)} (it matches {name}= options by prefix)")
        offs = iommu_switch(params, name)[1]
        if offs:
            failures.append(f"{' '.join(offs)} {'disables' if len(offs) == 1 else 'disable'} {label}")
            remove += offs
    for p in (p for p in params if p.name == "iommu"):
        value, read = p.value or "", _iommu_options(p.value)
        if len(read) < len(_options(value)):
            warnings.append(f"iommu={value}: the kernel stops reading at usedac and ignores "
                            + ",".join(_options(value)[len(read):]))
        for option in read:  # iommu=pt,nomerge: each option on its own
            said = f"iommu={value}" if option == value else f"{option} in iommu={value}"
            matched = "<size>" if option[:1].isdigit() else next(
                (n for n in sorted(IOMMU_PREFIXES, key=len, reverse=True) if option.startswith(n)), None)
            if matched == "off":
                failures.append(f"{said} turns the IOMMU off")
                remove.append(p.raw)
            elif matched == "pt" and option != "pt":
                warnings.append(f"{said} is read as iommu=pt (the kernel matches iommu= values by prefix)"
                                + ("; page-table isolation is pti=on" if option == "pti" else ""))
            elif matched == "pt":
                notes.append("iommu=pt: host-owned devices use identity (passthrough) DMA; assigned devices are still "
                             "translated. It enables nothing by itself")
            elif matched is None:
                warnings.append(f"{said}: not an option the kernel knows")
    if vendor == "intel" and iommu_switch(params, "intel_iommu")[0] is None:
        default_on, why = intel_iommu_default_on(facts)
        if default_on:
            notes.append(f"VT-d is on by default here ({why}); intel_iommu=on is not needed")
        elif vtd_running(facts):
            notes.append(f"VT-d is running without intel_iommu=on (sysfs: {', '.join(facts.iommu_units[:4])} and populated "
                         "IOMMU groups), e.g. forced on by the firmware's platform opt-in ('Intel-IOMMU force enabled due "
                         "to platform opt in'); nothing to add")
        else:
            failures.append(f"intel_iommu=on is missing and this kernel does not enable VT-d by default ({why})")
            add.append("intel_iommu=on")
    acs = [p.raw for p in params if p.name == "pcie_acs_override"]
    if acs:
        failures.append(f"{acs[0]} is a security finding: it makes the kernel pretend devices are isolated "
                        "when they can still reach each other by DMA (peer-to-peer)")
        remove.extend(acs)
    for raw in intremap_disabled_by(params):
        failures.append(f"{raw} disables interrupt remapping")
        remove.append(raw)
    unsafe = unsafe_interrupts_by(params)
    if unsafe:
        warnings.append(f"{unsafe}: VFIO will assign devices without interrupt remapping (MSI injection risk)")
    for p in params:
        if p.name == "intremap" and p.value is None:
            warnings.append("intremap without a value changes nothing (the kernel refuses it): intremap=on or =off")
            remove.append(p.raw)
        if p.name == "vfio_iommu_type1.allow_unsafe_interrupts" and kstrtobool(p.value) is None:
            warnings.append(f"{p.raw}: not a boolean the kernel reads (y/n, 1/0, on/off, true/false): refused, and a "
                            "modular vfio_iommu_type1 then fails to load")
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
