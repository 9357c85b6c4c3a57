"""HostFacts: everything the checks judge about one host, read once from a snapshot (readers/).

Every field is None when its source was not collected (a check then skips with the reason), and a
source that could not be read adds a line to `notes` instead of raising. Facts judged from several
sources are `Fact`s (fact.py: known, known absent or not collected, and from what): `iommu_table`,
`kernel_params`, a PCI device's `bound`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..snapshot.reader import PathState
from .bootconfig import BootConfig
from .cmdline import Param, damage, parse_cmdline
from .cpuinfo import CpuInfo
from .dmesg import DmesgFacts
from .fact import Fact
from .interrupts import InterruptFacts
from .iort import IortFacts
from .kconfig import KernelConfig
from .libvirt import DomainCapabilities, HeldDevice, OpenVfioFiles
from .osrelease import OsRelease
from .pci import PciDevice, normalize_pci_address
from .readiness import BootBinding, ConsoleLog, LspciVerbose
from .usb import UsbDevice

_TABLES = ("DMAR", "IVRS")
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass
class NetInterface:
    name: str
    device: str = ""  # PCI address or USB interface id the netdev sits on
    master: str = ""  # bond or bridge it is enslaved to
    lowers: tuple[str, ...] = ()  # devices this one sits on (a VLAN's parent NIC)


@dataclass
class ModuleFacts:
    loaded: Optional[dict[str, str]] = None  # /proc/modules
    builtin: Optional[set[str]] = None  # modules.builtin
    loadable: Optional[dict[str, str]] = None  # modules.dep
    in_sysfs: Optional[set[str]] = None  # /sys/module/<name> (loaded or built in)


@dataclass
class DeviceTreeFacts:
    """What a device tree says about IOMMUs (arm64 boards without ACPI). Node paths are relative to its root."""
    present: bool = False  # the host booted with a device tree (its root has a model)
    model: str = ""
    iommus: dict[str, str] = field(default_factory=dict)  # node with #iommu-cells -> its compatible ('' unknown)
    pcie_iommu_maps: list[str] = field(default_factory=list)  # nodes with an iommu-map (PCIe controllers)


@dataclass
class PciReadiness:
    """One function's readiness attributes (sysfs); each None when the host has no such attribute."""
    reset_method: Optional[list[str]] = None  # 5.15+: the methods the kernel may use, in order ([] = none)
    reset_file: bool = False  # /sys/bus/pci/devices/X/reset: the kernel can reset it somehow
    boot_vga: Optional[bool] = None  # only VGA-class devices have it
    numa_node: Optional[int] = None
    local_cpulist: str = ""
    link: dict[str, str] = field(default_factory=dict)  # current_/max_ link_speed, link_width
    virtfns: list[str] = field(default_factory=list)  # an SR-IOV PF's VFs


@dataclass
class ReadinessFacts:
    """Collected together (`lspci -vvv` is their mark); a part that could not be read is None."""
    devices: dict[str, PciReadiness] = field(default_factory=dict)
    lspci: Optional[dict[str, LspciVerbose]] = None  # None: lspci -vvv failed
    iomem: Optional[dict[str, list[str]]] = None  # PCI address -> framebuffer ranges in its BARs
    iomem_devices: Optional[set[str]] = None  # PCI addresses /proc/iomem lists BARs of (a cut file lists fewer)
    framebuffers: Optional[dict[str, str]] = None  # fbN -> the device it sits on
    console_log: Optional[ConsoleLog] = None  # None: dmesg not collected
    bindings: Optional[list[BootBinding]] = None  # None: the boot configuration folders were not collected
    binding_files: list[str] = field(default_factory=list)


@dataclass
class LibvirtFacts:
    virsh: bool = False  # virsh ran (exit status not 127)
    domains: Optional[dict[str, str]] = None  # `virsh list --all`: name -> state; None: libvirtd did not answer
    list_error: str = ""
    held: list[HeldDevice] = field(default_factory=list)
    xml_missing: list[str] = field(default_factory=list)  # domains whose `virsh dumpxml` was not collected
    persistent_xml: Optional[list[str]] = None  # /etc/libvirt/qemu/*.xml read; None: folder not collected
    domcaps: Optional[DomainCapabilities] = None
    domcaps_error: str = ""
    versions: list[str] = field(default_factory=list)
    processes: Optional[dict[str, str]] = None  # PCI address -> QEMU process given it; None: ps not collected
    vfio_open: Optional[OpenVfioFiles] = None  # who holds /dev/vfio/<group> open; None: /dev/vfio not collected


