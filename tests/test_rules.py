"""Rules are pure functions of HostFacts: judged here without pytest plumbing or snapshots."""
import dataclasses
import gzip

import pytest

from vfio_certify.devices import parse_device
from vfio_certify.facts.bootconfig import parse_default_grub
from vfio_certify.facts.cmdline import parse_cmdline
from vfio_certify.facts.cpuinfo import CpuInfo
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.model import ModuleFacts, NetInterface
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.kconfig import parse_kernel_config
from vfio_certify.facts.osrelease import OsRelease
from vfio_certify.model import Outcome
from vfio_certify.rules import cpu, device, firmware, iommu, kernel, vfio
from support.hosts import GOOD_CONFIG, intel_host, pci

def cmdline_result(text, **changes):
    return kernel.cmdline(intel_host(cmdline=text, **changes))


# -- kernel.cmdline: semantics, not substrings -------------------------------------------------

# what a 5.14 host booted without intel_iommu=on shows (its dmesg has no 'DMAR: IOMMU enabled': that line is
# printed on reading intel_iommu=on)
IOMMU_NOT_RUNNING = dict(iommu_units=[], iommu_groups={}, dmesg=parse_dmesg("[    0.1] DMAR: Host address width 46\n"))


def test_intel_before_6_8_without_default_on_needs_intel_iommu_on():
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro", **IOMMU_NOT_RUNNING)
    assert r.outcome is Outcome.FAILED and "intel_iommu=on is missing" in r.message
    assert 'grubby --update-kernel=ALL --args="intel_iommu=on"' in r.remediation  # RHEL family


def test_intel_default_on_config_does_not_need_the_flag():
    config = parse_kernel_config(GOOD_CONFIG.replace("# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set", "CONFIG_INTEL_IOMMU_DEFAULT_ON=y"))
    r = cmdline_result("ro quiet", kernel_config=config)
    assert r.outcome is Outcome.PASSED
    assert any("intel_iommu=on is not needed" in e for e in r.evidence)


def test_kernel_6_8_without_a_config_is_assumed_default_on():
    r = cmdline_result("ro quiet", kernel_config=None, release="6.8.12-4-pve")
    assert r.outcome is Outcome.PASSED


def test_dashes_count_as_underscores_and_the_last_value_wins():
    assert cmdline_result("intel_iommu=off intel-iommu=on").outcome is Outcome.PASSED
    r = cmdline_result("intel_iommu=on intel_iommu=off")
    assert r.outcome is Outcome.FAILED and "intel_iommu=off disables VT-d" in r.message


def test_amd_iommu_on_is_not_a_valid_value():
    amd = dict(acpi_tables={"DMAR": False, "IVRS": True}, iommu_units=["ivhd0"],
               os=OsRelease("debian", (), "Debian GNU/Linux 12"))
    r = cmdline_result("ro amd_iommu=on iommu=pt", **amd)
    assert r.outcome is Outcome.WARNING
    assert "amd_iommu=on is not a valid value" in r.message
    assert "update-grub" in r.remediation  # Debian family
    assert any("iommu=pt" in e and "enables nothing" in e for e in r.evidence)


def test_iommu_prefix_matching_pti_acts_as_pt():
    r = cmdline_result("intel_iommu=on iommu=pti")
    assert r.outcome is Outcome.WARNING and "read as iommu=pt" in r.message and "pti=on" in r.message


def test_iommu_values_are_comma_separated_options_each_judged():
    r = cmdline_result("intel_iommu=on iommu=nomerge,off")
    assert r.outcome is Outcome.FAILED and "off in iommu=nomerge,off turns the IOMMU off" in r.message
    assert '--remove-args="iommu=nomerge,off"' in r.remediation
    r = cmdline_result("intel_iommu=on iommu=pt,nomerge")
    assert r.outcome is Outcome.PASSED and any("enables nothing" in e for e in r.evidence)


def test_iommu_off_and_acs_override_fail():
    r = cmdline_result("intel_iommu=on iommu=off pcie_acs_override=downstream,multifunction")
    assert r.outcome is Outcome.FAILED
    assert "iommu=off turns the IOMMU off" in r.message and "security finding" in r.message
    assert 'grubby --update-kernel=ALL --remove-args="iommu=off pcie_acs_override=downstream,multifunction"' in r.remediation


