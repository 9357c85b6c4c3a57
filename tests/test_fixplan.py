"""Root causes (caused_by, as the rules judge them) and the one fix plan per host."""
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from support.hosts import intel_host
from support.summary_spec import assert_valid_summary

from vfio_certify.devices import parse_devices
from vfio_certify.facts.cpuinfo import CpuInfo
from vfio_certify.model import BootSetup, CheckResult, FixAction, HostOverview, HostResult, Outcome, Severity
from vfio_certify.report.fixplan import fix_plan, plan_summary, root_causes
from vfio_certify.rules import cpu, firmware, iommu, kernel, kvm
from vfio_certify.rules.catalog import result

REPO = Path(__file__).resolve().parent.parent
REQUIRED, RECOMMENDED = Severity.REQUIRED, Severity.RECOMMENDED


def _check(check_id, outcome=Outcome.FAILED, severity=REQUIRED, caused_by=(), fix=None, remediation="do it"):
    return CheckResult(check_id, outcome, severity, f"{check_id} is wrong", remediation=remediation,
                       caused_by=list(caused_by), fix=fix)


def _host(*checks, family="rhel"):
    return HostResult("kvm1", "ssh", list(checks), HostOverview(boot=BootSetup(family, "/etc/default/grub", "")))


def test_rules_name_the_check_they_follow_from():
    # no dmesg: its "DMAR: IOMMU enabled" would say the kernel read intel_iommu=on (a built-in command line)
    no_flag = intel_host(cmdline="BOOT_IMAGE=/vmlinuz ro", iommu_units=[], iommu_groups={}, dmesg=None)
    no_flag = dataclasses.replace(no_flag, pci={a: dataclasses.replace(d, iommu_group=None) for a, d in no_flag.pci.items()})
    assert kernel.cmdline(no_flag).outcome is Outcome.FAILED and not kernel.cmdline(no_flag).caused_by
    assert iommu.enabled(no_flag).caused_by == ["kernel.cmdline"]
    assert iommu.groups(no_flag).caused_by == ["kernel.cmdline"]
    spec = parse_devices(["07:00.1"])
    assert iommu.group_isolated(no_flag, spec[0], spec).caused_by == ["kernel.cmdline"]
    # the firmware publishes no table: the firmware check is the root, whatever the command line says
    no_table = dataclasses.replace(no_flag, acpi_tables={"DMAR": False, "IVRS": False}, dmesg=None, interrupts=None)
    assert iommu.enabled(no_table).caused_by == ["firmware.iommu_table"]
    assert iommu.enabled(no_table).fix.kind == "firmware"
    # no VT-x: /dev/kvm follows from it
    no_vmx = intel_host(cpu=dataclasses.replace(intel_host().cpu, flags=frozenset({"ept"})),
                        kvm_device=intel_host().kvm_device.__class__.ABSENT)
    assert kvm.device(no_vmx).caused_by == ["cpu.virtualization"]
    assert cpu.virtualization(no_vmx).fix.kind == "firmware"
    # a passing check and a root cause name nothing; the fix as data is what the text says
    good = intel_host()
    assert not iommu.enabled(good).caused_by and iommu.enabled(good).fix is None
    assert iommu.enabled(no_flag).fix == FixAction("kernel-args", add=("intel_iommu=on",))
    assert "caused_by" not in kernel.cmdline(no_flag).to_summary()
    assert iommu.enabled(no_flag).to_summary()["caused_by"] == ["kernel.cmdline"]
    assert result("iommu.groups", Outcome.FAILED, "x", caused_by=["iommu.groups"]).caused_by == []  # never itself


def test_root_causes_fold_their_consequences_and_ignore_causes_that_did_not_fail():
    host = _host(
        _check("kernel.cmdline", severity=RECOMMENDED),
        _check("firmware.iommu_table", Outcome.PASSED),
        _check("iommu.enabled", caused_by=["kernel.cmdline"]),
        _check("iommu.groups", caused_by=["iommu.enabled"]),  # through a chain
        _check("iommu.irq_remapping", caused_by=["firmware.iommu_table"]),  # its cause passed: a root itself
    )
    roots = root_causes(host)
    assert [r.check.id for r in roots] == ["kernel.cmdline", "iommu.irq_remapping"]
    assert [c.id for c in roots[0].consequences] == ["iommu.enabled", "iommu.groups"]
    assert roots[1].consequences == []


