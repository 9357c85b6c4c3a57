"""arm64 hosts judged by the same check ids: whole and partial snapshots of the Altra and Kunpeng fixtures.

A partial snapshot is the whole one with a source taken away (a folder or a command not collected, a file
absent): what it no longer shows is skipped or a warning, never passed on nothing and never failed with a
fix the host may not need.
"""
import shutil
from pathlib import Path

import pytest

from vfio_certify.devices import parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.rules import cpu, firmware, iommu, kernel, kvm
from vfio_certify.rules.catalog import registered
from vfio_certify.snapshot.reader import Snapshot

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
ALTRA, KUNPENG, RK3588 = "ampere-altra-smmuv3", "kunpeng920-smmu-off", "rk3588-devicetree-no-pcie-iommu"


def facts_of(tmp_path, host, remove=(), edit=None):
    """The fixture host with `remove`d paths (relative to the snapshot) and files rewritten by `edit`."""
    dest = tmp_path / host
    shutil.copytree(HOSTS / host, dest, symlinks=True)
    for rel in remove:
        target = dest / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    for rel, text in (edit or {}).items():
        (dest / rel).write_text(text)
    return read_host_facts(Snapshot(dest))


def judge_all(facts, devices=()):
    """Every per-host check (and per-device ones for `devices`), by id -> result."""
    specs = [parse_device(d) for d in devices]
    out = {}
    for check in registered().values():
        if check.judge is None or check.id == "host.reachable":
            continue
        if check.id == "kernel.config":
            for option in kernel.CONFIG_OPTIONS:
                r = check(facts, option)
                out[r.id] = r
            continue
        params = check.judge.__code__.co_varnames[:check.judge.__code__.co_argcount]
        if params == ("facts",):
            r = check(facts)
            out[r.id] = r
        elif "spec" in params:
            for spec in specs:
                r = check(facts, spec, specs) if "named" in params else check(facts, spec)
                out[r.id] = r
    return out


def test_whole_altra_is_certified_by_the_arm64_reading(tmp_path):
    facts = facts_of(tmp_path, ALTRA)
    assert facts.arch == "arm64" and facts.iommu_vendor == "arm" and facts.cpu.virtualization == ""
    results = judge_all(facts, ["0005:01:00.1", "0005:02:00.0"])
    failed = {i: r.message for i, r in results.items() if r.outcome.value in ("failed", "error", "warning")}
    assert not failed
    assert results["firmware.iommu_table"].message == "firmware describes 4 SMMU(s) (ACPI IORT)"
    assert "smmu3.0x0000100002000000" in results["iommu.enabled"].message
    assert results["iommu.irq_remapping"].message.startswith("MSIs are isolated by the GIC ITS")
    assert any("ITS-MSI" in e for e in results["iommu.irq_remapping"].evidence)
    assert results["cpu.virtualization"].message == "the kernel runs at EL2: KVM is available (VHE mode)"
    for option in ("CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU", "CONFIG_IRQ_REMAP"):
        r = results[f"kernel.config[{option}]"]
        assert (r.outcome.value, r.message) == ("skipped", "not applicable: x86 only, and this host is arm64")
    assert results["kernel.config[CONFIG_ARM_SMMU_V3]"].outcome.value == "passed"


def test_kunpeng_smmu_off_in_firmware_fails_with_the_firmware_fix(tmp_path):
    results = judge_all(facts_of(tmp_path, KUNPENG), ["0000:14:00.0"])
    table = results["firmware.iommu_table"]
    assert table.outcome.value == "failed" and "IORT describes no SMMU" in table.message
    assert "mapped straight to the ITS: 0000, 0001, 0002, 0003" in table.evidence[0]
    assert table.remediation.startswith("Enable the SMMU in the firmware setup")
    for check_id in ("iommu.enabled", "iommu.groups", "iommu.group_isolated[0000:14:00.0]"):
        assert results[check_id].outcome.value == "failed"
        assert "IORT describes no SMMU" in results[check_id].message
        assert "intel_iommu" not in results[check_id].remediation  # never the x86 fix
    cmdline = results["kernel.cmdline"]
    assert cmdline.outcome.value == "passed"  # iommu.passthrough=1 is not the problem, and is said to enable nothing
    assert any("iommu.passthrough=1" in e and "enables nothing" in e for e in cmdline.evidence)
    assert results["iommu.irq_remapping"].outcome.value == "passed"  # the ITS is there; the SMMU is what is missing