def test_reboot_pending_when_grub_has_what_the_running_kernel_lacks():
    grub = parse_default_grub('GRUB_CMDLINE_LINUX="rhgb quiet intel_iommu=on"\n')
    r = cmdline_result("BOOT_IMAGE=/vmlinuz ro rhgb quiet", boot_configs=[grub], **IOMMU_NOT_RUNNING)
    assert r.outcome is Outcome.FAILED
    assert "reboot pending: /etc/default/grub has intel_iommu=on but the running kernel booted without it" in r.message


def test_cmdline_falls_back_to_dmesg_and_skips_without_either():
    d = parse_dmesg("[    0.0] Command line: ro intel_iommu=on\n")
    assert kernel.cmdline(dataclasses.replace(intel_host(), cmdline=None, dmesg=d)).outcome is Outcome.PASSED
    assert kernel.cmdline(dataclasses.replace(intel_host(), cmdline=None, dmesg=None)).outcome is Outcome.SKIPPED


# -- kernel.config ----------------------------------------------------------------------------

def test_config_vendor_option_follows_the_firmware_not_the_cpu():
    # A TCG guest: the CPU says AMD (svm) but the IOMMU is an Intel vIOMMU (DMAR).
    facts = intel_host(cpu=CpuInfo("AuthenticAMD", "QEMU TCG", frozenset({"svm", "hypervisor"}), 1))
    assert kernel.config_option(facts, "CONFIG_INTEL_IOMMU").outcome is Outcome.PASSED
    skipped = kernel.config_option(facts, "CONFIG_AMD_IOMMU")
    assert skipped.outcome is Outcome.SKIPPED and "Intel VT-d" in skipped.message


def test_a_vm_with_no_iommu_yet_needs_the_vtd_driver_of_the_virtual_iommu_its_fix_asks_for():
    # An AMD guest without any IOMMU: firmware.iommu_table tells it to get QEMU's intel-iommu, whose driver is VT-d's
    config = parse_kernel_config(GOOD_CONFIG.replace("CONFIG_INTEL_IOMMU=y", "# CONFIG_INTEL_IOMMU is not set")
                                 .replace("CONFIG_AMD_IOMMU=y", "# CONFIG_AMD_IOMMU is not set"), "/proc/config.gz")
    vm = intel_host(cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"svm", "hypervisor"}), 2), kernel_config=config,
                    acpi_tables={"DMAR": False, "IVRS": False}, iommu_units=[], iommu_groups={}, dmesg=None)
    assert vm.iommu_vendor_from_cpu and vm.iommu_vendor == "amd"
    amd = kernel.config_option(vm, "CONFIG_AMD_IOMMU")
    assert amd.outcome is Outcome.SKIPPED and amd.skip_reason.value == "not-applicable" and "intel-iommu" in amd.message
    intel = kernel.config_option(vm, "CONFIG_INTEL_IOMMU")
    assert intel.outcome is Outcome.FAILED and intel.fix.options == ("CONFIG_INTEL_IOMMU",)
    assert "intel-iommu" in firmware.iommu_table(vm).remediation  # the same virtual IOMMU
    # the same machine on bare metal: its own AMD-Vi
    bare = dataclasses.replace(vm, cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"svm"}), 2))
    assert kernel.config_option(bare, "CONFIG_AMD_IOMMU").outcome is Outcome.FAILED
    assert kernel.config_option(bare, "CONFIG_INTEL_IOMMU").outcome is Outcome.SKIPPED
    # the VM once it has an IVRS (QEMU's amd-iommu): the table decides, as on any host
    amd_viommu = dataclasses.replace(vm, acpi_tables={"DMAR": False, "IVRS": True})
    assert kernel.config_option(amd_viommu, "CONFIG_AMD_IOMMU").outcome is Outcome.FAILED
    assert "AMD-Vi" in kernel.config_option(amd_viommu, "CONFIG_INTEL_IOMMU").message


