"""What a snapshot holds: every collected source, declared once (in the manner of insights-core's specs).

Each source below is a named object: `script.py` renders all of them into one POSIX shell script that
runs in a single remote command per host, and the readers in `vfio_certify/facts/readers/` name the same
object instead of retyping its path (`snap.read_text(spec.PROC_CMDLINE.path)`). `$KREL` stands for the
running kernel release and globs are expanded by the host's shell; `at()` fills both in for a reader.
The absence convention (specs/snapshot.md): the script makes the parent folder of every path it probes
and the `Folder` sources below, so a missing path whose folder is there is absent on the host, and one
whose folder is missing was not collected.

To add a source: declare it once below, in its area (`NAME = File("/path")`, `Exists`, `Link`,
`Attributes`, `Command`), and read it through that name in its area's reader in
`vfio_certify/facts/readers/`. tests/test_spec_sources.py fails until every path a reader reads is
declared here and every source declared here is read by a reader or says in `unread` why it is collected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class _HostPath:
    path: str
    unread: str = field(default="", kw_only=True)  # why it is collected though no reader reads it

    def at(self, *names: str, krel: str = "") -> str:
        """The host path with `$KREL` replaced and its glob components filled with `names`, in order
        (`PCI_DRIVER.at("0000:07:00.1")` is /sys/bus/pci/devices/0000:07:00.1/driver)."""
        parts = self.path.replace("$KREL", krel).split("/")
        filled = iter(names)
        return "/".join(next(filled, p) if any(c in p for c in _GLOB_CHARS) else p for p in parts)

    def folder(self, *names: str, krel: str = "") -> str:
        """The folder this path sits in, filled in as by `at()`."""
        return self.at(*names, krel=krel).rsplit("/", 1)[0] or "/"


class Folder(_HostPath):
    """A folder whose being read is itself a fact: made in the snapshot even when empty on the host."""


class Exists(_HostPath):
    """A path whose existence is the fact: recorded as an empty file, or a folder for a folder."""


@dataclass(frozen=True)
class File(_HostPath):
    """A file copied byte for byte (globs allowed); with `unless`, only when that file is absent."""

    unless: Optional[File] = None


@dataclass(frozen=True)
class Link(_HostPath):
    """A symlink recorded by the name of its target, under a prefix that keeps it inside."""

    target_prefix: str


@dataclass(frozen=True)
class Attributes(_HostPath):
    """Per-device sysfs attributes under each folder `path` matches (one small file each). `names` are
    kernel-formatted one-line values; `text_names` are strings the device supplies, copied with cat."""

    names: tuple[str, ...]
    text_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A command whose standard output is stored (commands/<the command with spaces as _>)."""

    line: str
    unread: str = ""
    # The script runs the commands side by side; one whose output would show the others (a process list)
    # runs alone, before they start.
    alone: bool = False

    @property
    def file_name(self) -> str:
        return self.line.replace(" ", "_")


@dataclass(frozen=True)
class CommandEach(Command):
    """`line NAME` run once per line `names_from` printed (a Command declared too, run before): names of
    [A-Za-z0-9._+-] only, at most `limit` of them; stored as commands/<line with spaces as _>_NAME."""

    names_from: str = ""
    limit: int = 64

    def line_for(self, name: str) -> str:
        return f"{self.line} {name}"


@dataclass(frozen=True)
class OpenFiles(Command):
    """Which processes hold a file under `folder` open, looked for only when one of the `when` globs matches on
    the host: one `ls -l` of every /proc/<pid>/fd, filtered by the shell itself to at most `limit` lines
    `PID FD TARGET COMM` (COMM read from /proc/<pid>/comm). `line` is a name, not a command: stored as
    commands/<line>, with .rc and .err as a command's (ls's exit status, and `Permission denied` for other
    users' processes when not run as root)."""

    folder: str = ""
    when: tuple[str, ...] = ()
    limit: int = 256


Source = Union[Folder, File, Exists, Link, Attributes, Command]

