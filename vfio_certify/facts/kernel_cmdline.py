"""How the kernel reads its command line: the values it knows and what each occurrence leaves switched on.

facts/cmdline.py splits the text into Params; this module applies them as the kernel does, not as
substrings: names treat '-' and '_' alike (the parser normalises them); every occurrence is applied in
order, each comma-separated option matched by prefix (`iommu=pti` acts as `pt`, `intel_iommu=on1` as
`on`), so the last on/off option wins for intel_iommu= and intremap=, while one `off` in amd_iommu= or
iommu= is for good; `amd_iommu=on` is not a value the kernel knows; `iommu=pt` selects passthrough
for host DMA and enables nothing. Rules read these; none of them judges.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .cmdline import Param

if TYPE_CHECKING:  # facts/readers assembles HostFacts from the parsers, this module among them
    from .model import HostFacts

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


def options(value: str | None) -> list[str]:
    """The comma-separated options of one value, empty ones dropped."""
    return [o for o in (value or "").split(",") if o]


def match(option: str, names) -> str | None:
    """The kernel's strncmp(option, name, strlen(name)) chain: the first name the option starts with."""
    return next((n for n in names if option.startswith(n)), None)


def iommu_switch(params: list[Param], name: str) -> tuple[bool | None, list[str]]:
    """What intel_iommu= or amd_iommu= leave the IOMMU: on (True), off (False) or unsaid (None), and the args that
    turn it off when it ends off. intel_iommu_setup runs once per occurrence: the last on/off option seen wins.
    parse_amd_iommu_options knows no `on`: one `off` anywhere disables AMD-Vi for good."""
    state, offs = None, []
    for p in (p for p in params if p.name == name):
        for option in options(p.value):
            matched = match(option, INTEL_IOMMU_VALUES if name == "intel_iommu" else AMD_IOMMU_VALUES)
            if matched in ("on", "off"):
                state = matched == "on"
                if not state:
                    offs.append(p.raw)
    return state, (list(dict.fromkeys(offs)) if state is False else [])


def iommu_options(value: str | None) -> list[str]:
    """The iommu= options the kernel reads: iommu_setup returns at usedac, ignoring what follows."""
    read = options(value)
    return read[: next((i + 1 for i, o in enumerate(read) if o.startswith("usedac")), len(read))]


def iommu_option_name(option: str) -> str | None:
    """The iommu= option the kernel takes `option` for (longest prefix), '<size>' for a GART aperture size."""
    if option[:1].isdigit():
        return "<size>"
    return next((n for n in sorted(IOMMU_PREFIXES, key=len, reverse=True) if option.startswith(n)), None)


def iommu_off_by(params: list[Param]) -> list[str]:
    """The iommu= args that turn the IOMMU off (no_iommu: nothing clears it)."""
    return [p.raw for p in params if p.name == "iommu" and any(o.startswith("off") for o in iommu_options(p.value))]


def intremap_disabled_by(params: list[Param]) -> list[str]:
    """The args that leave interrupt remapping off; empty when it is left on. nointremap disables; intremap=
    (setup_irqremap) walks comma-separated options by prefix, the last on/off wins; a bare intremap is -EINVAL."""
    off, offs = False, []
    for p in params:
        if p.name == "nointremap":
            off = True
            offs.append(p.raw)
        elif p.name == "intremap":
            for matched in filter(None, (match(o, ("on", "off")) for o in options(p.value))):
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


def vtd_on_without_flag(facts: HostFacts) -> str:
    """What shows VT-d on although the command line has no intel_iommu=on ('' if nothing does): sysfs, the
    firmware's platform opt-in, VT-d's init line, or 'DMAR: IOMMU enabled' (printed only on reading
    intel_iommu=on: then it came from a built-in command line or bootconfig)."""
    if vtd_running(facts):
        return f"sysfs: {', '.join(facts.iommu_units[:4])} and populated IOMMU groups"
    if facts.iommu_units is None and any((facts.iommu_groups or {}).values()):
        return "populated IOMMU groups in /sys/kernel/iommu_groups (/sys/class/iommu was not collected)"
    d = facts.dmesg
    if d is None:
        return ""
    if d.platform_optin:
        return f"{d.platform_optin[0]} (the firmware's platform opt-in forces VT-d on)"
    if d.vtd_initialized:
        return d.vtd_initialized[0]
    if d.dmar_iommu_enabled:
        return (f"{d.dmar_iommu_enabled[0]} (the kernel read intel_iommu=on at boot, from a built-in command "
                "line or bootconfig)")
    return ""