def test_config_option_not_set_fails_and_truncated_config_says_so():
    config = parse_kernel_config("CONFIG_IOMMU_SUPPORT=y\n# CONFIG_VFIO is not set\nCONFIG_VF", "/boot/config-x")
    facts = intel_host(kernel_config=config, modules=ModuleFacts({}, set(), {}, None))
    r = kernel.config_option(facts, "CONFIG_VFIO")
    assert r.outcome is Outcome.FAILED and "CONFIG_VFIO is not set" in r.message
    r = kernel.config_option(facts, "CONFIG_KVM_VFIO")
    assert r.outcome is Outcome.SKIPPED and "cut short" in r.message and "Boot a kernel" not in r.remediation


def test_config_option_the_running_kernel_has_is_never_failed_for():
    """A config that says CONFIG_VFIO is off, or lacks it, beside a loaded vfio is not this kernel's, or not whole."""
    config = parse_kernel_config("CONFIG_IOMMU_SUPPORT=y\n# CONFIG_VFIO is not set\n", "/boot/config-x")
    r = kernel.config_option(intel_host(kernel_config=config), "CONFIG_VFIO")
    assert r.outcome is Outcome.SKIPPED and "/proc/modules lists vfio" in r.message
    r = kernel.config_option(intel_host(kernel_config=config), "CONFIG_INTEL_IOMMU")
    assert r.outcome is Outcome.SKIPPED and "dmar0" in r.message
    empty = kernel.config_option(intel_host(kernel_config=parse_kernel_config("", "/boot/config-x")), "CONFIG_KVM_VFIO")
    assert empty.outcome is Outcome.FAILED and "holds no kernel option" in empty.message
    assert empty.remediation.startswith("Re-collect the kernel config")


# -- iommu.* ----------------------------------------------------------------------------------

def test_iommu_off_explains_the_missing_flag_with_the_distro_fix():
    facts = intel_host(cmdline="ro", iommu_units=[], iommu_groups={}, dmesg=parse_dmesg(""))
    r = iommu.enabled(facts)
    assert r.outcome is Outcome.FAILED and "lacks intel_iommu=on" in r.message
    assert "grubby" in r.remediation


def test_iommu_off_because_firmware_has_no_table():
    facts = intel_host(acpi_tables={"DMAR": False, "IVRS": False}, iommu_units=[], iommu_groups={}, dmesg=parse_dmesg(""))
    r = iommu.enabled(facts)
    assert "no DMAR/IVRS table" in r.message and "firmware setup" in r.remediation


def test_iommu_judged_from_dmesg_only_says_so():
    dmesg = parse_dmesg("[    0.46] DMAR: Intel(R) Virtualization Technology for Directed I/O\n"
                        "[    0.47] pci 0000:00:00.0: Adding to iommu group 0\n")
    r = iommu.enabled(intel_host(iommu_units=None, iommu_groups=None, dmesg=dmesg))
    assert r.outcome is Outcome.PASSED and "judged from dmesg: /sys/class/iommu and /sys/kernel/iommu_groups not collected" in r.message


def test_irq_remapping_from_proc_interrupts_when_dmesg_rotated():
    r = iommu.irq_remapping(intel_host(dmesg=parse_dmesg("")))
    assert r.outcome is Outcome.PASSED and any("IR-PCI-MSI" in e for e in r.evidence)


def test_irq_remapping_missing_with_unsafe_interrupts_noted():
    facts = intel_host(dmesg=parse_dmesg(""), interrupts=parse_interrupts(" 24: 0 PCI-MSI 512000-edge ahci\n"),
                       allow_unsafe_interrupts="Y")
    r = iommu.irq_remapping(facts)
    assert r.outcome is Outcome.FAILED and "allow_unsafe_interrupts is set" in r.message


def _with_group(members, named):
    devices = {a: pci(a, vd, cls, drv, 5) for a, vd, cls, drv in members}
    facts = intel_host(pci=devices, iommu_groups={5: sorted(devices)})
    specs = [parse_device(n) for n in named]
    return facts, specs


CEZANNE = [
    ("0000:00:08.0", "1022:1632", "060000", ""), ("0000:00:08.1", "1022:1635", "060400", "pcieport"),
    ("0000:04:00.0", "1002:1638", "030000", "amdgpu"), ("0000:04:00.1", "1002:1637", "040300", "snd_hda_intel"),
    ("0000:04:00.2", "1022:15df", "108000", "ccp"), ("0000:04:00.3", "1022:1639", "0c0330", "xhci_hcd"),
]