def test_smmu_driver_missing_from_the_kernel_is_a_kernel_fix(tmp_path):
    config = (HOSTS / KUNPENG / "root/boot/config-6.2.16-3-pve").read_text()
    iort_with_smmu = (HOSTS / ALTRA / "root/sys/firmware/acpi/tables/IORT").read_bytes()
    dest = tmp_path / "k"
    shutil.copytree(HOSTS / KUNPENG, dest, symlinks=True)
    (dest / "root/boot/config-6.2.16-3-pve").write_text(
        config.replace("CONFIG_ARM_SMMU_V3=y", "# CONFIG_ARM_SMMU_V3 is not set"))
    (dest / "root/sys/firmware/acpi/tables/IORT").write_bytes(iort_with_smmu)
    results = judge_all(read_host_facts(Snapshot(dest)))
    assert results["firmware.iommu_table"].outcome.value == "passed"
    assert results["kernel.config[CONFIG_ARM_SMMU_V3]"].outcome.value == "failed"
    enabled = results["iommu.enabled"]
    assert "no SMMUv3 driver" in enabled.message and "CONFIG_ARM_SMMU_V3=y" in enabled.remediation


@pytest.mark.parametrize("removed, check_id, outcome, says", [
    # the IORT not read: the kernel probed SMMUs all the same
    (["root/sys/firmware/acpi/tables/IORT"], "firmware.iommu_table", "passed", "the kernel probed it"),
    # no IORT bytes, no unit and no dmesg: nothing shows whether the table describes an SMMU
    (["root/sys/firmware/acpi/tables", "root/sys/class/iommu", "commands/dmesg"], "firmware.iommu_table",
     "skipped", "not collected"),
    # sysfs units not collected: dmesg's probe and group lines are proof
    (["root/sys/class/iommu", "root/sys/kernel/iommu_groups"], "iommu.enabled", "passed", "judged from dmesg"),
    (["root/sys/class/iommu", "root/sys/kernel/iommu_groups", "commands/dmesg"], "iommu.enabled", "skipped",
     "not collected"),
    # /proc/interrupts not collected: the ITS probed in dmesg still shows isolation
    (["root/proc/interrupts"], "iommu.irq_remapping", "passed", "judged from dmesg"),
    (["root/proc/interrupts", "commands/dmesg"], "iommu.irq_remapping", "skipped", "not collected"),
    # no dmesg: /dev/kvm exists only if KVM initialised at EL2
    (["commands/dmesg"], "cpu.virtualization", "passed", "runs at EL2"),
    (["commands/dmesg", "root/dev"], "cpu.virtualization", "skipped", "not collected"),
    # no uname -m: /proc/cpuinfo's own keys still say arm64
    (["commands/uname_-m"], "kernel.config[CONFIG_INTEL_IOMMU]", "skipped", "this host is arm64"),
])
def test_partial_altra(tmp_path, removed, check_id, outcome, says):
    results = judge_all(facts_of(tmp_path, ALTRA, removed))
    r = results[check_id]
    assert (r.outcome.value, says in r.message) == (outcome, True), (r.outcome, r.message)


def test_iort_present_but_unread_and_nothing_probed_is_not_judged(tmp_path):
    """An IORT on every GICv3-ITS system: its mere existence (an older collector's empty mark) proves no SMMU, and
    a required check that cannot tell is not judged (the host is incomplete), never a warning that certifies."""
    facts = facts_of(tmp_path, KUNPENG, edit={"root/sys/firmware/acpi/tables/IORT": ""})
    r = firmware.iommu_table(facts)
    assert r.outcome.value == "skipped" and r.skip_reason.value == "not-collected"
    assert "whether it describes an SMMU is unknown" in r.message and "not collected" in r.message


def test_no_msi_in_use_and_no_its_line_is_a_warning(tmp_path):
    wired = "           CPU0\n 12:  91842  GICv3  27 Level  arch_timer\nIPI0:  4121  Rescheduling interrupts\n"
    dmesg = "".join(line for line in (HOSTS / ALTRA / "commands/dmesg").read_text().splitlines(True) if "ITS" not in line)
    facts = facts_of(tmp_path, ALTRA, edit={"root/proc/interrupts": wired, "commands/dmesg": dmesg})
    r = iommu.irq_remapping(facts)
    assert r.outcome.value == "warning" and "could not tell" in r.message


def test_gicv2m_msis_are_not_isolated(tmp_path):
    v2m = "           CPU0\n 40:  12  MSI 524288 Edge  eth0\n"
    dmesg = "".join(line for line in (HOSTS / ALTRA / "commands/dmesg").read_text().splitlines(True) if "ITS" not in line)
    r = iommu.irq_remapping(facts_of(tmp_path, ALTRA, edit={"root/proc/interrupts": v2m, "commands/dmesg": dmesg}))
    assert r.outcome.value == "failed" and "not isolated" in r.message and "GICv2m" in r.remediation


def test_hyp_mode_not_available_fails_el2(tmp_path):
    dmesg = (HOSTS / ALTRA / "commands/dmesg").read_text().replace(
        "kvm [1]: VHE mode initialized successfully", "kvm [1]: HYP mode not available")
    facts = facts_of(tmp_path, ALTRA, remove=["root/dev/kvm"], edit={"commands/dmesg": dmesg})
    r = cpu.virtualization(facts)
    assert r.outcome.value == "failed" and "not entered at EL2" in r.message and "EL2" in r.remediation
    assert "kvm_intel" not in kvm.device(facts).remediation


