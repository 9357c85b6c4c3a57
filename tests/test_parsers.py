"""Parsers on real captures (fixtures/captures: the seed article's Rocky 9 host and ../shared/realdata)."""
from pathlib import Path

import pytest

from vfio_certify.facts.bootconfig import parse_default_grub, parse_grubby_info, parse_kernel_cmdline_file
from vfio_certify.facts.cmdline import parse_cmdline, split_cmdline, values_of
from vfio_certify.facts.cpuinfo import parse_cpuinfo
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.kconfig import parse_kernel_config
from vfio_certify.facts.kmodules import module_name, parse_modules_builtin, parse_modules_dep, parse_proc_modules
from vfio_certify.facts.osrelease import parse_os_release
from vfio_certify.facts.pci import normalize_pci_address, parse_lspci_nnk
from vfio_certify.facts.usb import parse_lsusb

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"


def capture(name: str) -> str:
    """A capture without its provenance header (# SOURCE / # KIND lines)."""
    lines = (CAPTURES / name).read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith(("# SOURCE", "# KIND")):
        lines.pop(0)
    return "\n".join(lines) + "\n"


# -- the seed: Rocky 9.1, before and after intel_iommu=on ---------------------------------

def test_rocky9_kernel_config_excerpt():
    config = parse_kernel_config(capture("rocky9_config_grep.txt"), "/boot/config-5.14.0-162.23.1.el9_1.x86_64")
    assert config.value("CONFIG_VFIO") == "m"
    assert config.value("CONFIG_VFIO_PCI") == "m"
    assert config.value("CONFIG_VFIO_IOMMU_TYPE1") == "m"
    assert config.value("CONFIG_KVM_VFIO") == "y"
    assert config.value("CONFIG_INTEL_IOMMU") == "y"
    assert config.value("CONFIG_INTEL_IOMMU_DEFAULT_ON") == "n"  # "# ... is not set"
    assert config.value("CONFIG_IRQ_REMAP") is None  # not in the article's grep
    assert config.enabled("CONFIG_IOMMU_SUPPORT") and not config.enabled("CONFIG_INTEL_IOMMU_DEFAULT_ON")
    assert not config.truncated and config.unreadable_lines == 0


def test_rocky9_dmesg_before_intel_iommu_on():
    d = parse_dmesg(capture("rocky9_dmesg_before_intel_iommu.txt"))
    assert d.acpi_dmar and "ALASKA" in d.acpi_dmar[0]
    assert len(d.dmar_units) >= 2  # DRHD units parsed: the hardware has VT-d
    assert d.irq_remapping_enabled == ["[    0.096394] DMAR-IR: Enabled IRQ remapping in xapic mode"]
    assert not d.dmar_iommu_enabled and not d.group_additions and not d.vtd_initialized
    assert d.command_line == ""


def test_rocky9_dmesg_after_intel_iommu_on():
    d = parse_dmesg(capture("rocky9_dmesg_after_intel_iommu.txt"))
    assert d.dmar_iommu_enabled[0] == "[    0.024389] DMAR: IOMMU enabled"  # twice: the capture is two greps
    assert d.vtd_initialized
    assert d.command_line.endswith("ro intel_iommu=on")
    assert "pci 0000:07:00.1: Adding to iommu group 48" in d.group_additions[-1]
    assert len(d.group_additions) == 4


def test_rocky9_lsusb_finds_the_jmicron_disk():
    devices = parse_lsusb(capture("rocky9_lsusb.txt"))
    assert [(d.bus_device, d.vendor_product) for d in devices] == [("002.002", "8087:8000"), ("004.002", "152d:9561")]
    assert devices[1].name.startswith("JMicron")


# -- realdata: AMD ---------------------------------------------------------------------------

def test_amd_epyc_boot_log_iommu_pt_without_amd_iommu_param():
    d = parse_dmesg(capture("amd_cmdline_iommu_pt_epyc_velinux.txt"))
    params = parse_cmdline(d.command_line)
    assert values_of(params, "iommu") == ["pt"]
    assert values_of(params, "amd_iommu") == []
    assert len(d.amd_vi) == 2 and "AMDI0020" in d.amd_vi[0]
    assert not d.acpi_ivrs  # the excerpt does not reach the IVRS line