def test_group_not_viable_names_every_other_endpoint_and_driver():
    facts, specs = _with_group(CEZANNE, ["04:00.0"])
    r = iommu.group_isolated(facts, specs[0], specs)
    assert r.outcome is Outcome.FAILED and r.id == "iommu.group_isolated[0000:04:00.0]"
    for needle in ("0000:04:00.1", "snd_hda_intel", "0000:04:00.2", "ccp", "0000:04:00.3", "xhci_hcd"):
        assert needle in r.message
    assert "0000:00:08.1" not in r.message  # the bridge does not count
    assert "0000:00:08.0" not in r.message  # a host bridge with no driver does not block
    assert "pcie_acs_override is not a fix" in r.remediation


def test_group_viable_when_every_endpoint_is_named():
    facts, specs = _with_group(CEZANNE, ["04:00.0", "04:00.1", "04:00.2", "04:00.3"])
    assert iommu.group_isolated(facts, specs[0], specs).outcome is Outcome.PASSED


def test_group_viable_when_the_other_endpoint_sits_on_vfio_pci():
    members = [("0000:2d:00.0", "1002:67df", "030000", "vfio-pci"), ("0000:2d:00.1", "1002:aaf0", "040300", "vfio-pci")]
    facts, specs = _with_group(members, ["2d:00.0"])
    r = iommu.group_isolated(facts, specs[0], specs)
    assert r.outcome is Outcome.PASSED and "unbound from host drivers: 0000:2d:00.1" in r.message


def test_acs_override_makes_a_viable_group_a_warning():
    facts, specs = _with_group([("0000:07:00.1", "8086:1521", "020000", "igb")], ["07:00.1"])
    facts = dataclasses.replace(facts, cmdline=parse_cmdline("intel_iommu=on pcie_acs_override=downstream"))
    assert iommu.group_isolated(facts, specs[0], specs).outcome is Outcome.WARNING


def test_usb_devices_need_no_group():
    spec = parse_device("004.002")
    assert iommu.group_isolated(intel_host(), spec, [spec]).outcome is Outcome.SKIPPED


# -- device.*, vfio.*, cpu.* -------------------------------------------------------------------

def test_device_present_and_absent():
    facts = intel_host()
    assert device.present(facts, parse_device("07:00.1")).outcome is Outcome.PASSED
    r = device.present(facts, parse_device("07:00.3"))
    assert r.outcome is Outcome.FAILED and "0000:07:00.0" in "\n".join(r.evidence)  # neighbours on the bus shown


def test_named_nic_that_carries_the_default_route_is_flagged():
    facts = intel_host()
    r = device.host_network(facts, parse_device("00:19.0"))
    assert r.outcome is Outcome.FAILED and "eno1 carries the default route" in r.message
    assert device.host_network(facts, parse_device("07:00.1")).outcome is Outcome.PASSED


def test_vfio_module_states():
    loadable = ModuleFacts({}, set(), {"vfio_pci": "kernel/drivers/vfio/pci/vfio-pci.ko.xz"}, None)
    assert vfio.module(intel_host(modules=loadable), "vfio_pci").outcome is Outcome.PASSED
    builtin = ModuleFacts({}, {"vfio"}, {}, None)
    assert "built into the kernel" in vfio.module(intel_host(modules=builtin), "vfio").message
    missing = ModuleFacts({}, set(), {}, None)
    r = vfio.module(intel_host(modules=missing), "vfio_iommu_type1")
    assert r.outcome is Outcome.FAILED and "file is missing" in r.message and "dnf reinstall" in r.remediation


def test_nested_host_is_said_not_failed():
    facts = intel_host(cpu=CpuInfo("GenuineIntel", "Intel Xeon", frozenset({"vmx", "hypervisor"}), 2))
    r = cpu.virtualization(facts)
    assert r.outcome is Outcome.PASSED and "nested" in r.message


@pytest.mark.parametrize("flags, outcome", [({"svm"}, Outcome.PASSED), ({"fpu"}, Outcome.FAILED)])
def test_cpu_virtualization(flags, outcome):
    facts = intel_host(cpu=CpuInfo("AuthenticAMD", "AMD EPYC", frozenset(flags), 2))
    assert cpu.virtualization(facts).outcome is outcome


