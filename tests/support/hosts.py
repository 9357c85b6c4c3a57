"""Hand-built HostFacts for rule and preflight tests: a good Intel host (the seed's Rocky 9 after
intel_iommu=on, in spirit) that each test changes with dataclasses.replace."""
import dataclasses

from vfio_certify.facts.cmdline import parse_cmdline
from vfio_certify.facts.cpuinfo import CpuInfo
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.model import HostFacts, ModuleFacts, NetInterface
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.kconfig import parse_kernel_config
from vfio_certify.facts.osrelease import OsRelease
from vfio_certify.facts.pci import PciDevice
from vfio_certify.snapshot.reader import PathState


GOOD_CONFIG = "\n".join([
    "CONFIG_IOMMU_SUPPORT=y", "CONFIG_IOMMU_API=y", "CONFIG_INTEL_IOMMU=y", "# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set",
    "CONFIG_AMD_IOMMU=y", "CONFIG_IRQ_REMAP=y", "CONFIG_VFIO=m", "CONFIG_VFIO_PCI=m", "CONFIG_VFIO_IOMMU_TYPE1=m",
    "CONFIG_KVM_VFIO=y", "",
])


def whole_dmesg(*lines: str) -> str:
    """A dmesg that covers the boot: the kernel's banner at 0.000000, the lines given, then the end of kernel
    init (after IOMMU initialisation), so a line missing from it is known absent."""
    return "\n".join(["[    0.000000] Linux version 5.14.0-162.23.1.el9_1.x86_64 (mockbuild@rockylinux.org) #1 SMP",
                      *lines, "[    2.100000] Freeing unused kernel image (initmem) memory: 2904K", ""])


def pci(address, vendor_device, class_code, driver="", group=None):
    vendor, dev = vendor_device.split(":")
    return PciDevice(address, vendor, dev, class_code, driver, group)


def intel_host(cmdline="BOOT_IMAGE=/vmlinuz ro intel_iommu=on", release="5.14.0-162.23.1.el9_1.x86_64", **changes):
    devices = {
        "0000:00:01.0": pci("0000:00:01.0", "8086:6f02", "060400", "pcieport", 1),
        "0000:07:00.0": pci("0000:07:00.0", "8086:1521", "020000", "igb", 47),
        "0000:07:00.1": pci("0000:07:00.1", "8086:1521", "020000", "igb", 48),
        "0000:00:19.0": pci("0000:00:19.0", "8086:15a1", "020000", "e1000e", 5),
    }
    facts = HostFacts(
        hostname="kvm", kernel_release=release, os=OsRelease("rocky", ("rhel", "centos", "fedora"), "Rocky Linux 9.1"),
        cpu=CpuInfo("GenuineIntel", "Intel(R) Xeon(R) CPU E5-2680 v4", frozenset({"vmx", "ept"}), 4),
        kvm_device=PathState.PRESENT, vfio_container=PathState.PRESENT,
        kernel_config=parse_kernel_config(GOOD_CONFIG, f"/boot/config-{release}"), kernel_config_state=PathState.PRESENT,
        cmdline=parse_cmdline(cmdline), cmdline_text=cmdline,
        dmesg=parse_dmesg("[    0.02] DMAR: IOMMU enabled\n[    0.1] DMAR-IR: Enabled IRQ remapping in x2apic mode\n"),
        acpi_tables={"DMAR": True, "IVRS": False}, iommu_units=["dmar0", "dmar1"],
        iommu_groups={1: ["0000:00:01.0"], 5: ["0000:00:19.0"], 47: ["0000:07:00.0"], 48: ["0000:07:00.1"]},
        pci=devices, usb=[], modules=ModuleFacts({"vfio_pci": "Live", "vfio": "Live", "vfio_iommu_type1": "Live"}, set(), {}, None),
        interrupts=parse_interrupts(" 24: 0 IR-PCI-MSI 512000-edge ahci\n"),
        net={"eno1": NetInterface("eno1", "0000:00:19.0"), "enp7s0f1": NetInterface("enp7s0f1", "0000:07:00.1")},
        routes=["default via 192.0.2.1 dev eno1 proto static metric 100", "192.0.2.0/24 dev eno1 proto kernel scope link"],
    )
    return dataclasses.replace(facts, **changes)
