"""kernel.cmdline and the fixes judged the way the kernel parses: every occurrence, options by prefix."""
import pytest

from vfio_certify.facts.cmdline import parse_cmdline
from vfio_certify.facts import kernel_cmdline
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.osrelease import OsRelease
from vfio_certify.model import Outcome
from vfio_certify.rules import iommu, kernel
from vfio_certify.rules.remedy import iommu_cmdline_fix, kernel_args
from support.hosts import intel_host, whole_dmesg

IOMMU_OFF = dict(iommu_units=[], iommu_groups={}, dmesg=parse_dmesg(""))  # sysfs: the IOMMU is not running
AMD = dict(acpi_tables={"DMAR": False, "IVRS": True}, iommu_units=["ivhd0"], os=OsRelease("debian", (), "Debian GNU/Linux 12"))


def cmdline_result(text, **changes):
    return kernel.cmdline(intel_host(cmdline=text, **changes))


# -- intel_iommu= / amd_iommu=: every occurrence, the last on/off wins (AMD: off is for good) ---------------

def test_intel_iommu_later_occurrence_without_on_off_keeps_vtd_on():
    r = cmdline_result("ro intel_iommu=on intel_iommu=igfx_off", **IOMMU_OFF)
    assert r.outcome is Outcome.PASSED and "missing" not in r.message


def test_intel_iommu_off_then_other_option_stays_off():
    r = cmdline_result("ro intel_iommu=off intel_iommu=sm_on", release="6.8.0-40-generic")
    assert r.outcome is Outcome.FAILED and "intel_iommu=off disables VT-d" in r.message
    assert '--remove-args="intel_iommu=off"' in r.remediation


def test_intel_iommu_options_match_by_prefix():
    r = cmdline_result("ro intel_iommu=on1", **IOMMU_OFF)
    assert r.outcome is Outcome.WARNING and "missing" not in r.message and "on1 as on" in r.message


def test_every_intel_iommu_off_is_removed():
    r = cmdline_result("ro intel_iommu=off intel_iommu=on intel_iommu=sm_on,off")
    assert r.outcome is Outcome.FAILED
    assert '--remove-args="intel_iommu=off intel_iommu=sm_on,off"' in r.remediation
    assert "--args=" not in r.remediation  # intel_iommu=on stays after the removal


def test_amd_iommu_off_is_sticky():
    r = cmdline_result("ro amd_iommu=off amd_iommu=fullflush", **AMD)
    assert r.outcome is Outcome.FAILED and "amd_iommu=off disables AMD-Vi" in r.message
    assert "remove amd_iommu=off" in r.remediation.lower()


def test_why_off_reads_every_occurrence():
    facts = intel_host(cmdline="ro intel_iommu=off intel_iommu=sm_on", release="6.8.0-40-generic", **IOMMU_OFF)
    r = iommu.enabled(facts)
    assert "intel_iommu=off on the kernel command line" in r.message and "intel_iommu=off" in r.remediation
    r = iommu.enabled(intel_host(cmdline="ro intel_iommu=on1", **IOMMU_OFF))
    assert "lacks intel_iommu=on" not in r.message
    r = iommu.enabled(intel_host(cmdline="ro amd_iommu=off amd_iommu=fullflush", **{**AMD, **IOMMU_OFF}))
    assert "amd_iommu=off on the kernel command line" in r.message and "amd_iommu=off" in r.remediation
    r = iommu.enabled(intel_host(cmdline="ro intel_iommu=on iommu=pt,off", **IOMMU_OFF))
    assert "iommu=pt,off on the kernel command line" in r.message


# -- VT-d running without intel_iommu=on (platform opt-in) -------------------------------------------------

def test_vtd_running_without_the_flag_is_a_note_not_a_failure():
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro")  # 5.14 without DEFAULT_ON, yet dmar units and groups in sysfs
    assert r.outcome is Outcome.PASSED and not r.remediation
    assert any("VT-d is on without intel_iommu=on on the command line (sysfs: dmar0, dmar1" in e for e in r.evidence)


WHOLE_DMESG_WITHOUT_VTD = parse_dmesg(whole_dmesg("[    0.01] ACPI: DMAR 0x000000007AD1B560 0000DC (v01 ALASKA A M I)"))


