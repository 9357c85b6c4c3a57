"""What counts as evidence for iommu.*: anchored dmesg lines, /proc/interrupts over dmesg, vfio variant drivers,
VMD domains, group members that are not PCI devices, and VFIO's no-IOMMU groups."""
import os
import shutil
from pathlib import Path

import pytest

from vfio_certify.devices import DeviceSpecError, parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.pci import normalize_pci_address, parse_lspci_nnk
from vfio_certify.model import Outcome
from vfio_certify.rules import iommu
from vfio_certify.snapshot import Snapshot
from support.hosts import intel_host, pci, whole_dmesg

# Strings a device hands the kernel, printed mid-line: a USB product, an ATA model, a SCSI inquiry.
SPOOFS = """\
[    3.100000] usb 1-3: Product: x DMAR-IR: Enabled IRQ remapping in x2apic mode
[    3.100001] usb 1-3: Manufacturer: pci 0000:07:00.1: Adding to iommu group 0
[    3.100002] ata1.00: ATA-9: DMAR: Intel(R) Virtualization Technology for Directed I/O, 1.0, max UDMA/133
[    3.100003] scsi 6:0:0:0: Direct-Access     AMD-Vi: Found IOMMU cap 0x40  PQ: 0 ANSI: 6
[    3.100004] usb 1-3: SerialNumber: AMD-Vi: Interrupt remapping enabled
[    3.100005] usb 1-3: Product: kernel: Command line: intel_iommu=on
[    3.100006] input: DMAR: IOMMU enabled as /devices/pci0000:00/0000:00:14.0/usb1/1-3/input/input7
"""


def test_device_strings_the_kernel_prints_are_not_proof():
    d = parse_dmesg(SPOOFS)
    assert d.matches == {} and d.command_line == ""


def test_dmesg_T_syslog_and_journal_prefixes_are_read():
    d = parse_dmesg(
        "[Tue Nov 24 10:00:00 2026] DMAR-IR: Enabled IRQ remapping in x2apic mode\n"
        "Nov 24 10:00:01 kvm kernel: pci 0000:07:00.1: Adding to iommu group 48\n"
        "2026-11-24T10:00:02+0000 kvm kernel: DMAR: Intel(R) Virtualization Technology for Directed I/O\n"
        "Nov  4 10:00:03 kvm kernel: [    0.024334] Kernel command line: ro intel_iommu=on\n"
        "[    4.000000] kvm kernel: pci 0000:00:00.2: AMD-Vi: Found IOMMU cap 0x40\n"
        "Nov 24 10:00:05 kvm logger[99]: DMAR: IOMMU enabled\n"  # a user's logger line, not the kernel
    )
    assert len(d.irq_remapping_enabled) == len(d.group_additions) == len(d.vtd_initialized) == 1
    assert d.command_line == "ro intel_iommu=on" and len(d.amd_vi_found) == 1
    assert not d.dmar_iommu_enabled


def test_dmesg_only_iommu_enabled_line_is_not_proof():
    # intel_iommu_setup() printed it on reading the command line; VT-d never initialised (no group appeared).
    d = parse_dmesg(whole_dmesg("[    0.187391] Kernel command line: ro iommu=pt intel_iommu=on",
                                "[    0.187400] DMAR: IOMMU enabled"))
    r = iommu.enabled(intel_host(iommu_units=None, iommu_groups=None, dmesg=d))
    assert r.outcome is Outcome.FAILED
    assert "/sys/class/iommu and /sys/kernel/iommu_groups not collected" in r.message
    assert any("DMAR: IOMMU enabled (intel_iommu=on was read; not proof" in e for e in r.evidence)
    proof = parse_dmesg("[    0.4] DMAR: IOMMU enabled\n[    0.46] DMAR: Intel(R) Virtualization Technology for Directed I/O\n")
    assert iommu.enabled(intel_host(iommu_units=None, iommu_groups=None, dmesg=proof)).outcome is Outcome.PASSED