def test_plan_orders_firmware_command_line_modules_words_reboot_and_merges_the_command_line():
    host = _host(
        _check("cpu.virtualization", fix=FixAction("firmware", text="Enable VT-x.")),
        _check("kvm.device", caused_by=["cpu.virtualization"], fix=FixAction("module", module="kvm_intel")),
        _check("kernel.cmdline", severity=RECOMMENDED, fix=FixAction("kernel-args", add=("intel_iommu=on",),
                                                                     remove=("pcie_acs_override=downstream",))),
        _check("firmware.iommu_table", fix=FixAction("firmware", text="Enable VT-d.")),
        _check("iommu.enabled", caused_by=["kernel.cmdline"], fix=FixAction("kernel-args", add=("intel_iommu=on",))),
        _check("iommu.irq_remapping", fix=FixAction("kernel-args", remove=("intremap=off",))),
        _check("vfio.module[vfio_pci]", fix=FixAction("module", module="vfio_pci")),
        _check("device.present[0000:07:00.1]", remediation="Name one of the host's devices."),
        _check("iommu.group_isolated[0000:07:00.1]", Outcome.WAIVED),
    )
    plan = fix_plan(host)
    assert [s.step.splitlines()[0] for s in plan] == [
        "Enable VT-x.",
        "On the command line of every installed kernel: add intel_iommu=on and remove pcie_acs_override=downstream intremap=off",
        "Load vfio_pci now and at every boot",
        "Name one of the host's devices.",
        "Reboot into the new kernel command line",
        "Run vfio-certify again, with the same options, to confirm",
    ]
    assert plan[0].step == "Enable VT-x.\nEnable VT-d." and plan[0].reboot  # one visit to the setup
    assert plan[0].fixes == ["cpu.virtualization", "kvm.device", "firmware.iommu_table"]
    assert plan[1].commands == ['grubby --update-kernel=ALL --args="intel_iommu=on" '
                                '--remove-args="pcie_acs_override=downstream intremap=off"']
    assert plan[1].fixes == ["kernel.cmdline", "iommu.enabled", "iommu.irq_remapping"] and not plan[1].reboot
    assert plan[2].commands == ["modprobe vfio-pci", "echo vfio-pci > /etc/modules-load.d/vfio-pci.conf"]
    assert plan[4].commands == ["reboot"] and plan[4].reboot
    assert not any("iommu.group_isolated[0000:07:00.1]" in s.fixes for s in plan)  # waived: not in the plan
    assert plan_summary(plan) == "6 steps, 2 reboots"


def test_one_command_line_change_per_distro():
    args = FixAction("kernel-args", add=("intel_iommu=on",))
    for family, step, commands in (
        ("debian", "Add intel_iommu=on in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then:", ["update-grub"]),
        ("proxmox", "Add intel_iommu=on in /etc/kernel/cmdline (systemd-boot) or GRUB_CMDLINE_LINUX_DEFAULT in "
                    "/etc/default/grub (GRUB), then:", ["proxmox-boot-tool refresh"]),
        ("suse", "Add intel_iommu=on in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then:",
         ["grub2-mkconfig -o /boot/grub2/grub.cfg"]),
        ("", "Add intel_iommu=on on the kernel command line in the boot loader's configuration, then:", []),
    ):
        plan = fix_plan(_host(_check("iommu.enabled", fix=args), family=family))
        assert (plan[0].step, plan[0].commands) == (step, commands), family
        assert [s.reboot for s in plan] == [False, True, False]


def test_a_certified_host_has_no_plan_and_words_only_fixes_are_said_once():
    assert fix_plan(_host(_check("kernel.cmdline", severity=RECOMMENDED))) == []  # blocks nothing
    same = "Re-collect the kernel config."
    plan = fix_plan(_host(_check("kernel.config[CONFIG_VFIO]", remediation=same),
                          _check("kernel.config[CONFIG_VFIO_PCI]", remediation=same)))
    assert [s.step for s in plan][:1] == [same] and len(plan) == 2
    assert plan[0].fixes == ["kernel.config[CONFIG_VFIO]", "kernel.config[CONFIG_VFIO_PCI]"]


def test_rocky_before_intel_iommu_gets_one_grubby_command_in_summary_and_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot",
                           "fixtures/hosts/rocky9-before-intel-iommu", "--device", "0000:07:00.1",
                           "--output", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_valid_summary(summary)
    host = summary["hosts"][0]
    assert [s["commands"] for s in host["fix_plan"]] == [['grubby --update-kernel=ALL --args="intel_iommu=on"'],
                                                         ["reboot"], []]
    assert host["fix_plan"][0]["fixes"] == ["kernel.cmdline", "iommu.enabled", "iommu.group_isolated[0000:07:00.1]",
                                            "iommu.groups"]
    checks = {c["id"]: c for c in host["checks"]}
    assert checks["iommu.groups"]["caused_by"] == ["kernel.cmdline"] and "caused_by" not in checks["kernel.cmdline"]
    assert "fix plan (3 steps, 1 reboot):" in proc.stdout
    assert '$ grubby --update-kernel=ALL --args="intel_iommu=on"' in proc.stdout


def _without_vfio(host_dir: Path) -> None:
    """The seed's Rocky 9 capture as if its kernel were built without VFIO: CONFIG_VFIO off (its children then absent
    from the file, as kconfig writes it) and no vfio module anywhere, loaded or installed."""
    for config in (host_dir / "root/boot").glob("config-*"):
        lines = config.read_text().splitlines(keepends=True)
        config.write_text("".join("# CONFIG_VFIO is not set\n" if line.startswith("CONFIG_VFIO=") else line
                                  for line in lines if not line.startswith("CONFIG_VFIO_")))
    for listing in [host_dir / "root/proc/modules", *(host_dir / "root/lib/modules").glob("*/modules.*")]:
        listing.write_text("".join(line for line in listing.read_text().splitlines(keepends=True) if "vfio" not in line))


