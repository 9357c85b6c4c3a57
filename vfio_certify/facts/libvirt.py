"""libvirt as the snapshot saw it: domains and the host devices each holds, `virsh domcapabilities`, versions,
and QEMU processes that were given a device on their command line. Pure, forgiving parsers."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Optional

_MAX_XML = 4 * 1024 * 1024


def _xml(text: str) -> Optional[ET.Element]:
    """A small XML document without a DTD (no entity expansion from a hostile bundle), else None."""
    if len(text) > _MAX_XML or "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value or "", 0)
    except ValueError:
        return None


@dataclass
class HeldDevice:
    key: str  # "0000:07:00.1", "usb 152d:9561" or "usb 004.002"
    domain: str
    source: str  # "live XML (running)", "/etc/libvirt/qemu/x.xml", "QEMU process 1234"


def domain_hostdevs(text: str) -> list[str]:
    """The host devices a domain's XML holds: PCI addresses, 'usb vvvv:pppp' and 'usb BBB.DDD'."""
    root = _xml(text)
    if root is None:
        return []
    found = []
    interfaces = [i for i in root.iter("interface") if i.get("type") == "hostdev"]
    for hostdev in [*root.iter("hostdev"), *interfaces]:
        source = hostdev.find("source")
        if source is None:
            continue
        if hostdev.get("type") == "pci" or hostdev.tag == "interface":
            address = source.find("address")
            parts = [_int(address.get(k, "0")) for k in ("domain", "bus", "slot", "function")] if address is not None else []
            if parts and None not in parts:
                found.append("{:04x}:{:02x}:{:02x}.{:x}".format(*parts))
        elif hostdev.get("type") == "usb":
            vendor, product, address = source.find("vendor"), source.find("product"), source.find("address")
            if vendor is not None and product is not None:
                v, p = _int(vendor.get("id")), _int(product.get("id"))
                if v is not None and p is not None:
                    found.append(f"usb {v:04x}:{p:04x}")
            if address is not None:
                b, d = _int(address.get("bus")), _int(address.get("device"))
                if b is not None and d is not None:
                    found.append(f"usb {b:03d}.{d:03d}")
    return found


def domain_name(text: str) -> str:
    root = _xml(text)
    name = root.find("name") if root is not None else None
    return (name.text or "").strip() if name is not None else ""


def parse_virsh_list(text: str) -> dict[str, str]:
    """`virsh list --all` -> {domain: state}."""
    domains = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(\d+|-)\s+(\S+)\s+(.+?)\s*$", line)
        if match:
            domains[match.group(2)] = match.group(3)
    return domains


@dataclass
class DomainCapabilities:
    hostdev_supported: Optional[bool] = None
    subsys_types: list[str] = field(default_factory=list)
    pci_backends: list[str] = field(default_factory=list)
    emulator: str = ""
    machine: str = ""


def parse_domcapabilities(text: str) -> Optional[DomainCapabilities]:
    root = _xml(text)
    if root is None or root.tag != "domainCapabilities":
        return None
    caps = DomainCapabilities(emulator=(root.findtext("path") or "").strip(), machine=(root.findtext("machine") or "").strip())
    hostdev = root.find("devices/hostdev")
    if hostdev is not None:
        caps.hostdev_supported = hostdev.get("supported") == "yes"
        for enum in hostdev.findall("enum"):
            values = [(v.text or "").strip() for v in enum.findall("value")]
            if enum.get("name") == "subsysType":
                caps.subsys_types = values
            elif enum.get("name") == "pciBackend":
                caps.pci_backends = values
    return caps


def parse_virsh_version(text: str) -> list[str]:
    """`virsh version`: the 'Using library: libvirt 9.0.0' and 'Running hypervisor: QEMU 7.2.0' lines."""
    return [line.strip() for line in text.splitlines() if re.match(r"^\s*(Compiled against|Using library|Using API"
                                                                      r"|Running hypervisor|Running against daemon)", line)]


_QEMU_HOST = re.compile(r"vfio-pci,(?:[^ ]*,)?host=(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])")
_QEMU_JSON_HOST = re.compile(r'"driver":"vfio-pci","host":"(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])"')