def test_spoofed_lines_do_not_enable_the_iommu_or_remapping():
    facts = intel_host(iommu_units=None, iommu_groups=None, interrupts=None, dmesg=parse_dmesg(whole_dmesg(SPOOFS)))
    assert iommu.enabled(facts).outcome is Outcome.FAILED
    assert iommu.irq_remapping(facts).outcome is Outcome.FAILED
    fragment = intel_host(iommu_units=None, iommu_groups=None, interrupts=None, dmesg=parse_dmesg(SPOOFS))
    for rule in (iommu.enabled, iommu.irq_remapping):  # and from a fragment, nothing at all is judged
        r = rule(fragment)
        assert r.outcome is Outcome.SKIPPED and "dmesg does not cover boot (starts at 3.1 s" in r.message


def test_proc_interrupts_listing_chips_wins_over_dmesg():
    plain = parse_interrupts("  0:  35  0  IO-APIC  2-edge  timer\n 24:  0  12  PCI-MSI 512000-edge  ahci\n")
    r = iommu.irq_remapping(intel_host(interrupts=plain))  # dmesg says "Enabled IRQ remapping in x2apic mode"
    assert r.outcome is Outcome.FAILED and "not active" in r.message
    assert any("Enabled IRQ remapping in x2apic mode (contradicted by /proc/interrupts" in e for e in r.evidence)
    for no_chips in (None, parse_interrupts(""), parse_interrupts(" NMI:  0  0  Non-maskable interrupts\n")):
        assert iommu.irq_remapping(intel_host(interrupts=no_chips)).outcome is Outcome.PASSED  # dmesg decides


def test_interrupt_chip_is_read_from_its_column_not_the_action_names():
    facts = parse_interrupts(" 30:  0  5  PCI-MSI 524288-edge  IR-PCI-MSI\n")  # a NIC renamed "IR-PCI-MSI"
    assert not facts.remapping_active and facts.plain_chips == {"PCI-MSI"}


@pytest.mark.parametrize("driver", ["mlx5_vfio_pci", "hisi_acc_vfio_pci", "nvgrace_gpu_vfio_pci", "pds_vfio_pci",
                                    "virtio_vfio_pci", "qat_vfio_pci", "pds-vfio-pci"])
def test_vfio_pci_variant_drivers_leave_the_group_viable(driver):
    devices = {"0000:2d:00.0": pci("0000:2d:00.0", "15b3:101e", "020000", "vfio-pci", 5),
               "0000:2d:00.1": pci("0000:2d:00.1", "15b3:101e", "020000", driver, 5)}
    spec = parse_device("2d:00.0")
    r = iommu.group_isolated(intel_host(pci=devices, iommu_groups={5: sorted(devices)}), spec, [spec])
    assert r.outcome is Outcome.PASSED and "unbound from host drivers: 0000:2d:00.1" in r.message


def test_a_group_member_that_is_not_pci_blocks_and_is_named():
    devices = {"0000:00:14.0": pci("0000:00:14.0", "1022:790b", "0c0500", "vfio-pci", 7)}
    facts = intel_host(pci=devices, iommu_groups={7: ["0000:00:14.0", "AMDI0020:00"]})
    spec = parse_device("00:14.0")
    r = iommu.group_isolated(facts, spec, [spec])
    assert r.outcome is Outcome.FAILED and "AMDI0020:00 (not a PCI device)" in r.message
    assert "add --device" not in r.remediation and "AMDI0020:00" in r.remediation


@pytest.mark.parametrize("text, expected", [
    ("10000:e1:00.0", "10000:e1:00.0"), ("10001:E1:1f.7", "10001:e1:1f.7"), ("0010000:e1:00.0", "10000:e1:00.0"),
    ("0000:07:00.1", "0000:07:00.1"), ("07:00.1", "0000:07:00.1"),
    ("100000000:e1:00.0", None), ("000:07:00.1", None), ("1000g:e1:00.0", None), ("10000:e1:00.8", None),
])
def test_vmd_domains_of_up_to_8_hex_digits(text, expected):
    assert normalize_pci_address(text) == expected
    if expected:
        assert parse_device(text).key == expected
    else:
        with pytest.raises(DeviceSpecError):
            parse_device(text)


