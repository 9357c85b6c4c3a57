"""HostFacts: everything the checks judge, read once from a snapshot.

`read_host_facts` is the only place that knows snapshot paths. Every field is None
when its source was not collected (a check then skips with the reason), and a
source that could not be read adds a line to `notes` instead of raising.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Optional

from ..collect import spec
from ..snapshot.reader import PathState, Snapshot, decode
from .bootconfig import BootConfig, parse_default_grub, parse_grubby_info, parse_kernel_cmdline_file
from .cmdline import Param, parse_cmdline
from .cpuinfo import CpuInfo, parse_cpuinfo
from .dmesg import DmesgFacts, parse_dmesg
from .interrupts import InterruptFacts, parse_interrupts
from .kconfig import KernelConfig, parse_kernel_config
from .kmodules import parse_modules_builtin, parse_modules_dep, parse_proc_modules
from .osrelease import OsRelease, parse_os_release
from .pci import LspciEntry, PciDevice, build_pci_device, normalize_pci_address, parse_lspci_nnk
from .usb import UsbDevice, build_usb_device, parse_lsusb

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_MAX_CONFIG_BYTES = 16 * 1024 * 1024


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
    acpi_tables: Optional[dict[str, bool]] = None  # {"DMAR": True, "IVRS": False}
    iommu_units: Optional[list[str]] = None
    iommu_groups: Optional[dict[int, list[str]]] = None  # group -> PCI addresses
    pci: Optional[dict[str, PciDevice]] = None
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
    ssh_session_address: str = ""  # this host's address of the SSH session the collection ran over
    notes: list[str] = field(default_factory=list)  # sources that could not be read, and why
    read_errors: list[str] = field(default_factory=list)  # readers that raised: "read_pci: TypeError: ..."

    @property
    def kernel_version(self) -> Optional[tuple[int, int, int]]:
        match = _RELEASE.match(self.kernel_release)
        if not match:
            return None
        return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)

    @property
    def iommu_vendor(self) -> str:
        """'intel' (VT-d) or 'amd' (AMD-Vi): from the firmware table, the units, dmesg, then the CPU.

        The firmware decides, not the CPU flag: a TCG guest shows `svm` with an Intel vIOMMU.
        """
        if self.acpi_tables:
            if self.acpi_tables.get("DMAR"):
                return "intel"
            if self.acpi_tables.get("IVRS"):
                return "amd"
        for unit in self.iommu_units or []:
            if unit.startswith("dmar"):
                return "intel"
            if unit.startswith("ivhd"):
                return "amd"
        if self.dmesg:
            if self.dmesg.has("acpi_dmar") or self.dmesg.has("dmar_units"):
                return "intel"
            if self.dmesg.has("acpi_ivrs") or self.dmesg.has("amd_vi_found"):
                return "amd"
        return self.cpu.vendor_short if self.cpu else ""

    @property
    def iommu_vendor_from_cpu(self) -> bool:
        """True when nothing but the CPU vendor says which IOMMU this host would have."""
        tables = self.acpi_tables or {}
        dmesg_says = bool(self.dmesg and (self.dmesg.has("acpi_dmar") or self.dmesg.has("dmar_units")
                                          or self.dmesg.has("acpi_ivrs") or self.dmesg.has("amd_vi_found")))
        return not (any(tables.values()) or self.iommu_units or dmesg_says)

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


def _read_kernel_config(snap: Snapshot, facts: HostFacts) -> None:
    release = facts.kernel_release
    candidates = [f"/boot/config-{release}"] if release else []
    if not release:
        candidates = [f"/boot/{n}" for n in (snap.listdir("/boot") or []) if n.startswith("config-")][:1]
    for path in candidates:
        text = snap.read_text(path)
        if text is not None:
            facts.kernel_config = parse_kernel_config(text, path)
            facts.kernel_config_state = PathState.PRESENT
            return
    data = snap.read_bytes("/proc/config.gz")
    if data is not None:
        # Inflate at most _MAX_CONFIG_BYTES (a hostile bundle may carry a gzip bomb); a cut stream
        # still yields what was written before the cut, and the config then counts as cut short.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(data, _MAX_CONFIG_BYTES)
            problem = "" if inflater.eof else (
                "larger than 16 MiB inflated" if inflater.unconsumed_tail else "the gzip stream is cut short")
        except zlib.error as exc:
            raw, problem = b"", f"damaged gzip ({exc})"
        if problem:
            facts.notes.append(f"/proc/config.gz: {problem}; read {len(raw)} bytes of it")
        if not raw:
            facts.kernel_config_state = PathState.NOT_COLLECTED
            return
        facts.kernel_config = parse_kernel_config(decode(raw), "/proc/config.gz")
        if problem and not facts.kernel_config.truncated:
            facts.kernel_config.truncated, facts.kernel_config.truncated_why = True, problem
        facts.kernel_config_state = PathState.PRESENT
        return
    boot = snap.state(candidates[0]) if candidates else snap.state("/boot/config")
    proc = snap.state("/proc/config.gz")
    both_absent = boot is PathState.ABSENT and proc is PathState.ABSENT
    facts.kernel_config_state = PathState.ABSENT if both_absent else PathState.NOT_COLLECTED


def _read_pci(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir("/sys/bus/pci/devices")
    if names is None:
        return
    lspci_out = snap.command("lspci -nnk")
    lspci: dict[str, LspciEntry] = parse_lspci_nnk(lspci_out.stdout) if lspci_out else {}
    devices: dict[str, PciDevice] = {}
    for name in names:
        address = normalize_pci_address(name)
        if not address:
            facts.notes.append(f"/sys/bus/pci/devices/{name}: not a PCI address, ignored")
            continue
        base = f"/sys/bus/pci/devices/{name}"
        attrs = {a: snap.read_value(f"{base}/{a}") for a in spec.PCI_ATTRIBUTES.names}
        device = build_pci_device(
            address, attrs, snap.link_name(f"{base}/driver"), snap.link_name(f"{base}/iommu_group"),
            snap.link_name(f"{base}/physfn"),
        )
        entry = lspci.get(address)
        if entry:
            device.description = entry.description
            device.driver = device.driver or entry.driver
        devices[address] = device
    facts.pci = devices


def _read_usb(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir("/sys/bus/usb/devices")
    lsusb_out = snap.command("lsusb")
    listed = parse_lsusb(lsusb_out.stdout) if lsusb_out and lsusb_out.stdout.strip() else []
    devices: list[UsbDevice] = []
    for name in names or []:
        if ":" in name:  # interfaces (4-1:1.0) are not devices
            continue
        attrs = {a: snap.read_value(f"/sys/bus/usb/devices/{name}/{a}") for a in spec.USB_ATTRIBUTES.names + spec.USB_ATTRIBUTES.text_names}
        device = build_usb_device(name, attrs)
        if device:
            devices.append(device)
    known = {d.bus_device for d in devices}
    for device in listed:  # lsusb knows names sysfs lacks; add what sysfs missed
        match = next((d for d in devices if d.bus_device == device.bus_device), None)
        if match and device.name:
            match.name = device.name
        elif device.bus_device not in known:
            devices.append(device)
    if names is not None or lsusb_out is not None:
        facts.usb = sorted(devices, key=lambda d: (d.busnum, d.devnum))


def _read_groups(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir("/sys/kernel/iommu_groups")
    if names is None:
        return
    groups: dict[int, list[str]] = {}
    for name in names:
        if not name.isdigit():
            continue
        members = snap.listdir(f"/sys/kernel/iommu_groups/{name}/devices") or []
        # PCI functions by address; other members (an AMD IVRS ACPI device such as AMDI0020:00) by name
        groups[int(name)] = sorted(normalize_pci_address(m) or m for m in members)
        for member in (m for m in members if normalize_pci_address(m) is None):
            link = f"/sys/kernel/iommu_groups/{name}/devices/{member}/driver"
            driver = snap.link_name(link)
            facts.other_group_members[member] = driver or ("" if snap.state(link) is PathState.ABSENT else None)
    facts.iommu_groups = dict(sorted(groups.items()))
    for number, members in facts.iommu_groups.items():
        for address in members:
            device = facts.pci_device(address) if facts.pci is not None else None
            if device is not None and device.iommu_group is None:
                device.iommu_group = number


def _read_modules(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text("/proc/modules")
    facts.modules.loaded = parse_proc_modules(text) if text is not None else None
    release = facts.kernel_release
    text = snap.read_text(f"/lib/modules/{release}/modules.builtin") if release else None
    facts.modules.builtin = parse_modules_builtin(text) if text is not None else None
    text = snap.read_text(f"/lib/modules/{release}/modules.dep") if release else None
    facts.modules.loadable = parse_modules_dep(text) if text is not None else None
    if snap.listdir("/sys/module") is not None:
        probed = [m.path.rsplit("/", 1)[-1] for m in spec.MODULES_IN_SYSFS]
        facts.modules.in_sysfs = {m for m in probed if snap.exists(f"/sys/module/{m}")}
        facts.modules.in_sysfs |= set(snap.listdir("/sys/module") or [])


def _net_device(snap: Snapshot, facts: HostFacts, name: str) -> str:
    """The PCI address (or USB interface) a netdev sits on. A virtio NIC's netdev sits on virtioN, whose
    parent is the PCI function: found by the virtioN marker in that function's folder."""
    device = snap.link_name(f"/sys/class/net/{name}/device") or ""
    if device.startswith("virtio"):
        parent = next((a for a in facts.pci or {} if snap.exists(f"/sys/bus/pci/devices/{a}/{device}")), "")
        return parent or device
    return device