def test_x86_parameters_and_disable_bypass_on_arm64(tmp_path):
    cmdline = "BOOT_IMAGE=/boot/vmlinuz ro intel_iommu=on iommu=pt arm-smmu-v3.disable_bypass=0\n"
    r = kernel.cmdline(facts_of(tmp_path, ALTRA, edit={"root/proc/cmdline": cmdline}))
    assert r.outcome.value == "warning"
    assert "intel_iommu=on iommu=pt: x86 parameter(s), unknown to an arm64 kernel" in r.message
    assert "arm-smmu-v3.disable_bypass=0: DMA from devices no driver has attached" in r.message
    assert "intel_iommu=on" in r.remediation and "update-grub" in r.remediation  # removed, Ubuntu's way


def test_a_good_arm64_host_missing_any_one_source_never_fails(tmp_path):
    """Take away one collected folder or command at a time: nothing the snapshot no longer shows is failed."""
    base = HOSTS / ALTRA
    sources = [p.relative_to(base) for p in (base / "commands").iterdir()]
    sources += [p.relative_to(base) for p in (base / "root").rglob("*")
                if p.is_dir() and not p.is_symlink() and len(p.relative_to(base / "root").parts) <= 3]
    for n, rel in enumerate(sorted(set(sources))):
        results = judge_all(facts_of(tmp_path / str(n), ALTRA, [str(rel)]), ["0005:01:00.1"])
        failed = {i: r.message for i, r in results.items() if r.outcome.value in ("failed", "error")}
        assert not failed, (str(rel), failed)


def test_device_tree_board_without_iommu_map_cannot_assign_pci(tmp_path):
    facts = facts_of(tmp_path, RK3588)
    assert facts.devicetree.present and facts.devicetree.model == "FriendlyElec NanoPC-T6"
    assert facts.devicetree.iommus["iommu@fdb50800"] == "rockchip,iommu-v2" and not facts.devicetree.pcie_iommu_maps
    results = judge_all(facts, ["0004:41:00.0"])
    table = results["firmware.iommu_table"]
    assert table.outcome.value == "failed" and "no PCIe controller with an iommu-map" in table.message
    enabled = results["iommu.enabled"]
    assert enabled.outcome.value == "failed" and enabled.message.startswith("IOMMUs run for platform devices only")
    assert results["iommu.groups"].outcome.value == "passed"  # groups exist: of the SoC's own blocks
    assert "no iommu-map" in results["iommu.group_isolated[0004:41:00.0]"].message
    cmdline = results["kernel.cmdline"]
    assert cmdline.outcome.value == "warning" and cmdline.message.startswith("iommu=on: x86 parameter(s)")


def test_device_tree_with_iommu_map_passes_the_table(tmp_path):
    dest = tmp_path / "dt"
    shutil.copytree(HOSTS / RK3588, dest, symlinks=True)
    (dest / "root/sys/firmware/devicetree/base/pcie@fe150000/iommu-map").write_bytes(b"")
    r = firmware.iommu_table(read_host_facts(Snapshot(dest)))
    assert r.outcome.value == "passed" and "iommu-map in pcie@fe150000" in r.message


def test_device_tree_not_collected_is_not_judged_as_absent(tmp_path):
    facts = facts_of(tmp_path, RK3588, ["root/sys/firmware/devicetree"])
    assert facts.devicetree is None
    r = firmware.iommu_table(facts)
    assert r.outcome.value == "skipped" and "device tree" in r.message and "not collected" in r.message


def test_architecture_from_what_is_left(tmp_path):
    """Without uname -m, cpuinfo and the config, the SMMU units and ITS chips still say arm64."""
    bare = facts_of(tmp_path, ALTRA, ["commands/uname_-m", "root/proc/cpuinfo", "root/boot"])
    assert bare.arch == "arm64" and iommu.irq_remapping(bare).message.startswith("MSIs are isolated by the GIC ITS")
    x86 = facts_of(tmp_path / "x", "rocky9-after-intel-iommu", ["root/proc/cpuinfo", "root/boot"])
    assert x86.arch == "x86"


def test_iommu_passthrough_is_a_note_on_every_architecture(tmp_path):
    cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=on iommu.passthrough=1 iommu.strict=0\n"
    r = kernel.cmdline(facts_of(tmp_path, "rocky9-after-intel-iommu", edit={"root/proc/cmdline": cmdline}))
    # only the boot configuration's difference is a finding (grubby's entry lacks the two): nothing to remove
    assert r.outcome.value == "warning" and r.message.startswith("reboot pending: grubby --info=DEFAULT no longer has")
    notes = [e for e in r.evidence if e.startswith("note: ")]
    assert any("iommu.passthrough=1: host-owned devices bypass translation" in n for n in notes)
    assert any("iommu.strict=0: lazy IOTLB invalidation" in n for n in notes)