# -- folders probed for the absence convention ------------------------------------------------------
DEV = Folder("/dev")
DEV_VFIO = Folder("/dev/vfio")
GRAPHICS_CLASS = Folder("/sys/class/graphics")
BOOT = Folder("/boot")
PROC = Folder("/proc")
ETC = Folder("/etc")
ETC_DEFAULT = Folder("/etc/default")
ETC_DEFAULT_GRUB_D = Folder("/etc/default/grub.d")
ETC_KERNEL = Folder("/etc/kernel")
ACPI_TABLES = Folder("/sys/firmware/acpi/tables")
IOMMU_CLASS = Folder("/sys/class/iommu")
IOMMU_GROUPS = Folder("/sys/kernel/iommu_groups")
SYS_MODULE = Folder("/sys/module")
PCI_DEVICES = Folder("/sys/bus/pci/devices")
USB_DEVICES = Folder("/sys/bus/usb/devices")
NET_CLASS = Folder("/sys/class/net")
MODULES_DIR = Folder("/lib/modules/$KREL")
DEVICETREE = Folder("/sys/firmware/devicetree/base")  # arm64 boards booted with a device tree instead of ACPI
# what the next boot binds: an empty folder is "no such file" (read only with the readiness mark below)
MODPROBE_D_DIR = Folder("/etc/modprobe.d")
MODULES_LOAD_D_DIR = Folder("/etc/modules-load.d")
DRIVERCTL_D_DIR = Folder("/etc/driverctl.d")
INITRAMFS_TOOLS_DIR = Folder("/etc/initramfs-tools")
DRACUT_CONF_D_DIR = Folder("/etc/dracut.conf.d")
LIBVIRT_QEMU_DIR = Folder("/etc/libvirt/qemu")

# -- identity and CPU (readers/identity.py) ---------------------------------------------------------
UNAME_R = Command("uname -r", unread="the snapshot's kernel release when meta.json lacks it (snapshot/reader.py)")
UNAME_N = Command("uname -n", unread="the snapshot's hostname when meta.json lacks it (snapshot/reader.py)")
UNAME_M = Command("uname -m")  # aarch64 or x86_64: which IOMMU, interrupt isolation and kernel options apply
OS_RELEASE = File("/etc/os-release")
PROC_CPUINFO = File("/proc/cpuinfo")
DEV_KVM = Exists("/dev/kvm")
DEV_VFIO_NODES = Exists("/dev/vfio/*")  # /dev/vfio/vfio is the container; the others are group numbers
PROXMOX_BOOT_TOOL = Exists("/usr/sbin/proxmox-boot-tool")  # Proxmox VE (its /etc/kernel/cmdline is refreshed with it)
KVM_INTEL_NESTED = File("/sys/module/kvm_intel/parameters/nested", unread="for support cases: nested KVM")
KVM_AMD_NESTED = File("/sys/module/kvm_amd/parameters/nested", unread="for support cases: nested KVM")

# -- kernel config (readers/kernel_config.py) -------------------------------------------------------
BOOT_CONFIG = File("/boot/config-$KREL")
PROC_CONFIG_GZ = File("/proc/config.gz", unless=BOOT_CONFIG)

# -- the command line and the boot configuration (readers/boot.py) ----------------------------------
PROC_CMDLINE = File("/proc/cmdline")
DEFAULT_GRUB = File("/etc/default/grub")
# sourced after /etc/default/grub (cloud images set the command line here)
DEFAULT_GRUB_DROPINS = File("/etc/default/grub.d/*.cfg")
KERNEL_CMDLINE_FILE = File("/etc/kernel/cmdline")
GRUBBY_DEFAULT = Command("grubby --info=DEFAULT")
MODPROBE_D = File("/etc/modprobe.d/*.conf")

# -- dmesg (readers/dmesg.py) -----------------------------------------------------------------------
DMESG = Command("dmesg")

# -- firmware and IOMMU units (readers/firmware.py) -------------------------------------------------
ACPI_DMAR = Exists("/sys/firmware/acpi/tables/DMAR")
ACPI_IVRS = Exists("/sys/firmware/acpi/tables/IVRS")
# arm64: binary, a few KiB (root only); its nodes say which SMMUs the firmware describes. Every GICv3-ITS
# system has one, for its MSIs: the table's content is the fact, not its existence.
ACPI_IORT = File("/sys/firmware/acpi/tables/IORT")
IOMMU_UNITS = Exists("/sys/class/iommu/*")
# A device tree (readers/firmware.py): its root's compatible says there is one; a node with #iommu-cells is an
# IOMMU (its compatible names it: arm,smmu-v3, arm,mmu-500, rockchip,iommu, ...); a PCIe controller whose
# requester ids the IOMMU translates has an iommu-map. Top-level nodes and one level below (/soc/...).
DT_MODEL = File("/sys/firmware/devicetree/base/model")
DT_IOMMU_CELLS = tuple(Exists(f"/sys/firmware/devicetree/base/{p}/#iommu-cells") for p in ("*", "*/*"))
DT_MMU_COMPATIBLE = tuple(File(f"/sys/firmware/devicetree/base/{p}/compatible") for p in ("*mmu*@*", "*/*mmu*@*"))
DT_IOMMU_MAP = tuple(Exists(f"/sys/firmware/devicetree/base/{p}/iommu-map") for p in ("*", "*/*"))