def test_named_nic_that_carries_this_ssh_session_is_flagged():
    facts = intel_host(routes=[], addresses={"enp7s0f1": ["198.51.100.7"]}, ssh_session_address="198.51.100.7")
    r = device.host_network(facts, parse_device("07:00.1"))
    assert r.outcome is Outcome.FAILED and "carries the SSH session this certification runs over" in r.message


def test_ip_addr_parsing():
    from vfio_certify.facts.ip import parse_ip_addr

    text = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
            "2: eno1    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n"
            "5: vlan10@eno1    inet 192.0.2.5/24 brd 192.0.2.255 scope global vlan10\n")
    assert parse_ip_addr(text) == {"lo": ["127.0.0.1"], "eno1": ["fe80::1"], "vlan10": ["192.0.2.5"]}


def test_named_nic_under_a_vlan_is_flagged():
    net = {"eno1": NetInterface("eno1", "0000:00:19.0"), "enp7s0f1": NetInterface("enp7s0f1", "0000:07:00.1"),
           "vlan20": NetInterface("vlan20", "", "", ("enp7s0f1",))}
    r = device.host_network(intel_host(net=net), parse_device("07:00.1"))
    assert r.outcome is Outcome.FAILED and "enp7s0f1 carries vlan20" in r.message


def test_a_virtio_nic_is_found_under_its_virtio_child_and_refused_when_it_carries_the_default_route(tmp_path):
    """A virtio-net netdev sits on virtioN, a child of the PCI function (/sys/class/net/eth0/device ->
    .../0000:00:10.0/virtio0): the NIC must still be known as the host's management path (seen on the
    nested lab's L1, where it was first judged 'no host network interface')."""
    from test_snapshot import make_snapshot
    from vfio_certify.facts import read_host_facts
    from vfio_certify.snapshot import Snapshot

    pci = "root/sys/bus/pci/devices/0000:00:10.0"
    snap = Snapshot(make_snapshot(tmp_path, files={
        f"{pci}/vendor": "0x1af4\n", f"{pci}/device": "0x1000\n", f"{pci}/class": "0x020000\n",
        f"{pci}/virtio0": "",
        "commands/ip_-o_route": "default via 10.0.2.2 dev eth0\n10.0.2.0/24 dev eth0 scope link  src 10.0.2.15\n",
    }, links={
        f"{pci}/driver": "../../drivers/virtio-pci",
        "root/sys/class/net/eth0/device": "../../../bus/devices/virtio0",
    }))
    facts = read_host_facts(snap)
    assert facts.net["eth0"].device == "0000:00:10.0"
    r = device.host_network(facts, parse_device("00:10.0"))
    assert r.outcome is Outcome.FAILED and "eth0 carries the default route" in r.message


# -- host.reachable ------------------------------------------------------------------------------

def test_host_reachable_is_an_error_when_part_of_the_facts_could_not_be_read():
    from vfio_certify.rules import host

    r = host.reachable("kvm", intel_host(read_errors=["read_pci: KeyError: 'vendor'"]), "", 0.2)
    assert r.outcome is Outcome.ERROR and r.blocks_certification
    assert "could not be read: read_pci: KeyError: 'vendor'" in r.message
    assert host.reachable("kvm", intel_host(), "", 0.2).outcome is Outcome.PASSED


def test_host_reachable_fails_a_snapshot_that_holds_nothing(tmp_path):
    from vfio_certify.facts import read_host_facts
    from vfio_certify.rules import host
    from vfio_certify.snapshot import Snapshot

    (tmp_path / "root").mkdir()
    r = host.reachable(str(tmp_path), read_host_facts(Snapshot(tmp_path)), "", 0.0)
    assert r.outcome is Outcome.FAILED and "holds none of the facts the checks judge" in r.message


# -- facts that decide rules -----------------------------------------------------------------------

