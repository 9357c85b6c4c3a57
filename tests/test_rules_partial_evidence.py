"""Each class the less-evidence property tests found (tests/test_less_evidence.py), as one rule test:
a partial or damaged source is not judged, and no failure asks for what the host shows it has."""
import dataclasses

from support.hosts import intel_host, pci
from vfio_certify.devices import parse_device
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.model import ModuleFacts, NetInterface
from vfio_certify.model import Outcome
from vfio_certify.rules import device, iommu, kernel, kvm
from vfio_certify.snapshot.reader import PathState


def test_a_nic_is_not_judged_free_on_a_cut_garbled_or_empty_routing_table():
    eno1 = parse_device("00:19.0")  # carries the default route on the whole host
    assert device.host_network(intel_host(), eno1).outcome is Outcome.FAILED
    for routes, why in ((["0.2.1 "], "not a route"), (["\ufffd\x07zz"], "not a route"), ([], "is empty")):
        r = device.host_network(intel_host(routes=routes), eno1)
        assert r.outcome is Outcome.SKIPPED and why in r.message, (routes, r.message)


def test_a_nic_whose_netdev_is_missing_from_sys_class_net_is_not_judged_free():
    net = {n: i for n, i in intel_host().net.items() if n != "eno1"}  # its folder gone, its routes still there
    r = device.host_network(intel_host(net=net), parse_device("00:19.0"))
    assert r.outcome is Outcome.SKIPPED and "/sys/class/net lacks eno1" in r.message
    bridged = {**intel_host().net, "br0": NetInterface("br0", "", "", ("enp7s0f1",))}
    del bridged["enp7s0f1"]  # a bridge port's folder gone: the bridge still names it
    r = device.host_network(intel_host(net=bridged, routes=["default via 192.0.2.1 dev br0"]), parse_device("07:00.1"))
    assert r.outcome is Outcome.SKIPPED and "/sys/class/net lacks enp7s0f1" in r.message


def test_a_nic_without_a_netdev_is_not_judged_free_while_a_nic_named_netdev_has_no_device_link():
    net = {**intel_host().net, "eno1": NetInterface("eno1", "")}  # its device link gone
    gpu_slot = pci("0000:2e:00.0", "8086:1521", "020000", "vfio-pci", 60)
    facts = intel_host(net=net, pci={**intel_host().pci, gpu_slot.address: gpu_slot})
    r = device.host_network(facts, parse_device("2e:00.0"))
    assert r.outcome is Outcome.SKIPPED and "which device eno1 sits on" in r.message
    assert device.host_network(intel_host(pci=facts.pci), parse_device("2e:00.0")).outcome is Outcome.PASSED


def test_a_function_lspci_lists_but_sysfs_lacks_is_not_said_absent():
    facts = intel_host(lspci_addresses=["0000:07:00.0", "0000:2d:00.0"])
    r = device.present(facts, parse_device("2d:00.0"))
    assert r.outcome is Outcome.SKIPPED and "lspci lists 0000:2d:00.0" in r.message
    assert device.present(facts, parse_device("2e:00.0")).outcome is Outcome.FAILED


def test_dev_kvm_missing_with_kvm_loaded_is_not_a_modprobe():
    facts = intel_host(kvm_device=PathState.ABSENT, modules=ModuleFacts({}, set(), {}, {"kvm", "kvm_intel"}))
    r = kvm.device(facts)
    assert r.outcome is Outcome.FAILED and "although kvm_intel is loaded" in r.message
    assert "modprobe" not in r.remediation and "devtmpfs" in r.remediation


def test_a_cut_or_garbled_proc_cmdline_is_judged_from_dmesg_or_not_at_all():
    whole = "BOOT_IMAGE=/vmlinuz ro intel_iommu=on amd_iommu=on"
    dmesg = parse_dmesg(f"[    0.000000] Kernel command line: {whole}\n")
    cut = whole[: len(whole) // 2]
    r = kernel.cmdline(intel_host(cmdline=cut, dmesg=dmesg))
    assert r.outcome is Outcome.WARNING and "amd_iommu=on" in r.message and "holds only a part" in r.evidence[0]
    garbled = "\ufffd\x01\ufffd"
    r = kernel.cmdline(intel_host(cmdline=garbled, dmesg=None))
    assert r.outcome is Outcome.SKIPPED and "binary bytes" in r.message


def test_a_vendor_iommu_option_is_not_judged_when_nothing_says_the_vendor():
    facts = intel_host(cpu=None, acpi_tables=None, iommu_units=None, dmesg=None)
    r = kernel.config_option(facts, "CONFIG_AMD_IOMMU")
    assert r.outcome is Outcome.SKIPPED and "Intel VT-d or AMD-Vi" in r.message


def test_a_group_member_missing_from_the_groups_list_still_counts():
    """0000:07:00.1's own iommu_group link says group 47; the group's member list lost it."""
    base = intel_host()
    mate = dataclasses.replace(base.pci["0000:07:00.1"], iommu_group=47)
    facts = intel_host(pci={**base.pci, mate.address: mate}, iommu_groups={**base.iommu_groups, 48: []})
    r = iommu.group_isolated(facts, parse_device("07:00.0"), [parse_device("07:00.0")])
    assert r.outcome is Outcome.FAILED and "0000:07:00.1" in r.message
    lost = intel_host(iommu_groups={**base.iommu_groups, 47: []})
    r = iommu.group_isolated(lost, parse_device("07:00.0"), [parse_device("07:00.0")])
    assert r.outcome is Outcome.SKIPPED and "/sys/kernel/iommu_groups/47/devices" in r.message