# -- PCI devices and IOMMU groups (readers/pci.py) --------------------------------------------------
PCI_ATTRIBUTES = Attributes("/sys/bus/pci/devices/*", (
    "vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device",
    "driver_override", "sriov_totalvfs", "sriov_numvfs",
))
PCI_DRIVER = Link("/sys/bus/pci/devices/*/driver", "../../drivers/")
PCI_IOMMU_GROUP = Link("/sys/bus/pci/devices/*/iommu_group", "../../../../kernel/iommu_groups/")
PCI_PHYSFN = Link("/sys/bus/pci/devices/*/physfn", "../")
LSPCI = Command("lspci -nnk")
IOMMU_GROUP_MEMBERS = Exists("/sys/kernel/iommu_groups/*/devices/*")
# IOMMU group members that are not PCI functions (an AMD IVRS ACPI device, AMDI0020:00): their driver
IOMMU_GROUP_OTHER_DRIVER = Link("/sys/kernel/iommu_groups/*/devices/[!0-9a-f]*/driver", "../../drivers/")
# The PCI tree (readers/pci.py read_topology), as sysfs nests it: each root bus's functions are folders of
# /sys/devices/pci<domain>:<bus>, and a bridge's device folder holds the functions behind it. Recorded as empty
# folders (names only). /sys/devices in the snapshot is the mark that the tree was read at all.
SYS_DEVICES = Folder("/sys/devices")
_FUNCTION = "*:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7]"  # a function's folder, not a port service (…:pcie002)
PCI_ROOT_BUS_FUNCTIONS = Exists(f"/sys/devices/pci*/{_FUNCTION}")
PCI_BEHIND_BRIDGE = Exists(f"/sys/bus/pci/devices/*/{_FUNCTION}")
# a root bus a PCI function owns (Intel VMD: /sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0)
PCI_OWNED_ROOT_BUS_FUNCTIONS = Exists(f"/sys/bus/pci/devices/*/pci*/{_FUNCTION}")

# -- USB devices (readers/usb.py) -------------------------------------------------------------------
USB_ATTRIBUTES = Attributes("/sys/bus/usb/devices/*", ("idVendor", "idProduct", "busnum", "devnum", "bDeviceClass"),
                            # strings the device itself supplies: copied with cat, byte for byte (they may hold anything)
                            ("product", "manufacturer", "serial"))
USB_DRIVER = Link("/sys/bus/usb/devices/*/driver", "../../drivers/", unread="for support cases: a USB device's driver")
LSUSB = Command("lsusb")

# -- kernel modules (readers/modules.py) ------------------------------------------------------------
PROC_MODULES = File("/proc/modules")
MODULES_BUILTIN = File("/lib/modules/$KREL/modules.builtin")
MODULES_DEP = File("/lib/modules/$KREL/modules.dep")
# /sys/module/<name> exists when the module is loaded or built in
MODULES_IN_SYSFS = tuple(Exists(f"/sys/module/{name}") for name in (
    "vfio", "vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "iommufd", "kvm", "kvm_intel", "kvm_amd", "vhost_net",
))

# -- network interfaces (readers/net.py) ------------------------------------------------------------
NET_DEVICE = Link("/sys/class/net/*/device", "../../../bus/devices/")
NET_MASTER = Link("/sys/class/net/*/master", "../")
NET_LOWERS = Exists("/sys/class/net/*/lower_*")  # VLAN, macvlan, bond and bridge uppers name their lower devices
PCI_VIRTIO = Exists("/sys/bus/pci/devices/*/virtio*")  # a virtio NIC's netdev sits on virtioN, a child of its PCI function
IP_LINK = Command("ip -o link", unread="for support cases: link state and MAC addresses")
IP_ROUTE = Command("ip -o route")
IP_ROUTE6 = Command("ip -o -6 route")
IP_ADDR = Command("ip -o addr")
SSH_CONNECTION = Command("printenv SSH_CONNECTION")  # the session this collection runs over: its NIC must not be assigned