def test_amd_g505s_firmware_without_ivrs_then_with_it():
    text = capture("amd_ivrs_present_vs_absent_g505s.txt")
    without, with_ivrs = text.split("JDC_SUS_RLS:")
    d1, d2 = parse_dmesg(without), parse_dmesg(with_ivrs)
    assert not d1.acpi_ivrs and not d1.group_additions
    assert any("IOMMUv2 functionality not available" in line for line in d1.amd_vi)
    assert values_of(parse_cmdline(d1.command_line), "amd_iommu") == ["on"]
    assert d2.acpi_ivrs and "AMDIOMMU" in d2.acpi_ivrs[0]
    assert len(d2.group_additions) == 3  # "iommu: Adding device 0000:00:01.0 to group 0" (4.19 wording)


# -- realdata: Intel -------------------------------------------------------------------------

def test_intel_cmdline_flags_present_but_no_iommu_group():
    d = parse_dmesg(capture("intel_cmdline_iommu_pt_but_no_iommu_group.txt"))
    assert d.no_iommu_group and "0000:00:14.0" in d.no_iommu_group[0]
    params = parse_cmdline(d.command_line)
    assert values_of(params, "intel_iommu") == ["on"] and values_of(params, "iommu") == ["pt"]
    assert values_of(params, "vfio-pci.ids") == ["8086:9c31"]  # dashes and underscores are one name
    assert not d.dmar_iommu_enabled and not d.group_additions


def test_intel_proxmox_dmar_table_without_enabled_line():
    d = parse_dmesg(capture("intel_dmar_table_no_iommu_enabled_line_proxmox.txt"))
    assert d.acpi_dmar and len(d.dmar_units) == 4
    assert d.irq_remapping_enabled and "x2apic" in d.irq_remapping_enabled[0]
    assert not d.dmar_iommu_enabled  # ambiguous by dmesg alone: sysfs decides


def test_lspci_nnk_rx570_bound_to_vfio_pci():
    entries = parse_lspci_nnk(capture("lspci_nnk_vfio_pci_bound_rx570_amd_host.txt"))
    gpu, audio = entries["0000:2d:00.0"], entries["0000:2d:00.1"]
    assert gpu.driver == "vfio-pci" and gpu.modules == ["amdgpu"]
    assert "[1002:67df]" in gpu.description and gpu.description.startswith("VGA compatible controller [0300]")
    assert audio.driver == "vfio-pci" and audio.modules == ["snd_hda_intel"]
    assert entries["0000:00:00.0"].driver == ""  # host bridge: no driver line
    assert entries["0000:28:00.0"].driver == "iwlwifi"  # the DeviceName line does not confuse it
    assert entries["0000:24:00.0"].modules == ["nvidiafb", "nouveau", "nvidia_drm", "nvidia"]
    assert len(entries) == 49


def test_cezanne_group_listing_with_truncated_tail():
    entries = parse_lspci_nnk(capture("nonisolated_group_gpu_with_psp_usb_cezanne.txt"))
    assert sorted(entries) == ["0000:00:08.0", "0000:00:08.1", "0000:04:00.0", "0000:04:00.1", "0000:04:00.2", "0000:04:00.3"]
    assert "[TRUNCATED]" in entries["0000:04:00.3"].description


# -- small formats ---------------------------------------------------------------------------

def test_kernel_config_cut_mid_value_drops_the_cut_option():
    config = parse_kernel_config("CONFIG_IOMMU_SUPPORT=y\nCONFIG_VFIO=y\nCONFIG_VFIO_PCI=", "cut")
    assert config.truncated
    assert config.value("CONFIG_VFIO") == "y" and config.value("CONFIG_VFIO_PCI") is None


def test_kernel_config_string_values_and_garbage():
    config = parse_kernel_config('CONFIG_LOCALVERSION="-pve"\nthis is not config\n# comment\n')
    assert config.value("CONFIG_LOCALVERSION") == "-pve" and config.unreadable_lines == 1


def test_cmdline_quotes_dashes_and_init_args():
    assert split_cmdline('root=/dev/sda1 "dyndbg=file a.c +p" quiet -- single') == ["root=/dev/sda1", "dyndbg=file a.c +p", "quiet"]
    params = parse_cmdline("intel-iommu=on iommu=pt quiet")
    assert [(p.name, p.value) for p in params] == [("intel_iommu", "on"), ("iommu", "pt"), ("quiet", None)]