def test_missing_kernel_options_are_one_kernel_to_install_booted_with_the_command_line_change(tmp_path):
    host_dir = tmp_path / "rocky9-without-vfio"
    shutil.copytree(REPO / "fixtures/hosts/rocky9-before-intel-iommu", host_dir, symlinks=True)
    _without_vfio(host_dir)
    subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot", str(host_dir), "--output",
                    str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert_valid_summary(summary)
    plan = summary["hosts"][0]["fix_plan"]
    assert [s["step"] for s in plan] == [
        "Install a kernel built with CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1 and CONFIG_VFIO_PCI, each =y or =m "
        "(a distribution's standard kernel has them), as the default boot entry",
        "Add intel_iommu=on to the command line of every installed kernel",  # after the kernel: ALL includes it
        "Reboot into the new kernel and its command line",
        "Run vfio-certify again, with the same options, to confirm",
    ]
    assert [s["reboot"] for s in plan] == [False, False, True, False]
    assert set(plan[0]["fixes"]) == {f"kernel.config[{o}]" for o in ("CONFIG_VFIO", "CONFIG_VFIO_IOMMU_TYPE1",
                                                                     "CONFIG_VFIO_PCI")} | {
        f"vfio.module[{m}]" for m in ("vfio", "vfio_iommu_type1", "vfio_pci")}
    checks = {c["id"]: c for c in summary["hosts"][0]["checks"]}
    assert checks["vfio.module[vfio_pci]"]["caused_by"] == ["kernel.config[CONFIG_VFIO_PCI]"]
    # each check still says its own part, word for word as before the plan merged them
    assert checks["kernel.config[CONFIG_VFIO_PCI]"]["remediation"] == (
        "Boot a kernel built with CONFIG_VFIO=y or =m and CONFIG_VFIO_PCI=y or =m "
        "(your distribution's standard kernel has them).")


def test_plan_merges_kernel_options_and_reboots_once_into_the_new_kernel():
    host = _host(
        _check("kernel.config[CONFIG_VFIO]", fix=FixAction("kernel-config", options=("CONFIG_VFIO",))),
        _check("kernel.config[CONFIG_VFIO_PCI]", fix=FixAction("kernel-config", options=("CONFIG_VFIO", "CONFIG_VFIO_PCI"))),
        _check("vfio.module[vfio_pci]", caused_by=["kernel.config[CONFIG_VFIO_PCI]"],
               fix=FixAction("kernel-config", options=("CONFIG_VFIO_PCI",))),
    )
    plan = fix_plan(host)
    assert [s.step for s in plan] == [
        "Install a kernel built with CONFIG_VFIO and CONFIG_VFIO_PCI, each =y or =m (a distribution's standard kernel "
        "has them), as the default boot entry",
        "Reboot into the new kernel",
        "Run vfio-certify again, with the same options, to confirm",
    ]
    assert plan[0].fixes == ["kernel.config[CONFIG_VFIO]", "kernel.config[CONFIG_VFIO_PCI]", "vfio.module[vfio_pci]"]
    assert plan_summary(plan) == "3 steps, 1 reboot"
    # the action travels from a worker to the report as data, options included
    action = FixAction("kernel-config", options=("CONFIG_VFIO",))
    assert FixAction.from_dict(json.loads(json.dumps(action.to_dict()))) == action


def test_a_virtual_machine_without_an_iommu_is_told_of_its_hypervisor_not_of_a_firmware_setup():
    vm = intel_host(cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"svm", "hypervisor"}), 2),
                    acpi_tables={"DMAR": False, "IVRS": False}, iommu_units=[], iommu_groups={}, dmesg=None)
    fix = firmware.iommu_table(vm)
    assert fix.outcome is Outcome.FAILED and fix.fix.kind == "firmware"
    assert "virtual IOMMU" in fix.remediation and "intel-iommu" in fix.remediation
    assert "firmware setup" not in fix.remediation and "AMD CBS" not in fix.remediation
    bare = dataclasses.replace(vm, cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"svm"}), 2))
    assert "AMD CBS" in firmware.iommu_table(bare).remediation
    assert "virtual machine" not in firmware.iommu_table(bare).remediation
    # no AMD-V passed through either: both are the outer host's settings for this VM, one step, one power cycle
    no_svm = dataclasses.replace(vm, cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"hypervisor"}), 2))
    plan = fix_plan(_host(cpu.virtualization(no_svm), firmware.iommu_table(no_svm)))
    assert plan[0].step.startswith("This host is a virtual machine whose hypervisor does not pass hardware virtualization")
    assert "virtual IOMMU" in plan[0].step and "firmware setup" not in plan[0].step and plan[0].reboot
    assert plan[0].fixes == ["cpu.virtualization", "firmware.iommu_table"] and len(plan) == 2
