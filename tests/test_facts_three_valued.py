"""Known, known absent, not collected: each class of issue 8 judged on whole and on partial real captures,
Intel and AMD. A partial snapshot is a copy of a fixture host (fixtures/hosts, built from public reports)
with files removed, cut or replaced, read through the same readers as a live host."""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from vfio_certify.devices import parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.kconfig import parse_kernel_config
from vfio_certify.model import Outcome
from vfio_certify.rules import firmware, iommu, kernel
from vfio_certify.snapshot.reader import PathState, Snapshot
from support.hosts import intel_host, pci

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / "fixtures" / "hosts"
CAPTURES = ROOT / "fixtures" / "captures"


def capture(name: str) -> str:
    """A capture without its provenance line."""
    text = (CAPTURES / name).read_text(encoding="utf-8")
    return text.split("\n", 1)[1] if text.startswith("# SOURCE") else text


def host(tmp_path, name, remove=(), files=None, hand_made=False):
    """The facts of fixture host `name`, with `remove`d paths gone, `files` replaced, and (`hand_made`)
    without meta.json's absence convention: then nothing missing is known absent."""
    dest = tmp_path / name
    if not dest.exists():
        shutil.copytree(HOSTS / name, dest, symlinks=True)
    for rel in remove:
        path = dest / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for rel, data in (files or {}).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    if hand_made:
        meta = json.loads((dest / "meta.json").read_text())
        meta.pop("absence", None)
        (dest / "meta.json").write_text(json.dumps(meta))
    return read_host_facts(Snapshot(dest))


def isolated(facts, *devices):
    specs = [parse_device(d) for d in devices]
    return iommu.group_isolated(facts, specs[0], specs)


# -- 1. a group member whose driver was not collected ---------------------------------------------------------

@pytest.mark.parametrize("name, named, other, driver", [
    ("ryzen-vfio-bound-gpu", ["0000:2a:00.0", "0000:2a:00.1"], "0000:2a:00.3", "xhci_hcd"),  # AMD Matisse USB
    ("rocky9-after-intel-iommu", ["0000:02:00.0"], "0000:02:00.1", "snd_hda_intel"),  # Intel: GPU + HDMI audio
])
def test_a_member_whose_driver_was_not_collected_is_not_judged_never_passed(tmp_path, name, named, other, driver):
    whole = host(tmp_path, name)
    r = isolated(whole, *named)
    assert r.outcome is Outcome.FAILED and f"{other}" in r.message and f"driver {driver}" in r.message
    # A hand-made snapshot without the driver link and without lspci: the driver is not known, not "none".
    partial = host(tmp_path, name, remove=[f"root/sys/bus/pci/devices/{other}/driver", "commands/lspci_-nnk"],
                   hand_made=True)
    assert partial.pci_device(other).bound.unknown
    r = isolated(partial, *named)  # not judged (the host is incomplete): a warning would certify it
    assert r.outcome is Outcome.SKIPPED and r.to_summary()["skip_reason"] == "not-collected"
    assert f"could not tell whether {other} is bound: its driver link was not collected" in r.message
    assert any("driver not collected" in e for e in r.evidence)


def test_the_driver_link_missing_under_the_absence_convention_is_known_unbound(tmp_path):
    """The collector's own snapshot: a missing link in a collected device folder is "no driver"; lspci -nnk
    listing the function without "Kernel driver in use" says the same for a hand-made one."""
    facts = host(tmp_path, "ryzen-vfio-bound-gpu")  # 0000:2a:00.0 has no driver link in its collected folder
    bound = facts.pci_device("0000:2a:00.0").bound
    assert bound.absent_on_host and bound.source == "/sys/bus/pci/devices/0000:2a:00.0/driver"
    hand_made = host(tmp_path, "ryzen-vfio-bound-gpu", hand_made=True)
    device = hand_made.pci_device("0000:2a:00.0")
    assert device.bound.absent_on_host and device.bound.source.startswith("lspci -nnk")
    assert hand_made.pci_device("0000:2a:00.3").bound.value == "xhci_hcd"


def test_a_pf_whose_vf_is_in_the_group_is_bound_by_definition():
    """A VF exists only while its PF's driver is bound: a PF with an uncollected driver link still blocks."""
    pf = pci("0000:18:00.0", "8086:1572", "020000", "", 60)
    pf.driver_state = PathState.NOT_COLLECTED
    vf = pci("0000:18:02.0", "8086:154c", "020000", "", 60)
    vf.physfn = "0000:18:00.0"
    facts = intel_host(pci={pf.address: pf, vf.address: vf}, iommu_groups={60: [pf.address, vf.address]})
    r = isolated(facts, "0000:18:02.0")
    assert r.outcome is Outcome.FAILED and "0000:18:00.0" in r.message and "yet bound: it has VFs (0000:18:02.0)" in r.message