def test_lspci_lists_vmd_children():
    entries = parse_lspci_nnk("10000:e1:00.0 Non-Volatile memory controller [0108]: Intel [8086:f1a8]\n"
                              "\tKernel driver in use: nvme\n")
    assert entries["10000:e1:00.0"].driver == "nvme"


# -- VFIO's no-IOMMU groups ------------------------------------------------------------------------------------
# With vfio's enable_unsafe_noiommu_mode=1 (set by DPDK set-ups and, on OpenStack VMs, by the SR-IOV network
# operator: k8snetworkplumbingwg/sriov-network-operator#257), binding a device to vfio-pci on a host with no IOMMU
# makes a group all the same: drivers/vfio/group.c vfio_noiommu_group_alloc() calls iommu_group_alloc(), so
# /sys/kernel/iommu_groups/N/devices/<device> and the device's iommu_group link appear, with /dev/vfio/noiommu-N as
# its node. No capture of such a host is at hand (Debian 12's kernel is built without CONFIG_VFIO_NOIOMMU): the seed's
# Rocky 9 host before intel_iommu=on (no IOMMU running) is given what the kernel makes for its I350 port.


def _bound_without_iommu(tmp_path, node):
    host = tmp_path / node
    shutil.copytree(Path(__file__).resolve().parent.parent / "fixtures/hosts/rocky9-before-intel-iommu", host,
                    symlinks=True)
    root = host / "root"
    (root / "sys/kernel/iommu_groups/0/devices").mkdir(parents=True)
    (root / "sys/kernel/iommu_groups/0/devices/0000:07:00.1").write_bytes(b"")
    device = root / "sys/bus/pci/devices/0000:07:00.1"
    os.symlink("../../../../kernel/iommu_groups/0", device / "iommu_group")
    (device / "driver").unlink()
    os.symlink("../../drivers/vfio-pci", device / "driver")
    for name in ("vfio", node):
        (root / "dev/vfio" / name).write_bytes(b"")
    return host


def _judge(host):
    facts = read_host_facts(Snapshot(host))
    spec = parse_device("07:00.1")
    return {r.id.split("[")[0]: r for r in (iommu.enabled(facts), iommu.groups(facts),
                                           iommu.group_isolated(facts, spec, [spec]))}


def test_vfios_no_iommu_group_proves_no_iommu(tmp_path):
    judged = _judge(_bound_without_iommu(tmp_path, "noiommu-0"))
    assert {i: r.outcome for i, r in judged.items()} == {
        "iommu.enabled": Outcome.FAILED, "iommu.groups": Outcome.FAILED, "iommu.group_isolated": Outcome.FAILED}
    assert "intel_iommu=on" in judged["iommu.enabled"].message  # the real reason, as without the group
    assert any("only VFIO's no-IOMMU groups (/dev/vfio/noiommu-0" in e for e in judged["iommu.groups"].evidence)
    assert judged["iommu.group_isolated"].evidence == [
        "/sys/bus/pci/devices/0000:07:00.1/iommu_group -> 0, VFIO's no-IOMMU group (/dev/vfio/noiommu-0): "
        "no IOMMU isolates it"]
    # the same group with an IOMMU's node (/dev/vfio/0) is one, as before
    assert {r.outcome for r in _judge(_bound_without_iommu(tmp_path, "0")).values()} == {Outcome.PASSED}


def test_without_dev_vfio_a_group_of_vfio_pci_devices_only_proves_nothing(tmp_path):
    """/dev not collected: group 0 may be vfio's no-IOMMU group, so nothing that rests on it passes."""
    host = _bound_without_iommu(tmp_path, "noiommu-0")
    shutil.rmtree(host / "root/dev")
    for r in _judge(host).values():
        assert r.outcome is Outcome.SKIPPED and r.skip_reason.value == "not-collected", r
        assert r.lacked() == ["/dev/vfio (whether group 0, of vfio-pci devices only, is VFIO's no-IOMMU group)"]