def qemu_held_pci(ps_text: str) -> dict[str, str]:
    """`ps -eo pid,args` -> {PCI address: 'QEMU process <pid>'} for QEMU processes given -device vfio-pci,host=."""
    held = {}
    for line in ps_text.splitlines():
        if "qemu" not in line or "vfio-pci" not in line:
            continue
        pid = line.split(None, 1)[0] if line.split() else "?"
        for match in [*_QEMU_HOST.finditer(line), *_QEMU_JSON_HOST.finditer(line)]:
            domain = match.group(1) or "0000"
            held[f"{int(domain, 16):04x}:{match.group(2).lower()}"] = f"QEMU process {pid}"
    return held


@dataclass
class OpenVfioFile:
    """A process holding a file under /dev/vfio open: a group (/dev/vfio/7), the container (/dev/vfio/vfio) or a
    device node (/dev/vfio/devices/vfio0)."""
    pid: str
    fd: str
    path: str  # the node: /dev/vfio/7
    comm: str  # the process's /proc/<pid>/comm ("" when it exited before it was read)
    target: str = ""  # the fd's link as read, when it says more: a chroot's root before /dev, " (deleted)" after

    @property
    def group(self) -> str:
        """The IOMMU group whose node this is ('7', 'noiommu-7'), '' for the container and device nodes."""
        name = self.path[len("/dev/vfio/"):]
        return name if name.isdigit() or (name.startswith("noiommu-") and name[8:].isdigit()) else ""

    @property
    def device_node(self) -> str:
        """iommufd's node of one device ('vfio0' for /dev/vfio/devices/vfio0), '' for any other node."""
        return self.path[len("/dev/vfio/devices/"):] if self.path.startswith("/dev/vfio/devices/") else ""

    def summary(self) -> str:
        return f"pid {self.pid} ({self.comm or 'exited'}) holds {self.path} open (fd {self.fd}{' -> ' + self.target if self.target else ''})"


@dataclass
class OpenVfioFiles:
    """Who holds /dev/vfio's group nodes open. `files` None: not collected; `gap` says why some or all holders
    are unknown (processes whose open files could not be read, a cut or timed-out scan)."""
    groups: list[str]  # the group nodes /dev/vfio has
    files: Optional[list[OpenVfioFile]] = None
    gap: str = ""
    devices: Optional[dict[str, str]] = None  # iommufd's device nodes: {'vfio0': '0000:07:00.1'}; None: not collected


# PID FD TARGET COMM: TARGET is the node, after the root of a chroot the process runs in (/srv/root/dev/vfio/7)
# and before " (deleted)" when the node was removed after it was opened; COMM may hold spaces
_OPEN_LINE = re.compile(r"^(\d+) (\d+) (\S*?)(/dev/vfio/(?:\d+|noiommu-\d+|vfio|devices/vfio\d+))( \(deleted\))?(?: (.*))?$")
_UNREADABLE = re.compile(r"/proc/(\d+)/fd\b.*Permission denied|Permission denied.*/proc/(\d+)/fd\b")


def parse_open_vfio_files(groups: list[str], stdout: str, stderr: str, rc: int, limit: int) -> OpenVfioFiles:
    """The collection script's `PID FD TARGET COMM` lines (one `ls -l` of every /proc/<pid>/fd, filtered to
    /dev/vfio) with ls's errors and exit status. Never raises: what it cannot read is named in `gap`."""
    files, garbled = [], 0
    for line in stdout.splitlines():
        match = _OPEN_LINE.match(line)
        if match and ".." not in match.group(3):
            pid, fd, root, node, deleted, comm = match.groups()
            target = root + node + (deleted or "")
            files.append(OpenVfioFile(pid, fd, node, (comm or "").strip(), target if target != node else ""))
        elif not re.match(r"^\d+ \d+ /", line):  # not a line of the script's, rather than a file that is no node
            garbled += 1
    gaps = []
    unreadable = sorted({a or b for a, b in _UNREADABLE.findall(stderr)}, key=int)
    if unreadable:
        gaps.append(f"the open files of {len(unreadable)} process(es) could not be read (Permission denied: pid "
                    f"{', '.join(unreadable[:5])}{', ...' if len(unreadable) > 5 else ''}; run as root)")
    if rc == 124:
        gaps.append("the scan of /proc/<pid>/fd timed out")
    elif rc not in (0, 1, 2) and not unreadable:  # ls exits 1 or 2 when a process exited while it listed it
        gaps.append(f"the scan of /proc/<pid>/fd exited with status {rc}")
    if garbled or (stdout and not stdout.endswith("\n")):
        gaps.append("its output is cut short or garbled")
    if len(files) + garbled >= limit:
        gaps.append(f"only the first {limit} open files were kept")
    return OpenVfioFiles(groups, files, "; ".join(gaps))