def test_etc_kernel_cmdline_alone_is_not_proxmox():
    """kernel-install and systemd-boot read /etc/kernel/cmdline on Fedora, RHEL, Arch and Debian too."""
    from vfio_certify.facts.bootconfig import parse_kernel_cmdline_file

    rocky = intel_host(cmdline="BOOT_IMAGE=/vmlinuz ro",
                       boot_configs=[parse_kernel_cmdline_file("root=/dev/vda1 ro\n", "/etc/kernel/cmdline")])
    assert not rocky.is_proxmox and "proxmox-boot-tool" not in kernel.cmdline(rocky).remediation
    assert intel_host(proxmox_boot_tool=True).is_proxmox and intel_host(release="6.8.12-4-pve").is_proxmox


@pytest.mark.parametrize("make, note", [
    (lambda cfg: gzip.compress(cfg)[:-200], "the gzip stream is cut short"),
    (lambda cfg: gzip.compress(cfg + b"#" * (40 << 20)), "larger than 16 MiB inflated"),
], ids=["cut", "bomb"])
def test_proc_config_gz_is_inflated_within_bounds_and_a_cut_is_said(tmp_path, make, note):
    from test_snapshot import make_snapshot
    from vfio_certify.facts import read_host_facts
    from vfio_certify.snapshot import Snapshot

    config = ("\n".join(f"CONFIG_OPTION_{i}=y" for i in range(3000)) + "\n" + GOOD_CONFIG).encode()
    facts = read_host_facts(Snapshot(make_snapshot(tmp_path, {"root/proc/config.gz": make(config)})))
    assert any(note in n for n in facts.notes), facts.notes
    assert facts.kernel_config is not None and facts.kernel_config.truncated
    assert len(facts.kernel_config.options) > 2500  # what came before the cut (or the cap) is read


def test_irq_remapping_reads_intremap_as_the_kernel_does():
    """setup_irqremap walks comma-separated options (intremap=off,nopost disables); a bare intremap is
    refused by the kernel, not 'off'."""
    no_ir = dict(interrupts=parse_interrupts(" 24: 0 PCI-MSI 512000-edge ahci\n"), dmesg=parse_dmesg(""))
    r = iommu.irq_remapping(intel_host(cmdline="intel_iommu=on intremap=off,nopost", **no_ir))
    assert r.outcome is Outcome.FAILED and "disabled by intremap=off,nopost" in r.message
    assert '--remove-args="intremap=off,nopost"' in r.remediation
    r = iommu.irq_remapping(intel_host(cmdline="intel_iommu=on intremap", **no_ir))
    assert r.outcome is Outcome.FAILED and "disabled by" not in r.message
    r = iommu.irq_remapping(intel_host(cmdline="intel_iommu=on vfio_iommu_type1.allow_unsafe_interrupts=off"))
    assert r.outcome is Outcome.PASSED, r.message


def test_iommufd_providing_the_vfio_container_needs_no_type1():
    """Linux 6.2+ built with CONFIG_IOMMUFD_VFIO_CONTAINER=y and without CONFIG_VFIO_CONTAINER has no
    vfio_iommu_type1: /dev/vfio/vfio is iommufd's, and assignment works."""
    text = GOOD_CONFIG.replace("CONFIG_VFIO_IOMMU_TYPE1=m", "# CONFIG_VFIO_CONTAINER is not set\n"
                               "CONFIG_IOMMUFD=y\nCONFIG_IOMMUFD_VFIO_CONTAINER=y")
    facts = intel_host(kernel_config=parse_kernel_config(text, "/boot/config-6.8.0"),
                       modules=ModuleFacts({"vfio_pci": "Live", "vfio": "Live", "iommufd": "Live"}, set(), {}, None))
    for r in (kernel.config_option(facts, "CONFIG_VFIO_IOMMU_TYPE1"), vfio.module(facts, "vfio_iommu_type1")):
        assert r.outcome is Outcome.PASSED and "iommufd provides the VFIO container" in r.message, r
    plain = intel_host(kernel_config=parse_kernel_config(GOOD_CONFIG.replace("CONFIG_VFIO_IOMMU_TYPE1=m", ""), "c"),
                       modules=ModuleFacts({"vfio_pci": "Live", "vfio": "Live"}, set(), {}, None))
    assert kernel.config_option(plain, "CONFIG_VFIO_IOMMU_TYPE1").outcome is Outcome.FAILED