# -- device readiness: reset, host console, boot binding, SR-IOV, NUMA (readers/readiness.py) ----------
# `lspci -vvv` is also the mark that the collection read the sources below: a snapshot without it predates
# them, and its device folders lack reset_method or boot_vga because nobody looked (not collected, not absent).
LSPCI_VERBOSE = Command("lspci -vvv")
PCI_READINESS = Attributes("/sys/bus/pci/devices/*", (
    "reset_method", "boot_vga", "numa_node", "local_cpulist",
    "current_link_speed", "max_link_speed", "current_link_width", "max_link_width",
))
PCI_RESET = Exists("/sys/bus/pci/devices/*/reset")  # present exactly when the kernel can reset the function
PCI_VIRTFN = Link("/sys/bus/pci/devices/*/virtfn*", "../")  # an SR-IOV PF's VFs
PROC_IOMEM = File("/proc/iomem")  # BOOTFB / efifb / simpledrm nested in a GPU's BAR
FB_DEVICE = Link("/sys/class/graphics/fb*/device", "../../../bus/pci/devices/")
# what the next boot loads and binds (modprobe.d above: options vfio-pci ids=, softdep)
ETC_MODULES = File("/etc/modules")
MODULES_LOAD_D = File("/etc/modules-load.d/*.conf")
DRIVERCTL_D = File("/etc/driverctl.d/*")
INITRAMFS_TOOLS_MODULES = File("/etc/initramfs-tools/modules")
DRACUT_CONF_D = File("/etc/dracut.conf.d/*.conf")

# -- libvirt and QEMU: who holds a device, what the hypervisor can assign (readers/libvirt.py) ------
VIRSH_LIST = Command("virsh list --all")
VIRSH_NAMES = Command("virsh list --all --name", unread="the domains the script runs `virsh dumpxml` for")
VIRSH_DUMPXML = CommandEach("virsh dumpxml", names_from=VIRSH_NAMES.line)  # live XML of a running domain
LIBVIRT_QEMU_XML = File("/etc/libvirt/qemu/*.xml")  # persistent definitions
VIRSH_DOMCAPABILITIES = Command("virsh domcapabilities")
VIRSH_VERSION = Command("virsh version")
PROCESSES = Command("ps -eo pid,args", alone=True)  # a QEMU started by hand with -device vfio-pci,host=
# who holds a VFIO group open (a QEMU given the device over QMP or by fd, a DPDK application), looked for only
# when /dev/vfio has group nodes: with none, nothing can hold one
VFIO_OPEN_FILES = OpenFiles("open_files_dev_vfio", folder="/dev/vfio",
                            when=("/dev/vfio/[0-9]*", "/dev/vfio/noiommu-*", "/dev/vfio/devices/vfio*"))
# which PCI function each of iommufd's device nodes (/dev/vfio/devices/vfioN, VFIO_DEVICE_CDEV) is: a QEMU given
# its device through iommufd holds that node, not the group's. The folder read marks a collection that looked.
VFIO_DEV_CLASS = Folder("/sys/class/vfio-dev")
VFIO_DEV_DEVICE = Link("/sys/class/vfio-dev/vfio*/device", "../../../bus/pci/devices/")

# -- interrupts (readers/interrupts.py) -------------------------------------------------------------
PROC_INTERRUPTS = File("/proc/interrupts")
ALLOW_UNSAFE_INTERRUPTS = File("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")


def _declared() -> tuple[Source, ...]:
    found: list[Source] = []
    for value in globals().values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, (Folder, File, Exists, Link, Attributes, Command)):
                found.append(item)
    return tuple(found)


SOURCES: tuple[Source, ...] = _declared()  # every source, in the order declared
PROBED_FOLDERS = [s.path for s in SOURCES if isinstance(s, Folder)]
COPY_FILES = [s for s in SOURCES if isinstance(s, File) and s.unless is None]
COPY_IF_ABSENT = [s for s in SOURCES if isinstance(s, File) and s.unless is not None]
MARK_EXISTS = [s for s in SOURCES if isinstance(s, Exists)]
LINKS = [s for s in SOURCES if isinstance(s, Link)]
ATTRIBUTES = [s for s in SOURCES if isinstance(s, Attributes)]
COMMANDS = [s.line for s in SOURCES if isinstance(s, Command) and not isinstance(s, (CommandEach, OpenFiles))]
COMMANDS_EACH = [s for s in SOURCES if isinstance(s, CommandEach)]
OPEN_FILES = [s for s in SOURCES if isinstance(s, OpenFiles)]