@dataclass
class HostFacts:
    hostname: str = ""
    kernel_release: str = ""
    collected_at: str = ""
    os: Optional[OsRelease] = None
    cpu: Optional[CpuInfo] = None
    kvm_device: PathState = PathState.NOT_COLLECTED
    vfio_container: PathState = PathState.NOT_COLLECTED  # /dev/vfio/vfio
    kernel_config: Optional[KernelConfig] = None
    kernel_config_state: PathState = PathState.NOT_COLLECTED
    cmdline: Optional[list[Param]] = None
    cmdline_text: str = ""
    boot_configs: list[BootConfig] = field(default_factory=list)
    dmesg: Optional[DmesgFacts] = None
    acpi_tables: Optional[dict[str, bool]] = None  # {"DMAR": True, "IVRS": False, "IORT": False}
    iort: Optional[IortFacts] = None  # arm64: the IORT's nodes, when the table was read
    iort_state: PathState = PathState.NOT_COLLECTED  # /sys/firmware/acpi/tables/IORT
    devicetree: Optional[DeviceTreeFacts] = None  # None: /sys/firmware/devicetree/base not collected
    machine: str = ""  # `uname -m`: aarch64, x86_64, ...
    iommu_units: Optional[list[str]] = None
    iommu_groups: Optional[dict[int, list[str]]] = None  # group -> PCI addresses (groups whose members were read)
    iommu_groups_unread: list[int] = field(default_factory=list)  # groups listed, their devices/ not collected
    # VFIO's no-IOMMU groups (/dev/vfio/noiommu-N: vfio's enable_unsafe_noiommu_mode), group -> members: vfio makes
    # them in /sys/kernel/iommu_groups for a device bound to vfio-pci with no IOMMU at all, so they are left out of
    # iommu_groups and prove nothing. Known only when /dev/vfio was collected (noiommu_known).
    noiommu_groups: dict[int, list[str]] = field(default_factory=dict)
    pci: Optional[dict[str, PciDevice]] = None
    lspci_addresses: Optional[list[str]] = None  # the functions `lspci -nnk` lists (None: not collected)
    # the PCI tree (pci_topology.py): function -> its bridge, or its root bus (pci0000:00); None: not collected.
    # A function it lacks has no known place (its folder was not read).
    pci_tree: Optional[dict[str, str]] = None
    usb: Optional[list[UsbDevice]] = None
    modules: ModuleFacts = field(default_factory=ModuleFacts)
    interrupts: Optional[InterruptFacts] = None
    allow_unsafe_interrupts: Optional[str] = None  # the vfio_iommu_type1 parameter, "Y"/"N"
    net: Optional[dict[str, NetInterface]] = None
    routes: Optional[list[str]] = None  # `ip -o route` and `ip -o -6 route` lines
    addresses: Optional[dict[str, list[str]]] = None  # interface -> its IPv4/IPv6 addresses (`ip -o addr`)
    # group members that are not PCI functions -> their driver ("" none, None not collected)
    other_group_members: dict[str, Optional[str]] = field(default_factory=dict)
    proxmox_boot_tool: bool = False  # /usr/sbin/proxmox-boot-tool exists
    readiness: Optional[ReadinessFacts] = None  # None: the snapshot predates these sources (no lspci -vvv)
    libvirt: Optional[LibvirtFacts] = None  # None: virsh was not run
    ssh_session_address: str = ""  # this host's address of the SSH session the collection ran over
    notes: list[str] = field(default_factory=list)  # sources that could not be read, and why
    read_errors: list[str] = field(default_factory=list)  # readers that raised: "read_pci: TypeError: ..."

    @property
    def kernel_version(self) -> Optional[tuple[int, int, int]]:
        match = _RELEASE.match(self.kernel_release)
        if not match:
            return None
        return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)

    def iommu_table_proofs(self) -> list[tuple[str, str]]:
        """Everything showing the firmware's IOMMU table ("DMAR" or "IVRS"), strongest first, as (table,
        evidence): the table in sysfs, the units the kernel made from it, dmesg's ACPI table line, then the
        lines the kernel prints only while parsing it (DRHD, Host address width, AMD-Vi ivrs, platform opt-in)."""
        proofs = [(t, f"/sys/firmware/acpi/tables/{t} present") for t in _TABLES if (self.acpi_tables or {}).get(t)]
        for table, prefix in (("DMAR", "dmar"), ("IVRS", "ivhd")):
            units = [u for u in self.iommu_units or [] if u.startswith(prefix)]
            if units:
                proofs.append((table, f"/sys/class/iommu: {', '.join(units[:4])} (IOMMU units made from the {table} table)"))
        d = self.dmesg
        if d:
            for table, kinds in (("DMAR", ("acpi_dmar", "dmar_units", "dmar_parsed", "platform_optin")),
                                 ("IVRS", ("acpi_ivrs", "ivrs_parsed", "amd_vi_found"))):
                proofs += [(table, line) for kind in kinds for line in d.matches.get(kind, [])[:1]]
        return proofs

    @property
    def iommu_table(self) -> Fact[str]:
        """The firmware's IOMMU table: known ("DMAR"/"IVRS", from its strongest proof), known absent (the ACPI
        tables folder holds neither, or a dmesg that covers boot never mentions one), or not collected."""
        proofs = self.iommu_table_proofs()
        if proofs:
            return Fact.known(proofs[0][0], proofs[0][1])
        if self.acpi_tables is not None:
            return Fact.absent("/sys/firmware/acpi/tables has neither DMAR nor IVRS")
        if self.dmesg is not None and not self.dmesg.not_covering(through_iommu_init=False):
            return Fact.absent(f"dmesg from boot ({self.dmesg.lines_read} lines) has no 'ACPI: DMAR' or 'ACPI: IVRS' line")
        return Fact.not_collected("/sys/firmware/acpi/tables, or a dmesg from boot")

    @property
    def kernel_params(self) -> Fact[list[Param]]:
        """The running kernel's command line: /proc/cmdline when whole, else dmesg's 'Command line:' line, which
        also stands in for a /proc/cmdline that is empty, holds binary bytes, or is a cut part of the logged one."""
        text, logged = self.cmdline_text, (self.dmesg.command_line if self.dmesg else "")
        damaged = damage(text) if self.cmdline is not None else "/proc/cmdline was not collected"
        if not damaged and not (logged and text != logged and text in logged):
            return Fact.known(self.cmdline, f"/proc/cmdline: {text}")
        if logged:
            note = (f" ({damaged})" if self.cmdline is not None and damaged else
                    " (/proc/cmdline holds only a part of it)" if self.cmdline is not None else "")
            return Fact.known(parse_cmdline(logged), f"dmesg: Command line: {logged}{note}")
        if self.cmdline is None:
            return Fact.not_collected("/proc/cmdline")
        return Fact.not_collected(f"a whole command line ({damaged}, and dmesg has no 'Kernel command line:')")

    @property
    def arch(self) -> str:
        """'arm64', 'x86' or '' (not known): `uname -m`, else /proc/cpuinfo's own keys, else the kernel config."""
        machine = self.machine.strip()
        if machine in ("aarch64", "arm64"):
            return "arm64"
        if machine in ("x86_64", "i686", "i386"):
            return "x86"
        if self.cpu and self.cpu.arch:
            return self.cpu.arch
        config = self.kernel_config
        if config is not None:
            if config.value("CONFIG_ARM64") == "y":
                return "arm64"
            if config.value("CONFIG_X86") == "y" or config.value("CONFIG_X86_64") == "y":
                return "x86"
        # what only one architecture has: SMMU units, ITS interrupt chips, an IORT; DMAR/IVRS, IR- chips
        if any(u.startswith("smmu") for u in self.iommu_units or []) or (self.interrupts and self.interrupts.its_chips) \
                or (self.acpi_tables or {}).get("IORT"):
            return "arm64"
        if any(u.startswith(("dmar", "ivhd")) for u in self.iommu_units or []) \
                or (self.interrupts and self.interrupts.remapped_chips) \
                or any((self.acpi_tables or {}).get(t) for t in ("DMAR", "IVRS")):
            return "x86"
        return ""

    @property
    def iommu_vendor(self) -> str:
        """'intel' (VT-d), 'amd' (AMD-Vi) or 'arm' (SMMU): from the architecture, the firmware table (its
        strongest proof), then the CPU.

        The firmware decides, not the CPU flag: a TCG guest shows `svm` with an Intel vIOMMU.
        """
        if self.arch == "arm64":
            return "arm"
        proofs = self.iommu_table_proofs()
        if proofs:
            return "intel" if proofs[0][0] == "DMAR" else "amd"
        return self.cpu.vendor_short if self.cpu else ""

    @property
    def noiommu_known(self) -> bool:
        """Whether /dev/vfio was read (its vfio node present, or known absent): its noiommu-N nodes are then known."""
        return self.vfio_container is not PathState.NOT_COLLECTED

    def groups_an_iommu_made(self) -> dict[int, list[str]]:
        """The populated groups only an IOMMU driver makes. VFIO's no-IOMMU groups are already out of iommu_groups
        when /dev/vfio was collected; when it was not, a group whose every PCI member is (or may be) bound to
        vfio-pci may be one of them, and proves nothing."""
        def may_be_noiommu(members: list[str]) -> bool:
            for member in members:
                if not normalize_pci_address(member):  # an IVRS ACPI device: only AMD-Vi puts it in a group
                    return False
                device = self.pci_device(member) if self.pci is not None else None
                if device is not None and (device.driver not in ("", "vfio-pci")
                                           or device.driver_state is PathState.ABSENT):
                    return False  # on a host driver, or unbound: vfio makes a no-IOMMU group only for its own
            return True
        populated = {n: m for n, m in (self.iommu_groups or {}).items() if m}
        if self.noiommu_known:
            return populated
        return {n: m for n, m in populated.items() if not may_be_noiommu(m)}

    @property
    def iommu_vendor_from_cpu(self) -> bool:
        """True when nothing but the CPU vendor says which IOMMU this host would have."""
        return not self.iommu_table_proofs()

    @property
    def distro_family(self) -> str:
        family = self.os.family if self.os else ""
        return family

    @property
    def is_proxmox(self) -> bool:
        """A Proxmox VE kernel or its boot tool; not /etc/kernel/cmdline alone (kernel-install and
        systemd-boot on Fedora, RHEL, Arch and Debian use that file too)."""
        return self.kernel_release.endswith("-pve") or self.proxmox_boot_tool

    def pci_device(self, address: str) -> Optional[PciDevice]:
        return (self.pci or {}).get(address)