def test_a_grub_d_drop_in_overrides_etc_default_grub_and_the_fix_says_where(tmp_path):
    """Debian/Ubuntu cloud images set GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub.d/50-cloudimg-settings.cfg,
    sourced after /etc/default/grub: that is the next boot's command line, and the file to edit."""
    from test_snapshot import COLLECTOR_META, make_snapshot
    from vfio_certify.facts import read_host_facts
    from vfio_certify.snapshot import Snapshot

    snap = Snapshot(make_snapshot(tmp_path, {
        "root/etc/os-release": 'ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04"\n',
        "root/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash intel_iommu=on"\n',
        "root/etc/default/grub.d/50-cloudimg-settings.cfg": 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n',
        "root/proc/cmdline": "BOOT_IMAGE=/vmlinuz ro console=tty1 console=ttyS0\n",
    }, meta=COLLECTOR_META))
    facts = read_host_facts(snap)
    [grub] = facts.boot_configs
    assert [p.raw for p in grub.args] == ["console=tty1", "console=ttyS0"]
    assert any(e.startswith("/etc/default/grub.d/50-cloudimg-settings.cfg: ") for e in grub.evidence)
    r = kernel.cmdline(dataclasses.replace(intel_host(), os=facts.os, boot_configs=facts.boot_configs,
                                           cmdline=facts.cmdline, **IOMMU_NOT_RUNNING))
    assert r.outcome is Outcome.FAILED and "reboot pending" not in r.message
    assert "in /etc/default/grub.d/50-cloudimg-settings.cfg (it overrides /etc/default/grub)" in r.remediation


@pytest.mark.parametrize("driver, outcome, said", [
    ("dw-apb-uart", Outcome.FAILED, "AMDI0020:00 (not a PCI device), driver dw-apb-uart"),
    (None, Outcome.PASSED, "AMDI0020:00 (not a PCI device), no driver"),
])
def test_a_group_member_that_is_not_pci_blocks_while_a_driver_holds_it(tmp_path, driver, outcome, said):
    """An AMD IVRS ACPI device (the UART AMDI0020:00, aliased to 00:14.x) in a PCI function's group: read from
    sysfs with its driver link; bound it keeps the group from a VM, unbound it does not."""
    from test_snapshot import COLLECTOR_META, make_snapshot
    from vfio_certify.facts import read_host_facts
    from vfio_certify.snapshot import Snapshot

    pci_dir, group = "root/sys/bus/pci/devices/0000:00:14.0", "root/sys/kernel/iommu_groups/7/devices"
    files = {f"{pci_dir}/vendor": "0x1022\n", f"{pci_dir}/device": "0x790b\n", f"{pci_dir}/class": "0x0c0500\n",
             f"{group}/0000:00:14.0": "", f"{group}/AMDI0020:00/.keep": ""}
    links = {f"{pci_dir}/iommu_group": "../../../../kernel/iommu_groups/7"}
    if driver:
        links[f"{group}/AMDI0020:00/driver"] = f"../../drivers/{driver}"
    facts = read_host_facts(Snapshot(make_snapshot(tmp_path, files, links, meta=COLLECTOR_META)))
    assert facts.iommu_groups[7] == ["0000:00:14.0", "AMDI0020:00"]
    r = iommu.group_isolated(facts, parse_device("00:14.0"), [parse_device("00:14.0")])
    assert r.outcome is outcome and said in r.message, r.message


# -- device.host_network and device.present: what the host really uses --------------------------

def test_a_nic_whose_routes_were_not_collected_is_not_judged_free():
    r = device.host_network(intel_host(routes=None), parse_device("07:00.1"))
    assert r.outcome is Outcome.SKIPPED and "ip -o route" in r.message
    r = device.host_network(intel_host(routes=None), parse_device("00:19.0"))  # eno1: no route known either
    assert r.outcome is Outcome.SKIPPED


