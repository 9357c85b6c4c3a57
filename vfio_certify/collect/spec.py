"""What a snapshot holds, declared as data (in the manner of sos plugins).

Everything the static checks read is listed here once; `script.py` turns the list into
one POSIX shell script that runs in a single remote command per host. `$KREL` stands
for the running kernel release. Globs are expanded by the host's shell.

To make a new fact available to the checks: add its path or command here, then read
it in vfio_certify/facts/.
"""
from __future__ import annotations

from dataclasses import dataclass

# Files copied byte for byte (globs allowed).
COPY_FILES = [
    "/proc/cmdline",
    "/proc/cpuinfo",
    "/proc/modules",
    "/proc/interrupts",
    "/boot/config-$KREL",
    "/etc/os-release",
    "/etc/default/grub",
    "/etc/default/grub.d/*.cfg",  # sourced after /etc/default/grub (cloud images set the command line here)
    "/etc/kernel/cmdline",
    "/etc/modprobe.d/*.conf",
    "/lib/modules/$KREL/modules.builtin",
    "/lib/modules/$KREL/modules.dep",
    "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
]

# Copied only when the file before it is absent (kernel config fallback).
COPY_IF_ABSENT = [
    ("/boot/config-$KREL", "/proc/config.gz"),
]

# Paths whose existence is the fact: recorded as empty files or folders.
MARK_EXISTS = [
    "/dev/kvm",
    "/dev/vfio/*",
    "/sys/firmware/acpi/tables/DMAR",
    "/sys/firmware/acpi/tables/IVRS",
    "/sys/class/iommu/*",
    "/sys/kernel/iommu_groups/*/devices/*",
    "/sys/module/vfio",
    "/sys/module/vfio_pci",
    "/sys/module/vfio_pci_core",
    "/sys/module/vfio_iommu_type1",
    "/sys/module/iommufd",
    "/sys/module/kvm",
    "/sys/module/kvm_intel",
    "/sys/module/kvm_amd",
    "/sys/module/vhost_net",
    "/usr/sbin/proxmox-boot-tool",  # Proxmox VE (its /etc/kernel/cmdline is refreshed with it)
    "/sys/class/net/*/lower_*",  # VLAN, macvlan, bond and bridge uppers name their lower devices
    "/sys/bus/pci/devices/*/virtio*",  # a virtio NIC's netdev sits on virtioN, a child of its PCI function
]

# Per-device sysfs attributes (one small file each).
PCI_ATTRIBUTES = [
    "vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device",
    "driver_override", "sriov_totalvfs", "sriov_numvfs",
]
USB_ATTRIBUTES = ["idVendor", "idProduct", "busnum", "devnum", "bDeviceClass"]
# Strings the device itself supplies: copied with cat, byte for byte (they may hold anything).
USB_TEXT_ATTRIBUTES = ["product", "manufacturer", "serial"]


@dataclass(frozen=True)
class LinkSpec:
    """A symlink recorded by the name of its target, under a prefix that keeps it inside."""

    glob: str
    target_prefix: str


LINKS = [
    LinkSpec("/sys/bus/pci/devices/*/driver", "../../drivers/"),
    LinkSpec("/sys/bus/pci/devices/*/iommu_group", "../../../../kernel/iommu_groups/"),
    LinkSpec("/sys/bus/pci/devices/*/physfn", "../"),
    LinkSpec("/sys/bus/usb/devices/*/driver", "../../drivers/"),
    LinkSpec("/sys/class/net/*/device", "../../../bus/devices/"),
    LinkSpec("/sys/class/net/*/master", "../"),
    # IOMMU group members that are not PCI functions (an AMD IVRS ACPI device, AMDI0020:00): their driver
    LinkSpec("/sys/kernel/iommu_groups/*/devices/[!0-9a-f]*/driver", "../../drivers/"),
]

# Folders whose being read is itself a fact: created in the snapshot even when empty
# on the host, so that "absent" can be told from "not collected".
PROBED_FOLDERS = [
    "/dev", "/dev/vfio", "/boot", "/proc", "/etc", "/etc/default", "/etc/default/grub.d", "/etc/kernel",
    "/sys/firmware/acpi/tables", "/sys/class/iommu", "/sys/kernel/iommu_groups",
    "/sys/module", "/sys/bus/pci/devices", "/sys/bus/usb/devices", "/sys/class/net",
    "/lib/modules/$KREL",
]

# Commands whose standard output is stored (commands/<name with spaces as _>).
COMMANDS = [
    "uname -r",
    "uname -n",
    "dmesg",
    "lspci -nnk",
    "lsusb",
    "ip -o link",
    "ip -o route",
    "ip -o -6 route",
    "ip -o addr",
    "grubby --info=DEFAULT",
    "printenv SSH_CONNECTION",  # the session this collection runs over: its NIC must not be assigned
]