def test_a_group_whose_member_list_was_not_collected_is_not_judged(tmp_path):
    """The device's own iommu_group link names group 48; who else is in it was not collected: not "alone"."""
    facts = host(tmp_path, "rocky9-after-intel-iommu", remove=["root/sys/kernel/iommu_groups/48/devices"])
    r = isolated(facts, "0000:07:00.1")
    assert r.outcome is Outcome.SKIPPED and "/sys/kernel/iommu_groups/48/devices" in r.message
    assert 48 in facts.iommu_groups_unread and iommu.groups(facts).outcome is Outcome.PASSED


# -- 2. iommu.enabled on populated groups when /sys/class/iommu was not collected -----------------------------

@pytest.mark.parametrize("name", ["rocky9-after-intel-iommu", "amd-epyc-default-on"])
def test_populated_groups_prove_the_iommu_without_sys_class_iommu(tmp_path, name):
    whole = iommu.enabled(host(tmp_path, name))
    assert whole.outcome is Outcome.PASSED
    facts = host(tmp_path, name, remove=["root/sys/class/iommu", "commands/dmesg"])
    r = iommu.enabled(facts)
    assert r.outcome is Outcome.PASSED and "IOMMU groups in /sys/kernel/iommu_groups" in r.message
    assert "/sys/class/iommu was not collected" in r.message and "groups were" not in r.message
    assert iommu.groups(facts).outcome is Outcome.PASSED


def test_without_either_sysfs_folder_the_message_names_what_was_missing(tmp_path):
    facts = host(tmp_path, "rocky9-after-intel-iommu", remove=["root/sys/class/iommu", "root/sys/kernel/iommu_groups"])
    r = iommu.enabled(facts)  # the fixture's dmesg shows VT-d initialised and groups added
    assert r.outcome is Outcome.PASSED
    assert "judged from dmesg: /sys/class/iommu and /sys/kernel/iommu_groups not collected" in r.message


# -- 3. a dmesg fragment proves no absence ----------------------------------------------------------------------