def test_ipv6_link_local_is_no_host_use_but_an_address_or_a_look_alike_name_is_told_apart():
    link_local = ["fe80::/64 dev enp7s0f1 proto kernel metric 256 pref medium",
                  "10.9.0.0/24 dev enp7s0f1.100 proto kernel scope link src 10.9.0.2"]
    look_alike = {**intel_host().net, "enp7s0f1.100": NetInterface("enp7s0f1.100", "")}  # no lower: not a VLAN on it
    r = device.host_network(intel_host(routes=link_local, net=look_alike), parse_device("07:00.1"))
    assert r.outcome is Outcome.PASSED, r.message  # eth0.100 is not eth0, and fe80::/64 is everywhere
    r = device.host_network(intel_host(routes=[], addresses={"enp7s0f1": ["198.51.100.7", "fe80::1"]}),
                            parse_device("07:00.1"))
    assert r.outcome is Outcome.FAILED and "enp7s0f1 has the address(es) 198.51.100.7" in r.message


def test_an_sriov_pf_is_in_use_when_one_of_its_vfs_carries_the_host_network():
    pf = dataclasses.replace(pci("0000:41:00.0", "8086:1572", "020000", "i40e", 60), sriov_totalvfs=8, sriov_numvfs=2)
    vf = dataclasses.replace(pci("0000:41:02.0", "8086:154c", "020000", "iavf", 61), physfn="0000:41:00.0")
    base = intel_host()
    facts = intel_host(pci={**base.pci, pf.address: pf, vf.address: vf},
                       net={**base.net, "ens1f0v0": NetInterface("ens1f0v0", vf.address)},
                       routes=["default via 192.0.2.1 dev ens1f0v0"])
    r = device.host_network(facts, parse_device("41:00.0"))
    assert r.outcome is Outcome.FAILED and "VF 0000:41:02.0: ens1f0v0 carries the default route" in r.message


def test_a_usb_hub_or_an_ambiguous_vendor_product_cannot_be_assigned():
    from vfio_certify.facts.usb import UsbDevice

    hub = UsbDevice("1-1", "8087", "800a", 1, 2, "Intel Hub", device_class="09")
    root = UsbDevice("usb1", "1d6b", "0002", 1, 1, "Linux Foundation 2.0 root hub", device_class="09")
    disks = [UsbDevice("4-1", "152d", "9561", 4, 2, "JMicron"), UsbDevice("4-2", "152d", "9561", 4, 3, "JMicron")]
    facts = intel_host(usb=[hub, root, *disks])
    for key, said in (("001.002", "is a USB hub"), ("001.001", "is a USB root hub"), ("152d:9561", "2 USB devices match")):
        r = device.present(facts, parse_device(key))
        assert r.outcome is Outcome.FAILED and said in r.message, r.message
    assert device.present(facts, parse_device("004.003")).outcome is Outcome.PASSED


def test_a_pci_address_without_domain_points_at_the_device_in_another_domain():
    vmd = pci("10000:e1:00.0", "144d:a808", "010802", "nvme", 90)
    r = device.present(intel_host(pci={**intel_host().pci, vmd.address: vmd}), parse_device("e1:00.0"))
    assert r.outcome is Outcome.FAILED and "but 10000:e1:00.0 exists: name it with its domain" in r.message


def test_a_usb_network_adapter_the_host_uses_is_in_use():
    """A USB NIC (its netdev on interface 2-3:1.0 of USB device 2-3) carrying the default route: assigning it as
    a USB <hostdev> takes it from the host just like a PCI NIC."""
    from vfio_certify.e2e.preflight import preflight
    from vfio_certify.facts.usb import UsbDevice

    nic, disk = UsbDevice("2-3", "0bda", "8153", 2, 4, "Realtek USB 10/100/1000 LAN"), UsbDevice("4-1", "152d", "9561", 4, 2)
    base = intel_host()
    facts = intel_host(usb=[nic, disk], net={**base.net, "enx00e04c680001": NetInterface("enx00e04c680001", "2-3:1.0")},
                       routes=["default via 192.0.2.1 dev enx00e04c680001 proto dhcp"])
    r = device.host_network(facts, parse_device("0bda:8153"))
    assert r.outcome is Outcome.FAILED and "enx00e04c680001 carries the default route" in r.message
    assert device.host_network(facts, parse_device("004.002")).outcome is Outcome.SKIPPED  # a disk: no netdev
    pf = preflight(facts, parse_device("0bda:8153"), [parse_device("0bda:8153")], {})
    assert not pf.ok and any("device.host_network" in r for r in pf.refusals)