@pytest.mark.parametrize("sysfs", [IOMMU_OFF, dict(iommu_units=None, iommu_groups=None, dmesg=WHOLE_DMESG_WITHOUT_VTD)])
def test_missing_flag_still_fails_when_vtd_is_not_seen_running(sysfs):
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", **sysfs)
    assert r.outcome is Outcome.FAILED and "intel_iommu=on is missing" in r.message


def test_missing_flag_is_a_warning_when_neither_sysfs_nor_a_whole_dmesg_tells():
    fragment = parse_dmesg("[  812.5] DMAR: DRHD base: 0x000000fed90000 flags: 0x0\n")  # a rotated ring buffer
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", iommu_units=None, iommu_groups=None, dmesg=fragment)
    assert r.outcome is Outcome.WARNING and "whether the firmware forces it on is not known" in r.message
    assert "dmesg does not cover boot (starts at 812.5 s" in r.message
    assert "intel_iommu=on" in r.remediation


@pytest.mark.parametrize("line, shown", [
    ("[    0.020000] DMAR: Intel-IOMMU force enabled due to platform opt in", "platform opt-in forces VT-d on"),
    ("[    0.024389] DMAR: IOMMU enabled", "the kernel read intel_iommu=on at boot"),
])
def test_vtd_on_without_the_flag_from_dmesg_is_said_and_not_asked_for(line, shown):
    """The firmware's platform opt-in (or intel_iommu=on read from a built-in command line) turns VT-d on
    with no intel_iommu=on on /proc/cmdline: kernel.cmdline must not ask for it, whatever sysfs shows."""
    for sysfs in (dict(iommu_units=None, iommu_groups=None), IOMMU_OFF):
        r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", **{**sysfs, "dmesg": parse_dmesg(line + "\n")})
        assert r.outcome is Outcome.PASSED and "intel_iommu=on" not in r.remediation
        assert any("VT-d is on without intel_iommu=on on the command line" in e and shown in e for e in r.evidence)
        r = iommu.enabled(intel_host(cmdline="BOOT_IMAGE=/vmlinuz ro", **{**sysfs, "dmesg": parse_dmesg(line + "\n")}))
        assert "lacks intel_iommu=on" not in r.message and "intel_iommu=on" not in r.remediation


# -- intremap= -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, disabled", [
    ("intremap=off,nopost", ["intremap=off,nopost"]),
    ("intremap", []),  # no value: -EINVAL, not off
    ("intremap=off intremap=on", []),
    ("nointremap intremap=on", []),
    ("intremap=on nointremap", ["nointremap"]),
])
def test_intremap_last_on_off_wins(args, disabled):
    params = parse_cmdline(f"ro intel_iommu=on {args}")
    assert kernel_cmdline.intremap_disabled_by(params) == disabled
    r = cmdline_result(f"ro intel_iommu=on {args}")
    assert (r.outcome is Outcome.FAILED) == bool(disabled)
    assert ("disables interrupt remapping" in r.message) == bool(disabled)


def test_intremap_fix_removes_comma_separated_off():
    fix = iommu_cmdline_fix(intel_host(cmdline="ro intel_iommu=on intremap=off,nopost"))
    assert '--remove-args="intremap=off,nopost"' in fix and "--args=" not in fix


# -- vfio_iommu_type1.allow_unsafe_interrupts= (kstrtobool) -------------------------------------------------

@pytest.mark.parametrize("value", ["=off", "=No", "=false", "=0", "=N"])
def test_allow_unsafe_interrupts_false_values_do_not_warn(value):
    r = cmdline_result(f"ro intel_iommu=on vfio_iommu_type1.allow_unsafe_interrupts{value}")
    assert r.outcome is Outcome.PASSED


@pytest.mark.parametrize("value", ["", "=1", "=Y", "=on", "=true"])
def test_allow_unsafe_interrupts_true_values_warn(value):
    r = cmdline_result(f"ro intel_iommu=on vfio_iommu_type1.allow_unsafe_interrupts{value}")
    assert r.outcome is Outcome.WARNING and "without interrupt remapping" in r.message


