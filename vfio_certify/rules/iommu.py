"""iommu.*: is the IOMMU on, does it remap interrupts, are groups usable."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..facts.kernel_cmdline import (intel_iommu_default_on, intremap_disabled_by, iommu_off_by, iommu_switch, kstrtobool,
                                    unsafe_interrupts_by, vtd_on_without_flag)
from ..facts.pci import normalize_pci_address
from ..model import CheckResult, Outcome
from .catalog import REQUIRED, check, NOT_APPLICABLE, not_collected, result
from .remedy import firmware_iommu, iommu_cmdline_fix, kernel_build

# What the IOMMU being off follows from (public ids: they never change meaning)
FIRMWARE_TABLE, CMDLINE = "firmware.iommu_table", "kernel.cmdline"

# Drivers that leave a group viable for VFIO: no DMA of their own on the host side.
VFIO_SAFE_DRIVERS = {"vfio-pci", "pci-stub", "pcieport"}
NOT_PCI = "(not a PCI device)"


def _vfio_safe(driver: str) -> bool:
    """No driver, a safe one, vfio-*, or a vfio-pci-core variant (mlx5_vfio_pci, hisi_acc_vfio_pci, ...)."""
    return (not driver or driver in VFIO_SAFE_DRIVERS or driver.startswith("vfio")
            or driver.endswith(("_vfio_pci", "-vfio-pci")))


_PCI_IN_LINE = re.compile(r"\b[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b")


def _dmesg_proof(facts: HostFacts) -> list[str]:
    """Lines only an initialised IOMMU prints. 'DMAR: IOMMU enabled' is not one: intel_iommu_setup() prints
    it on reading intel_iommu=on, before any DMAR table is read."""
    d = facts.dmesg
    if d is None:
        return []
    # A group holding a PCI function: an SMMU that serves only a SoC's own blocks (a device-tree board) puts
    # platform devices in groups too, which proves nothing for PCI assignment.
    pci_groups = [line for line in d.group_additions if _PCI_IN_LINE.search(line)]
    return d.vtd_initialized[:1] + d.amd_vi_found[:1] + d.smmu_probed[:1] + pci_groups[:2]


def _dmesg_support(facts: HostFacts) -> list[str]:
    return (facts.dmesg.dmar_iommu_enabled[:1] if facts.dmesg else []) + _dmesg_proof(facts)


def _why_off(facts: HostFacts) -> tuple[str, str, list[str]]:
    """The most likely reason the IOMMU is off, its fix, and the failed check that says so (caused_by); a
    reason only from what was collected."""
    if facts.arch == "arm64":
        return _why_no_smmu(facts)
    if facts.iommu_table.absent_on_host:
        return "the firmware publishes no DMAR/IVRS table", firmware_iommu(facts), [FIRMWARE_TABLE]
    kernel_params = facts.kernel_params  # judged as the kernel reads every occurrence (facts/kernel_cmdline.py)
    params = kernel_params.value or []
    for offs in (iommu_switch(params, "intel_iommu")[1], iommu_switch(params, "amd_iommu")[1], iommu_off_by(params)):
        if offs:
            return f"{' '.join(offs)} on the kernel command line", iommu_cmdline_fix(facts), [CMDLINE]
    if (facts.iommu_vendor == "intel" and kernel_params.present and not intel_iommu_default_on(facts)[0]
            and iommu_switch(params, "intel_iommu")[0] is None and not vtd_on_without_flag(facts)):
        return (
            "this kernel does not enable VT-d by default and the command line lacks intel_iommu=on",
            iommu_cmdline_fix(facts), [CMDLINE],
        )
    return "the kernel did not initialise the IOMMU", firmware_iommu(facts), []


def _why_no_smmu(facts: HostFacts) -> tuple[str, str, list[str]]:
    """arm64: no SMMU in the firmware's tables, no SMMUv3 driver in the kernel, or no probe (and the check
    that says so)."""
    iort, config, tree = facts.iort, facts.kernel_config, facts.devicetree
    if iort is not None and not iort.smmus and not iort.problem:
        return ("the firmware's IORT describes no SMMU (the SMMU is off or absent in the firmware)", firmware_iommu(facts),
                [FIRMWARE_TABLE])
    if tree is not None and tree.present and not tree.pcie_iommu_maps and not iort:
        return ("the device tree maps no PCIe controller to an IOMMU (no iommu-map): PCI devices are not translated",
                "PCI device assignment needs an SMMU that translates the PCIe controller, described by the board's "
                "device tree or firmware (see firmware.iommu_table).", [FIRMWARE_TABLE])
    if config is not None and config.value("CONFIG_ARM_SMMU_V3") not in ("y", "m") and not config.truncated \
            and not (iort is not None and iort.smmu_v1_v2 and not iort.smmu_v3):
        return (f"this kernel has no SMMUv3 driver ({config.line('CONFIG_ARM_SMMU_V3')})",
                kernel_build("CONFIG_ARM_SMMU_V3", note="the distribution's arm64 server kernel has it"),
                ["kernel.config[CONFIG_ARM_SMMU_V3]"])
    return "the kernel did not probe an SMMU (no arm-smmu-v3 unit)", firmware_iommu(facts), []


@check("iommu.enabled", REQUIRED, "the kernel runs the IOMMU: units in /sys/class/iommu, populated groups")
def enabled(facts: HostFacts) -> CheckResult:
    units, groups = facts.iommu_units, facts.iommu_groups
    support = _dmesg_support(facts)
    populated = {n: m for n, m in (groups or {}).items() if m}
    made = facts.groups_an_iommu_made()  # not VFIO's no-IOMMU groups, which vfio makes without any IOMMU
    unread = facts.iommu_groups_unread if facts.noiommu_known else []
    count = len(made) + len(unread)
    pci_in_groups = any(normalize_pci_address(m) for ms in made.values() for m in ms)
    if groups is not None and count and not (units and populated) and (pci_in_groups or unread):
        # Only an IOMMU driver (or VFIO's no-IOMMU mode, left out above) makes groups: populated groups are proof,
        # with or without /sys/class/iommu (groups of platform devices only, on a device-tree board, prove nothing
        # for PCI: judged below).
        unit_note = ("/sys/class/iommu was not collected" if units is None else
                     f"/sys/class/iommu: {', '.join(units[:4])}" if units else
                     "/sys/class/iommu is empty (an IOMMU driver without sysfs units)")
        return result(enabled.id, Outcome.PASSED,
                      f"IOMMU enabled: {count} IOMMU groups in /sys/kernel/iommu_groups ({unit_note})",
                      [f"/sys/kernel/iommu_groups: {count} groups with devices", unit_note] + support)
    if populated and not made and not units:
        return not_collected(enabled.id, _may_be_noiommu(populated))
    if units is not None and groups is not None:
        evidence = [
            f"/sys/class/iommu: {', '.join(units) if units else 'empty'}",
            f"/sys/kernel/iommu_groups: {len(populated)} groups with devices" if populated else
            _no_groups_but(facts, "/sys/kernel/iommu_groups: 0 groups with devices"),
        ] + support
        if units and populated and not any(normalize_pci_address(m) for ms in populated.values() for m in ms) \
                and facts.arch == "arm64":
            why, fix, cause = _why_off(facts)
            return result(enabled.id, Outcome.FAILED,
                          f"IOMMUs run for platform devices only: no PCI device is in a group ({why})", evidence, fix, cause)
        if units and populated:
            return result(enabled.id, Outcome.PASSED,
                          f"IOMMU enabled: {len(units)} unit(s) ({', '.join(units[:4])}), {len(populated)} groups", evidence)
        if units and not populated:
            return result(enabled.id, Outcome.FAILED,
                          "IOMMU units exist but no device is in a group: translation is not in use",
                          evidence, "Check dmesg for DMAR/AMD-Vi errors; a kernel with iommu=off or a firmware bug can cause this.")
        why, fix, cause = _why_off(facts)
        return result(enabled.id, Outcome.FAILED, f"IOMMU not enabled: {why}", evidence, fix, cause)
    # sysfs not (wholly) collected: dmesg is the fallback, and says so.
    missing = " and ".join(p for p, v in (("/sys/class/iommu", units), ("/sys/kernel/iommu_groups", groups)) if v is None)
    if facts.dmesg is not None:
        if _dmesg_proof(facts):
            return result(enabled.id, Outcome.PASSED, f"IOMMU enabled (judged from dmesg: {missing} not collected)",
                          support + ([f"/sys/class/iommu: {', '.join(units[:4])}"] if units else []))
        gap = facts.dmesg.not_covering()
        if gap:
            return result(enabled.id, Outcome.SKIPPED, f"not judged: {missing} not collected, and {gap}",
                          [f"{line} (intel_iommu=on was read; not proof that VT-d initialised)"
                           for line in facts.dmesg.dmar_iommu_enabled[:1]])
        why, fix, cause = _why_off(facts)
        return result(enabled.id, Outcome.FAILED,
                      f"IOMMU not enabled according to dmesg ({missing} not collected): {why}",
                      [f"dmesg ({facts.dmesg.lines_read} lines, from boot): no VT-d initialisation "
                       "('DMAR: Intel(R) Virtualization Technology for Directed I/O'), AMD-Vi IOMMU, "
                       "arm-smmu-v3 probe or iommu group line"]
                      + [f"{line} (intel_iommu=on was read; not proof that VT-d initialised)"
                         for line in facts.dmesg.dmar_iommu_enabled[:1]], fix, cause)
    return not_collected(enabled.id, f"{missing} and dmesg")


def _unsafe_note(facts: HostFacts) -> list[str]:
    unsafe = kstrtobool(facts.allow_unsafe_interrupts) if facts.allow_unsafe_interrupts is not None else False
    cmdline_unsafe = bool(unsafe_interrupts_by(facts.kernel_params.value or []))
    return (
        ["vfio_iommu_type1 allow_unsafe_interrupts=Y: VFIO accepts devices without remapping (MSI injection risk)"]
        if unsafe or cmdline_unsafe else []
    )


_REMOVE_UNSAFE = "Remove vfio_iommu_type1.allow_unsafe_interrupts from the command line and /etc/modprobe.d."


@check("iommu.irq_remapping", REQUIRED,
       "interrupts from an assigned device are isolated (x86: interrupt remapping; arm64: MSIs through the GIC ITS)")
def irq_remapping(facts: HostFacts) -> CheckResult:
    if facts.arch == "arm64":
        return _its_isolation(facts)
    d, irqs = facts.dmesg, facts.interrupts
    unsafe_note = _unsafe_note(facts)
    enabled_lines = d.irq_remapping_enabled if d else []
    # /proc/interrupts shows the chips in use now; dmesg decides only when it lists none.
    listed = bool(irqs and (irqs.remapped_chips or irqs.plain_chips))
    if (irqs.remapping_active if listed else enabled_lines):
        evidence = enabled_lines[:1] + ([f"/proc/interrupts: {', '.join(sorted(irqs.remapped_chips)[:3])}"] if listed else [])
        evidence += (irqs.evidence[:1] if listed else []) + unsafe_note
        outcome = Outcome.WARNING if unsafe_note else Outcome.PASSED
        message = "interrupt remapping enabled"
        if unsafe_note:
            message += ", yet allow_unsafe_interrupts is set: remove it, it is not needed here"
        return result(irq_remapping.id, outcome, message, evidence, _REMOVE_UNSAFE if unsafe_note else "")
    if d is None and irqs is None:
        return not_collected(irq_remapping.id, "dmesg and /proc/interrupts")
    intremap_off = intremap_disabled_by((facts.kernel_params.value or []))
    gap = "" if listed or d is None else d.not_covering()
    if gap and not intremap_off and not d.irq_remapping_disabled:  # a dmesg fragment proves no absence
        return result(irq_remapping.id, Outcome.SKIPPED,
                      f"not judged: /proc/interrupts {'lists no interrupt chip' if irqs else 'was not collected'}, and {gap}",
                      unsafe_note)
    evidence = []
    if irqs is not None:
        evidence.append("/proc/interrupts: no IR- (remapped) interrupt chip"
                        + (f"; chips: {', '.join(sorted(irqs.plain_chips)[:3])}" if irqs.plain_chips else ""))
    if d is not None:
        if enabled_lines:  # /proc/interrupts listed chips, none remapped: it wins
            evidence.append(f"{enabled_lines[0]} (contradicted by /proc/interrupts: no chip is remapped now)")
        else:
            evidence.append(f"dmesg ({d.lines_read} lines): no 'Enabled IRQ remapping' / 'Interrupt remapping enabled'")
        evidence += d.irq_remapping_disabled[:2] + d.unsafe_interrupts[:1]
    evidence += unsafe_note
    if intremap_off:
        fix, cause = iommu_cmdline_fix(facts), [CMDLINE]
        message = f"interrupt remapping disabled by {' '.join(intremap_off)} on the kernel command line"
    else:
        fix = "Interrupt remapping needs the IOMMU on (see iommu.enabled) and firmware support (x2APIC/IR in the DMAR/IVRS table)."
        off = enabled(facts)
        cause = (off.caused_by or [enabled.id]) if off.outcome is Outcome.FAILED else []
        message = "interrupt remapping is not active: VFIO refuses devices unless allow_unsafe_interrupts is set"
    if unsafe_note:
        message += " (allow_unsafe_interrupts is set: assignment works but a guest can inject interrupts)"
    return result(irq_remapping.id, Outcome.FAILED, message, evidence, fix, cause)


def _its_isolation(facts: HostFacts) -> CheckResult:
    """arm64: the GIC ITS translates each device's MSIs by its DeviceID, which VFIO counts as isolated MSIs
    (no allow_unsafe_interrupts needed); GICv2m does not. /proc/interrupts shows the chips in use now; dmesg
    shows the ITS probed at boot (a host that uses no MSI yet lists no ITS chip)."""
    d, irqs, config = facts.dmesg, facts.interrupts, facts.kernel_config
    unsafe_note = _unsafe_note(facts)
    its_lines = d.gic_its[:1] if d else []
    if (irqs and irqs.msi_isolated_by_its) or its_lines:
        evidence = its_lines + ([f"/proc/interrupts: {', '.join(sorted(irqs.its_chips)[:3])}"] + irqs.its_evidence[:1]
                                if irqs and irqs.msi_isolated_by_its else []) + unsafe_note
        message = "MSIs are isolated by the GIC ITS: VFIO accepts devices without allow_unsafe_interrupts"
        if not (irqs and irqs.msi_isolated_by_its):
            message += " (judged from dmesg: " + ("/proc/interrupts lists no MSI in use" if irqs else
                                                  "/proc/interrupts was not collected") + ")"
        if unsafe_note:
            return result(irq_remapping.id, Outcome.WARNING,
                          message + ", yet allow_unsafe_interrupts is set: remove it, it is not needed here",
                          evidence, _REMOVE_UNSAFE)
        return result(irq_remapping.id, Outcome.PASSED, message, evidence)
    plain = sorted(irqs.plain_chips)[:3] if irqs else []
    absent = (d.gic_its_absent[:1] + d.gic_v2m[:1]) if d else []
    no_driver = config is not None and config.value("CONFIG_ARM_GIC_V3_ITS") == "n"
    if plain or absent or no_driver:
        evidence = ([f"/proc/interrupts: MSIs through {', '.join(plain)}, no ITS chip"] if plain else []) + absent
        evidence += [config.line("CONFIG_ARM_GIC_V3_ITS")] if no_driver else []
        fix = ("Boot a kernel built with CONFIG_ARM_GIC_V3_ITS=y." if no_driver else
               "Safe assignment on arm64 needs a GICv3 with an ITS (GICv2m MSIs are not isolated): check the "
               "firmware's GIC/ITS settings, or use a platform that has an ITS.")
        return result(irq_remapping.id, Outcome.FAILED,
                      "MSIs are not isolated (no GIC ITS in use): VFIO refuses devices unless allow_unsafe_interrupts is set"
                      + (" (it is set: a guest can inject interrupts)" if unsafe_note else ""),
                      evidence + unsafe_note, fix)
    if d is None and irqs is None:
        return not_collected(irq_remapping.id, "dmesg and /proc/interrupts")
    said = (["/proc/interrupts: no MSI chip listed (no ITS-MSI, no GICv2m)"] if irqs is not None else []) + (
        [f"dmesg ({d.lines_read} lines): no 'ITS@0x...: allocated' or 'ITS [mem' line"] if d is not None else [])
    return result(irq_remapping.id, Outcome.WARNING,
                  "could not tell whether MSIs are isolated by a GIC ITS: no MSI is in use and dmesg does not show the ITS",
                  said + unsafe_note, "Re-collect after boot (dmesg from 0.000000) or with a device using MSIs.")


@check("iommu.groups", REQUIRED, "IOMMU groups exist")
def groups(facts: HostFacts) -> CheckResult:
    if facts.iommu_groups is None:
        return not_collected(groups.id, "/sys/kernel/iommu_groups")
    populated = facts.groups_an_iommu_made()
    if not populated and any(facts.iommu_groups.values()):
        return not_collected(groups.id, _may_be_noiommu(n for n, m in facts.iommu_groups.items() if m))
    if not populated:
        why, fix, cause = _why_off(facts)
        return result(groups.id, Outcome.FAILED, f"no IOMMU groups: {why}",
                      [_no_groups_but(facts, "/sys/kernel/iommu_groups is empty")], fix, cause or [enabled.id])
    largest = max(populated.items(), key=lambda kv: len(kv[1]))
    evidence = [f"{len(populated)} groups; largest is group {largest[0]} with {len(largest[1])} devices"]
    return result(groups.id, Outcome.PASSED, f"{len(populated)} IOMMU groups", evidence)


def _may_be_noiommu(groups: Iterable[int]) -> str:
    """What would tell whether groups of vfio-pci devices only are an IOMMU's or VFIO's no-IOMMU groups."""
    return f"/dev/vfio (whether group {', '.join(map(str, sorted(groups)[:4]))}, of vfio-pci devices only, is VFIO's no-IOMMU group)"


def _no_groups_but(facts: HostFacts, empty: str) -> str:
    """What /sys/kernel/iommu_groups holds when it has no IOMMU's group: nothing, or VFIO's no-IOMMU groups."""
    if not facts.noiommu_groups:
        return empty
    names = ", ".join(f"/dev/vfio/noiommu-{n}" for n in sorted(facts.noiommu_groups)[:4])
    return (f"/sys/kernel/iommu_groups holds only VFIO's no-IOMMU groups ({names}: vfio's enable_unsafe_noiommu_mode), "
            "which no IOMMU makes")


@dataclass
class _Members:
    """The other endpoints of a group, by what they do to assigning it."""
    blocking: list[str] = field(default_factory=list)  # bound to a host driver (or not assignable at all)
    idle: list[str] = field(default_factory=list)  # unbound, or on a VFIO-safe driver
    unknown: list[str] = field(default_factory=list)  # whether it is bound was not collected


def _has_vfs(facts: HostFacts, address: str) -> str:
    """A VF of this PF (a VF exists only while its PF's driver is bound): its address, or ''."""
    return next((a for a, d in (facts.pci or {}).items() if d.physfn == address), "")


def group_members(facts: HostFacts, group: int) -> list[str]:
    """A group's members: its member list, and every function whose own iommu_group link names the group
    (listed or not: a member list cut short still has them)."""
    listed = (facts.iommu_groups or {}).get(group, [])
    return sorted({*listed, *(a for a, d in (facts.pci or {}).items() if d.iommu_group == group)})


def blocking_members(facts: HostFacts, group: int, named: set[str]) -> tuple[list[str], list[str]]:
    """Other endpoints of a group: (those that block assignment, those that are fine but unnamed)."""
    others = _group_members(facts, group_members(facts, group), named)
    return others.blocking, others.idle


def _group_members(facts: HostFacts, members: list[str], named: set[str]) -> _Members:
    found = _Members()
    for address in members:
        if address in named:
            continue
        if normalize_pci_address(address) != address:  # an ACPI/platform device (AMD IVRS HID AMDI0020:00)
            driver = facts.other_group_members.get(address)  # VFIO cannot assign it; bound, it holds the group
            if driver == "":
                found.idle.append(f"{address} {NOT_PCI}, no driver")
            else:
                found.blocking.append(f"{address} {NOT_PCI}, " + (f"driver {driver}" if driver else "its driver not collected"))
            continue
        device = facts.pci_device(address)
        if device is None:
            found.blocking.append(f"{address} (not in /sys/bus/pci/devices)")
            continue
        if device.is_bridge:
            continue
        bound = device.bound
        if bound.unknown:
            vf = _has_vfs(facts, address)
            if vf or (device.sriov_numvfs or 0) > 0:
                found.blocking.append(f"{device.summary()}, yet bound: it has VFs ({vf or f'sriov_numvfs {device.sriov_numvfs}'})"
                                      ", which exist only while the PF's driver is bound")
            else:
                found.unknown.append(address)
        elif _vfio_safe(device.driver):
            found.idle.append(device.summary())
        else:
            found.blocking.append(device.summary())
    return found


@check("iommu.group_isolated", REQUIRED, "the named device's IOMMU group can be assigned as named")
def group_isolated(facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec]) -> CheckResult:
    check_id = f"{group_isolated.id}[{spec.key}]"
    if not spec.is_pci:
        return result(check_id, Outcome.SKIPPED,
                      "not applicable: USB devices are passed through by QEMU's USB host redirection, not VFIO: no IOMMU "
                      "group is involved",
                      skip_reason=NOT_APPLICABLE)
    if facts.pci is None:
        return not_collected(check_id, "/sys/bus/pci/devices")
    device = facts.pci_device(spec.key)
    if device is None:
        # The PCI list was collected and does not hold it: device.present fails; there is no group to judge.
        return result(check_id, Outcome.SKIPPED, f"not applicable: {spec.key} is not on this host (see device.present)",
                      skip_reason=NOT_APPLICABLE)
    if facts.iommu_groups is None:  # the device's own iommu_group link does not say who else is in its group
        return not_collected(check_id, "/sys/kernel/iommu_groups")
    if device.iommu_group is None:
        why, fix, cause = _why_off(facts)
        noiommu = next((n for n, members in facts.noiommu_groups.items() if spec.key in members), None)
        where = ([f"/sys/bus/pci/devices/{spec.key}/iommu_group absent"] if noiommu is None else
                 [f"/sys/bus/pci/devices/{spec.key}/iommu_group -> {noiommu}, VFIO's no-IOMMU group "
                  f"(/dev/vfio/noiommu-{noiommu}): no IOMMU isolates it"])
        return result(check_id, Outcome.FAILED, f"{spec.key} is in no IOMMU group: {why}", where, fix, cause or [enabled.id])
    group = device.iommu_group
    if (facts.iommu_groups or {}).get(group) and group not in facts.groups_an_iommu_made():
        return not_collected(check_id, _may_be_noiommu([group]))
    members = (facts.iommu_groups or {}).get(group)
    if members is None or spec.key not in members:  # the device names its group; who else is in it was not collected
        return not_collected(check_id, f"/sys/kernel/iommu_groups/{group}/devices (the members of {spec.key}'s group)")
    members = group_members(facts, group)
    named_pci = {s.key for s in named if s.is_pci}
    others = _group_members(facts, members, named_pci)
    blocking, idle = others.blocking, others.idle
    evidence = [f"group {group}: " + ", ".join(members)]
    for address in members:
        member = facts.pci_device(address)
        if member is not None:
            evidence.append(("  * " if address in named_pci else "    ") + member.summary()
                            + (" [bridge: does not count]" if member.is_bridge else ""))
        elif normalize_pci_address(address) != address:
            evidence.append(f"    {address} {NOT_PCI}: VFIO cannot assign it")
    acs = [p.raw for p in facts.kernel_params.value or [] if p.name == "pcie_acs_override"]
    if acs:
        evidence.append(f"kernel command line has {acs[0]}: the groups shown are not real isolation")
    if blocking:
        foreign = [b.split()[0] for b in blocking if NOT_PCI in b]
        fix = (
            (f"VFIO assigns PCI devices only, so {', '.join(foreign)} keeps this group from a VM: move"
             if foreign else
             f"Assign the whole group: add --device for {', '.join(b.split()[0] for b in blocking)} "
             "(and give them all to the same VM), or move")
            + " the card to a slot whose root port isolates it "
            "(a CPU-attached slot, or a platform with ACS). pcie_acs_override is not a fix: it hides the "
            "shared DMA path without closing it."
        )
        return result(check_id, Outcome.FAILED,
                      f"group {group} is not viable for {spec.key}: it also holds {'; '.join(blocking)}",
                      evidence, fix)
    message = f"{spec.key} is alone in group {group}" if not idle and len([m for m in members if m in named_pci]) == 1 \
        else f"group {group} is viable with the devices named"
    if idle:
        message += f"; also in the group, unbound from host drivers: {'; '.join(idle)} (keep them so while the VM runs)"
    if others.unknown:  # a required check that cannot tell is not judged: the host is incomplete, never certified
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: could not tell whether {', '.join(others.unknown)} {'is' if len(others.unknown) == 1 else 'are'} "
                      f"bound: {'its driver link was' if len(others.unknown) == 1 else 'their driver links were'} "
                      f"not collected (group {group} is viable only if unbound or on vfio-pci)",
                      evidence, "Re-collect the snapshot with `vfio-certify collect` (it reads every driver link), or "
                      f"check `ls -l /sys/bus/pci/devices/{others.unknown[0]}/driver` on the host.")
    if acs:
        return result(check_id, Outcome.WARNING, message + "; but pcie_acs_override makes this grouping untrustworthy",
                      evidence, "Remove pcie_acs_override from the kernel command line and judge the real groups.")
    return result(check_id, Outcome.PASSED, message, evidence)