def test_modules_names_and_files():
    assert module_name("kernel/drivers/vfio/pci/vfio-pci.ko.xz") == "vfio_pci"
    loaded = parse_proc_modules("vfio_pci 16384 0 - Live 0x0000000000000000\nkvm_intel 380928 0 - Live 0x0\n")
    assert loaded == {"vfio_pci": "Live", "kvm_intel": "Live"}
    assert parse_modules_builtin("kernel/drivers/vfio/vfio.ko\nkernel/fs/ext4/ext4.ko\n") == {"vfio", "ext4"}
    dep = parse_modules_dep("kernel/drivers/vfio/pci/vfio-pci.ko.zst: kernel/drivers/vfio/pci/vfio-pci-core.ko.zst\n")
    assert dep == {"vfio_pci": "kernel/drivers/vfio/pci/vfio-pci.ko.zst"}


def test_default_grub_expands_earlier_variables():
    text = 'GRUB_CMDLINE_LINUX="rhgb quiet"\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on"\nGRUB_CMDLINE_LINUX_DEFAULT=\'iommu=pt\'\n'
    boot = parse_default_grub(text)
    assert [p.raw for p in boot.args] == ["rhgb", "quiet", "intel_iommu=on", "iommu=pt"]
    grubby = parse_grubby_info('index=0\nkernel="/boot/vmlinuz-5.14"\nargs="ro crashkernel=auto intel_iommu=on"\n')
    assert [p.raw for p in grubby.args] == ["ro", "crashkernel=auto", "intel_iommu=on"]
    assert [p.raw for p in parse_kernel_cmdline_file("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n").args][-1] == "boot=zfs"


def test_os_release_family():
    assert parse_os_release('ID="rocky"\nID_LIKE="rhel centos fedora"\n').family == "rhel"
    assert parse_os_release("ID=ubuntu\nID_LIKE=debian\n").family == "debian"
    assert parse_os_release("ID=debian\n").family == "debian"
    assert parse_os_release('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n').family == "suse"
    assert parse_os_release("").family == ""


def test_interrupts_remapped_chips():
    text = ("           CPU0       CPU1\n  0:         35          0   IO-APIC   2-edge      timer\n"
            " 24:          0         12  IR-PCI-MSI 512000-edge      ahci[0000:00:1f.2]\n")
    facts = parse_interrupts(text)
    assert facts.remapping_active and facts.remapped_chips == {"IR-PCI-MSI"}
    assert facts.evidence == ["24: IR-PCI-MSI 512000-edge ahci[0000:00:1f.2]"]
    assert not parse_interrupts(text.replace("IR-PCI-MSI", "PCI-MSI")).remapping_active


def test_cpuinfo_first_processor_flags():
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU E5-2680 v4\n"
            "flags\t\t: fpu vmx ept\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx ept\n")
    cpu = parse_cpuinfo(text)
    assert cpu.processors == 2 and cpu.vendor_short == "intel" and cpu.virtualization == "vmx"
    assert not cpu.is_virtual_machine


@pytest.mark.parametrize("text, expected", [
    ("07:00.1", "0000:07:00.1"), ("0000:07:00.1", "0000:07:00.1"), ("0001:AB:1f.7", "0001:ab:1f.7"),
    ("07:00.8", None), ("7:00.1", None), ("07:20.1", None), ("", None),
])
def test_pci_address_normalization(text, expected):
    assert normalize_pci_address(text) == expected


def test_a_kernel_config_cut_at_a_line_end_is_known_by_its_unclosed_menu():
    """Since 5.x every menu ends with '# end of <menu>', the file with '# end of Kernel hacking': a config cut
    between two whole lines has no incomplete line, but its last menu is never closed."""
    whole = "#\n# IOMMU Hardware Support\n#\nCONFIG_IOMMU_SUPPORT=y\n# end of IOMMU Hardware Support\n" \
            "#\n# Kernel hacking\n#\nCONFIG_DEBUG_KERNEL=y\n# end of Kernel hacking\n"
    assert not parse_kernel_config(whole).truncated
    cut = parse_kernel_config(whole.rsplit("# end of Kernel hacking", 1)[0])
    assert cut.truncated and "never closed" in cut.truncated_why
    assert not parse_kernel_config("CONFIG_VFIO=m\nCONFIG_VFIO_PCI=m\n").truncated  # 4.x: no markers to judge by
