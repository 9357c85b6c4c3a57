"""libvirt and QEMU: domains and the devices they hold (live and persistent XML, QEMU command lines), and
what `virsh domcapabilities` says the hypervisor can assign."""
from __future__ import annotations

from typing import Optional

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..libvirt import HeldDevice, OpenVfioFiles, domain_hostdevs, domain_name, parse_domcapabilities, \
    parse_open_vfio_files, parse_virsh_list, parse_virsh_version, qemu_held_pci
from ..model import HostFacts, LibvirtFacts

_NOT_FOUND = 127


def _error(out) -> str:
    lines = [line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip()]
    return (lines[0] if lines else f"exit status {out.rc}")[:200]


def read_libvirt(snap: Snapshot, facts: HostFacts) -> None:
    listed = snap.command(spec.VIRSH_LIST.line)
    if listed is None:
        return
    lv = LibvirtFacts(virsh=listed.rc != _NOT_FOUND)
    if listed.ok:
        lv.domains = parse_virsh_list(listed.stdout)
    elif lv.virsh:
        lv.list_error = _error(listed)
    for name, state in (lv.domains or {}).items():  # the live XML of a running domain, else its definition
        xml = snap.command(spec.VIRSH_DUMPXML.line_for(name))
        if xml is None or not xml.ok:
            lv.xml_missing.append(name)
            continue
        how = "live XML, running" if state == "running" else f"persistent XML, {state}"
        lv.held += [HeldDevice(key, name, how) for key in domain_hostdevs(xml.stdout)]
    names = snap.listdir(spec.LIBVIRT_QEMU_DIR.path)
    if names is not None:
        lv.persistent_xml = []
        for file in (n for n in names if n.endswith(".xml")):
            path = spec.LIBVIRT_QEMU_XML.at(file)
            text = snap.read_text(path) or ""
            lv.persistent_xml.append(path)
            domain = domain_name(text) or file[:-4]
            lv.held += [HeldDevice(key, domain, path) for key in domain_hostdevs(text)]
    caps = snap.command(spec.VIRSH_DOMCAPABILITIES.line)
    if caps is not None and caps.ok:
        lv.domcaps = parse_domcapabilities(caps.stdout)
        lv.domcaps_error = "" if lv.domcaps else "its output is not a <domainCapabilities> document"
    elif caps is not None:
        lv.domcaps_error = _error(caps)
    version = snap.command(spec.VIRSH_VERSION.line)
    lv.versions = parse_virsh_version(version.stdout) if version is not None and version.ok else []
    ps = snap.command(spec.PROCESSES.line)
    lv.processes = qemu_held_pci(ps.stdout) if ps is not None and ps.ok else None
    lv.vfio_open = read_open_vfio_files(snap)
    facts.libvirt = lv


def read_open_vfio_files(snap: Snapshot) -> Optional[OpenVfioFiles]:
    """Who holds /dev/vfio's group nodes and iommufd's device nodes open: known none when /dev/vfio has neither
    (the collection looks only then), not collected when it has some and the scan is missing (a bundle made
    before it existed). Which device each device node is: /sys/class/vfio-dev, None in a bundle made before."""
    names = snap.listdir(spec.DEV_VFIO.path)
    if names is None:
        return None
    groups = sorted(n for n in names if n.isdigit() or n.startswith("noiommu-"))
    nodes = snap.listdir(spec.VFIO_DEV_CLASS.path)
    devices = None if nodes is None else {
        n: (snap.link_name(spec.VFIO_DEV_DEVICE.at(n)) or "").lower() for n in nodes if n.startswith("vfio")}
    scan = snap.command(spec.VFIO_OPEN_FILES.line)
    if scan is None:
        # no group node: no device is bound to VFIO, so no device node either (both exist only for a bound one)
        return OpenVfioFiles(groups, [] if not groups and not devices else None, devices=devices)
    read = parse_open_vfio_files(groups, scan.stdout, scan.stderr, scan.rc, spec.VFIO_OPEN_FILES.limit)
    read.devices = devices
    return read