def _read_net(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir("/sys/class/net")
    if names is not None:
        facts.net = {
            n: NetInterface(
                n, _net_device(snap, facts, n), snap.link_name(f"/sys/class/net/{n}/master") or "",
                tuple(e[len("lower_"):] for e in snap.listdir(f"/sys/class/net/{n}") or [] if e.startswith("lower_")),
            )
            for n in names
        }
    routes = []
    collected = False
    for command in ("ip -o route", "ip -o -6 route"):
        out = snap.command(command)
        if out is not None and out.ok:
            collected = True
            routes.extend(line.strip() for line in out.stdout.splitlines() if line.strip())
    facts.routes = routes if collected else None
    out = snap.command("ip -o addr")
    if out is not None and out.ok:
        facts.addresses = parse_ip_addr(out.stdout)
    out = snap.command("printenv SSH_CONNECTION")
    if out is not None and out.ok:
        fields = out.stdout.split()
        facts.ssh_session_address = fields[2] if len(fields) == 4 else ""


def parse_ip_addr(text: str) -> dict[str, list[str]]:
    """`ip -o addr` -> interface: addresses (without prefix length)."""
    addresses: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("inet", "inet6"):
            name = fields[1].split("@", 1)[0]
            addresses.setdefault(name, []).append(fields[3].split("/", 1)[0])
    return addresses


def _read_identity(snap: Snapshot, facts: HostFacts) -> None:
    facts.notes.extend(snap.notes)
    if snap.meta_problem:
        facts.notes.append(snap.meta_problem)
    text = snap.read_text("/etc/os-release")
    facts.os = parse_os_release(text) if text is not None else None
    text = snap.read_text("/proc/cpuinfo")
    facts.cpu = parse_cpuinfo(text) if text is not None else None
    facts.kvm_device = snap.state("/dev/kvm")
    facts.vfio_container = snap.state("/dev/vfio/vfio")
    facts.proxmox_boot_tool = snap.exists("/usr/sbin/proxmox-boot-tool")


def _read_cmdline(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text("/proc/cmdline")
    if text is not None:
        facts.cmdline_text = text.strip()
        facts.cmdline = parse_cmdline(text)


def _read_boot_configs(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text("/etc/default/grub")
    if text is not None:
        dropins = [(f"/etc/default/grub.d/{n}", snap.read_text(f"/etc/default/grub.d/{n}") or "")
                   for n in snap.listdir("/etc/default/grub.d") or [] if n.endswith(".cfg")]
        facts.boot_configs.append(parse_default_grub(text, "/etc/default/grub", dropins))
    text = snap.read_text("/etc/kernel/cmdline")
    if text is not None:
        facts.boot_configs.append(parse_kernel_cmdline_file(text, "/etc/kernel/cmdline"))
    grubby = snap.command("grubby --info=DEFAULT")
    if grubby is not None and grubby.ok and grubby.stdout.strip():
        facts.boot_configs.append(parse_grubby_info(grubby.stdout))


def _read_dmesg(snap: Snapshot, facts: HostFacts) -> None:
    dmesg = snap.command("dmesg")
    if dmesg is not None:
        if dmesg.ok or dmesg.stdout.strip():
            facts.dmesg = parse_dmesg(dmesg.stdout)
        if not dmesg.ok:
            reason = dmesg.stderr.strip().splitlines()[-1] if dmesg.stderr.strip() else "no message"
            facts.notes.append(f"dmesg exited {dmesg.rc}: {reason}")


def _read_firmware(snap: Snapshot, facts: HostFacts) -> None:
    if snap.listdir("/sys/firmware/acpi/tables") is not None:
        facts.acpi_tables = {t: snap.exists(f"/sys/firmware/acpi/tables/{t}") for t in ("DMAR", "IVRS")}
    facts.iommu_units = snap.listdir("/sys/class/iommu")


def _read_interrupts(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text("/proc/interrupts")
    facts.interrupts = parse_interrupts(text) if text is not None else None
    facts.allow_unsafe_interrupts = snap.read_value("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")


# In order: _net_device needs the PCI devices. Each reader fills its own fields.
_READERS = (_read_identity, _read_kernel_config, _read_cmdline, _read_boot_configs, _read_dmesg, _read_firmware,
            _read_pci, _read_groups, _read_usb, _read_modules, _read_net, _read_interrupts)


def read_host_facts(snap: Snapshot) -> HostFacts:
    """Every reader runs; one that raises (a bug: parsers must not) leaves its facts unread and says so in
    `read_errors`, which fails host.reachable: the host is judged on the rest, and never certified."""
    facts = HostFacts(
        hostname=snap.hostname,
        kernel_release=snap.kernel_release,
        collected_at=str(snap.meta.get("collected_at") or ""),
    )
    for reader in _READERS:
        try:
            reader(snap, facts)
        except Exception as exc:  # noqa: BLE001 -- reported, never lost
            detail = " ".join(str(exc).split())[:200]
            facts.read_errors.append(f"{reader.__name__.lstrip('_')}: {type(exc).__name__}"
                                     + (f": {detail}" if detail else ""))
    return facts