def test_allow_unsafe_interrupts_last_accepted_value_wins():
    assert kernel_cmdline.unsafe_interrupts_by(parse_cmdline("vfio_iommu_type1.allow_unsafe_interrupts=1 "
                                                     "vfio_iommu_type1.allow_unsafe_interrupts=off")) == ""
    r = cmdline_result("ro intel_iommu=on vfio_iommu_type1.allow_unsafe_interrupts=maybe")
    assert r.outcome is Outcome.WARNING and "not a boolean" in r.message


# -- iommu=: the x86 and GART options are known ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["nodac", "allowdac", "usedac", "forcesac", "fullflush", "nofullflush", "noagp",
                                   "noaperture", "allowed", "memaper=2", "64", "pt,nodac"])
def test_iommu_x86_and_gart_options_are_known(value):
    r = cmdline_result(f"ro intel_iommu=on iommu={value}")
    assert r.outcome is Outcome.PASSED, r.message


def test_iommu_setup_stops_reading_at_usedac():
    r = cmdline_result("ro intel_iommu=on iommu=usedac,off")
    assert r.outcome is Outcome.WARNING and "stops reading at usedac" in r.message


# -- RHEL-family remediation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version, expected", [
    ("9.4", "grub2-mkconfig -o /boot/grub2/grub.cfg --update-bls-cmdline"),
    ("9.1", "grub2-mkconfig -o /boot/grub2/grub.cfg (BIOS and UEFI"),
    ("8.9", "-o /boot/efi/EFI/rocky/grub.cfg (UEFI)"),
])
def test_rhel_grub2_mkconfig_follows_the_release(version, expected):
    facts = intel_host(os=OsRelease("rocky", ("rhel", "centos", "fedora"), "Rocky Linux", version))
    fix = kernel_args(facts, add=["intel_iommu=on"])
    assert fix.startswith('grubby --update-kernel=ALL --args="intel_iommu=on"')
    assert expected in fix
    if not version.startswith("8"):
        assert "/boot/efi" not in fix.replace("the grub.cfg in /boot/efi is a stub", "")


def test_fedora_and_rhel8_uefi_paths():
    fedora = kernel_args(intel_host(os=OsRelease("fedora", (), "Fedora Linux 40", "40")), add=["intel_iommu=on"])
    assert "-o /boot/grub2/grub.cfg --update-bls-cmdline" in fedora
    rhel8 = kernel_args(intel_host(os=OsRelease("rhel", ("fedora",), "RHEL 8.6", "8.6")), add=["intel_iommu=on"])
    assert "/boot/efi/EFI/redhat/grub.cfg" in rhel8


# -- layering: how the kernel reads its command line is a fact, judged by rules -------------------------------

def test_rules_import_facts_never_another_rules_internals():
    """A rule module imports facts/ and the shared catalog and remedies, never another rule module."""
    import ast
    from pathlib import Path

    import vfio_certify.rules

    shared = {"catalog", "remedy"}
    crossings = []
    for path in sorted(Path(vfio_certify.rules.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                modules = [node.module] if node.module else [a.name for a in node.names]
                crossings += [f"{path.name} imports .{m}" for m in modules if m.split(".")[0] not in shared]
    assert crossings == []


def test_the_kernels_reading_of_its_command_line_is_in_facts():
    from vfio_certify.facts import kernel_cmdline

    params = parse_cmdline("intel_iommu=on,igfx_off intel-iommu=off iommu=usedac,off intremap=off,on")
    assert kernel_cmdline.iommu_switch(params, "intel_iommu") == (False, ["intel-iommu=off"])
    assert kernel_cmdline.iommu_off_by(params) == []  # iommu_setup stops at usedac
    assert kernel_cmdline.intremap_disabled_by(params) == []  # the last on/off wins
    assert kernel_cmdline.iommu_option_name("pti") == "pt" and kernel_cmdline.iommu_option_name("64M") == "<size>"


def test_populated_groups_without_sys_class_iommu_show_vt_d_running():
    fragment = parse_dmesg("[  812.5] DMAR: DRHD base: 0x000000fed90000 flags: 0x0\n")  # says nothing either way
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", iommu_units=None, dmesg=fragment)  # groups as collected
    assert r.outcome is Outcome.PASSED and any("populated IOMMU groups in /sys/kernel/iommu_groups" in e for e in r.evidence)
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", iommu_units=None, iommu_groups={}, dmesg=fragment)  # known: none
    assert r.outcome is Outcome.FAILED and "intel_iommu=on is missing" in r.message