def _fragments(dmesg: str) -> dict[str, str]:
    lines = dmesg.splitlines(keepends=True)
    return {
        "rotated": "".join(lines[-max(1, len(lines) // 10):]),  # a wrapped ring buffer keeps only its end
        "cut": "".join(lines[:8]),  # a log that ends before IOMMU init
    }


def test_dmesg_coverage_on_real_captures():
    assert parse_dmesg(capture("intel_platform_optin_no_intel_iommu_thinkpad_l13.txt")).not_covering() == ""
    grep = parse_dmesg(capture("rocky9_dmesg_before_intel_iommu.txt"))  # `dmesg | grep -i dmar`
    assert grep.not_covering().startswith("dmesg does not cover boot (starts at 0.01062 s")
    no_stamp = parse_dmesg(capture("intel_cmdline_iommu_pt_but_no_iommu_group.txt"))
    assert "no 'Linux version' line" in no_stamp.not_covering()
    whole = (HOSTS / "amd-epyc-default-on" / "commands" / "dmesg").read_text()
    assert parse_dmesg(whole).not_covering() == ""
    assert parse_dmesg(_fragments(whole)["cut"]).not_covering().startswith(
        "dmesg ends before IOMMU initialisation finished (last line at")
    assert parse_dmesg(_fragments(whole)["cut"]).not_covering(through_iommu_init=False) == ""


@pytest.mark.parametrize("name, remapping", [("rocky9-before-intel-iommu", Outcome.PASSED),  # IR runs without DMA remapping
                                             ("amd-g505s-no-ivrs", Outcome.FAILED)])
@pytest.mark.parametrize("fragment", ["rotated", "cut", "grep"])
def test_from_a_dmesg_fragment_no_absence_is_concluded(tmp_path, name, remapping, fragment):
    """Hosts whose IOMMU is off: with sysfs and /proc/interrupts gone, a whole dmesg fails iommu.enabled (and on
    the G505s iommu.irq_remapping); a fragment of it is 'not judged', and says how it falls short."""
    sysfs = ["root/sys/class/iommu", "root/sys/kernel/iommu_groups", "root/proc/interrupts"]
    whole = host(tmp_path, name, remove=sysfs)
    assert iommu.enabled(whole).outcome is Outcome.FAILED
    assert iommu.irq_remapping(whole).outcome is remapping
    text = (HOSTS / name / "commands" / "dmesg").read_text()
    part = {**_fragments(text), "grep": "".join(ln for ln in text.splitlines(True) if "iommu" in ln.lower())}[fragment]
    facts = host(tmp_path / "partial", name, remove=sysfs, files={"commands/dmesg": part})
    for rule in (iommu.enabled, iommu.irq_remapping):
        r = rule(facts)
        assert r.outcome is Outcome.SKIPPED and "not judged" in r.message and "dmesg" in r.message, r.message
        assert "lacks intel_iommu=on" not in r.message and not r.remediation
    if fragment == "rotated":
        assert "dmesg does not cover boot (starts at" in iommu.enabled(facts).message


def test_lacks_intel_iommu_on_is_never_said_when_the_command_line_was_not_collected(tmp_path):
    # Rocky 9 booted without intel_iommu=on (the seed article): whole, the reason is the missing flag.
    whole = host(tmp_path, "rocky9-before-intel-iommu")
    r = iommu.enabled(whole)
    assert r.outcome is Outcome.FAILED and "lacks intel_iommu=on" in r.message
    # /proc/cmdline gone and a dmesg without its Command line: nothing says what the command line holds.
    dmesg = "".join(ln for ln in (HOSTS / "rocky9-before-intel-iommu" / "commands" / "dmesg").read_text().splitlines(True)
                    if "ommand line" not in ln)
    facts = host(tmp_path / "partial", "rocky9-before-intel-iommu", remove=["root/proc/cmdline"],
                 files={"commands/dmesg": dmesg})
    assert facts.kernel_params.unknown
    r = iommu.enabled(facts)
    assert r.outcome is Outcome.FAILED and "lacks intel_iommu=on" not in r.message
    assert "intel_iommu=on" not in r.remediation
    assert kernel.cmdline(facts).outcome is Outcome.SKIPPED


# -- 4. every proof of the firmware table ------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, units, parsed", [
    ("proxmox-dmar-kernel-6.8", "DMAR", "dmar0, dmar1", "DMAR: DRHD base"),
    ("cezanne-nonviable-group", "IVRS", "ivhd0", "AMD-Vi: ivrs, add"),
])
def test_the_firmware_table_is_proven_by_every_source_strongest_first(tmp_path, name, kind, units, parsed):
    r = firmware.iommu_table(host(tmp_path, name))
    assert r.outcome is Outcome.PASSED and r.evidence[0] == f"/sys/firmware/acpi/tables/{kind} present"
    dmesg = "".join(ln for ln in (HOSTS / name / "commands" / "dmesg").read_text().splitlines(True)
                    if f"ACPI: {kind} 0x" not in ln)
    no_table = host(tmp_path / "a", name, remove=["root/sys/firmware/acpi/tables"], files={"commands/dmesg": dmesg})
    r = firmware.iommu_table(no_table)
    assert r.outcome is Outcome.PASSED and f"shown by /sys/class/iommu: {units}" in r.message
    no_units = host(tmp_path / "b", name, remove=["root/sys/firmware/acpi/tables", "root/sys/class/iommu"],
                    files={"commands/dmesg": dmesg})
    r = firmware.iommu_table(no_units)
    assert r.outcome is Outcome.PASSED and parsed in r.evidence[0] and parsed in r.message


def test_the_firmware_table_from_a_real_dmesg_without_the_acpi_line():
    text = "".join(ln for ln in capture("intel_platform_optin_no_intel_iommu_thinkpad_l13.txt").splitlines(True)
                   if "ACPI: DMAR" not in ln)
    for keep in ("DMAR: DRHD base", "DMAR: Host address width", "force enabled due to platform opt in"):
        only = "".join(ln for ln in text.splitlines(True) if keep in ln or "Linux version" in ln or "Run /init" in ln)
        r = firmware.iommu_table(intel_host(acpi_tables=None, iommu_units=None, dmesg=parse_dmesg(only)))
        assert r.outcome is Outcome.PASSED and "Intel VT-d" in r.message and keep in r.evidence[0]


def test_no_table_fails_only_on_a_collected_tables_folder_or_a_dmesg_from_boot(tmp_path):
    whole = firmware.iommu_table(host(tmp_path, "amd-g505s-no-ivrs"))  # the BIOS publishes no IVRS
    assert whole.outcome is Outcome.FAILED
    rotated = _fragments((HOSTS / "amd-g505s-no-ivrs" / "commands" / "dmesg").read_text())["rotated"]
    facts = host(tmp_path / "p", "amd-g505s-no-ivrs", remove=["root/sys/firmware/acpi/tables"],
                 files={"commands/dmesg": rotated})
    r = firmware.iommu_table(facts)
    assert r.outcome is Outcome.SKIPPED and "dmesg does not cover boot (starts at" in r.message and not r.remediation


# -- 5. VT-d on without intel_iommu=on -------------------------------------------------------------------------

def test_platform_opt_in_is_vt_d_on_without_the_flag_on_a_real_boot_log():
    """ThinkPad L13 Gen 2, kernel 5.10 (VT-d off by default), no intel_iommu=on: the firmware opted in."""
    dmesg = parse_dmesg(capture("intel_platform_optin_no_intel_iommu_thinkpad_l13.txt"))
    facts = intel_host(cmdline=dmesg.command_line, release="5.10.22-un-def-alt1", kernel_config=None,
                       acpi_tables=None, iommu_units=None, iommu_groups=None, interrupts=None, dmesg=dmesg)
    r = kernel.cmdline(facts)
    assert r.outcome is Outcome.PASSED and "intel_iommu=on" not in r.remediation
    assert any("VT-d is on without intel_iommu=on on the command line" in e and "platform opt in" in e
               for e in r.evidence)
    r = iommu.enabled(facts)
    assert r.outcome is Outcome.PASSED and "judged from dmesg" in r.message
    assert iommu.irq_remapping(facts).outcome is Outcome.PASSED
    assert firmware.iommu_table(facts).evidence[0].endswith("ACPI: DMAR 0x000000008C11E000 0000C0 (v02 LENOVO TP-R1F   "
                                                            "00001030 PTEC 00000002)")


# -- 6. the kernel config ----------------------------------------------------------------------------------------

def test_a_real_6_18_proc_config_gz_is_whole(tmp_path):
    """This CI machine's kernel: '# end of Kernel hacking', a blank line, then CONFIG_IO_URING_ZCRX=y that a
    config fragment appended. Read as the reader reads /proc/config.gz."""
    text = capture("kernel_6.18_proc_config.txt")
    assert text.rstrip("\n").endswith("# end of Kernel hacking\n\nCONFIG_IO_URING_ZCRX=y")
    facts = host(tmp_path, "rocky9-after-intel-iommu", remove=["root/boot"],
                 files={"root/proc/config.gz": gzip.compress(text.encode())})
    config = facts.kernel_config
    assert config.source == "/proc/config.gz" and not config.truncated, config.truncated_why
    assert config.value("CONFIG_IO_URING_ZCRX") == "y" and config.value("CONFIG_IOMMU_SUPPORT") == "y"
    r = kernel.config_option(facts, "CONFIG_IOMMU_SUPPORT")
    assert r.outcome is Outcome.PASSED


def test_a_cut_6_18_config_is_still_known_cut():
    text = capture("kernel_6.18_proc_config.txt")
    lines = text.splitlines(keepends=True)
    for at in (len(lines) // 2, len(lines) - 4):  # at a line end: mid-file, and inside the last menu
        assert parse_kernel_config("".join(lines[:at])).truncated, at
    assert parse_kernel_config(text[:len(text) // 2]).truncated


def test_an_option_left_out_because_its_parent_is_not_set_says_so_with_the_parents_fix():
    """This machine's kernel has '# CONFIG_VFIO is not set', so CONFIG_VFIO_PCI is not in the file at all."""
    config = parse_kernel_config(capture("kernel_6.18_proc_config.txt"), "/proc/config.gz")
    assert config.value("CONFIG_VFIO") == "n" and config.value("CONFIG_VFIO_PCI") is None
    for option in ("CONFIG_VFIO_PCI", "CONFIG_VFIO_IOMMU_TYPE1"):
        r = kernel.config_option(intel_host(kernel_config=config), option)
        assert r.outcome is Outcome.FAILED
        assert f"{option} is absent because CONFIG_VFIO is not set" in r.message
        assert "CONFIG_VFIO=y or =m" in r.remediation and "Re-collect" not in r.remediation
        assert "# CONFIG_VFIO is not set   (/proc/config.gz)" in r.evidence
    # Cut at a line end inside the DMABUF menu, before CONFIG_VFIO: the parent is unseen, the cut is the cause.
    cut = parse_kernel_config(capture("kernel_6.18_proc_config.txt").split("# CONFIG_DMABUF_SYSFS_STATS")[0], "cut")
    r = kernel.config_option(intel_host(kernel_config=cut), "CONFIG_VFIO_PCI")
    assert r.outcome is Outcome.SKIPPED and "cut short" in r.message and "not collected" in r.message
