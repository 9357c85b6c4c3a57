"""Device readiness: reset methods, the host console's framebuffer, how the next boot binds a device,
SR-IOV virtual functions and NUMA locality. `lspci -vvv` marks a collection that read all of them."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..model import HostFacts, PciReadiness, ReadinessFacts
from ..pci import normalize_pci_address
from ..readiness import BootBinding, framebuffers_in_bars, parse_binding_file, parse_console_log, parse_iomem, \
    parse_lspci_verbose

_LINK = ("current_link_speed", "max_link_speed", "current_link_width", "max_link_width")
_BINDING_SOURCES = (  # (folder that says it was looked at, the file or glob in it)
    (spec.MODPROBE_D_DIR, spec.MODPROBE_D), (spec.MODULES_LOAD_D_DIR, spec.MODULES_LOAD_D),
    (spec.DRIVERCTL_D_DIR, spec.DRIVERCTL_D), (spec.INITRAMFS_TOOLS_DIR, spec.INITRAMFS_TOOLS_MODULES),
    (spec.DRACUT_CONF_D_DIR, spec.DRACUT_CONF_D), (spec.ETC, spec.ETC_MODULES),
)


def _device(snap: Snapshot, name: str) -> PciReadiness:
    base = spec.PCI_READINESS.at(name)
    value = {a: snap.read_value(f"{base}/{a}") for a in spec.PCI_READINESS.names}
    methods = value["reset_method"]
    numa = (value["numa_node"] or "").strip()
    virtfns = [n for n in snap.listdir(spec.PCI_VIRTFN.folder(name)) or [] if n.startswith("virtfn")]
    return PciReadiness(
        reset_method=methods.split() if methods is not None else None,
        reset_file=snap.exists(spec.PCI_RESET.at(name)),
        boot_vga=None if value["boot_vga"] is None else value["boot_vga"].strip() == "1",
        numa_node=int(numa) if numa.lstrip("-").isdigit() else None,
        local_cpulist=(value["local_cpulist"] or "").strip(),
        link={a: value[a].strip() for a in _LINK if value[a] is not None and value[a].strip()},
        virtfns=sorted(v for v in (snap.link_name(spec.PCI_VIRTFN.at(name, n)) for n in virtfns) if v),
    )


def _bindings(snap: Snapshot) -> tuple[list[BootBinding] | None, list[str]]:
    found: list[BootBinding] = []
    files: list[str] = []
    looked = False
    for folder, source in _BINDING_SOURCES:
        names = snap.listdir(folder.path)
        if names is None:
            continue
        looked = True
        pattern = source.path.rsplit("/", 1)[1]
        suffix = pattern[1:] if pattern.startswith("*") else None
        for name in names:
            if (suffix is not None and name.endswith(suffix)) or name == pattern:
                path = source.at(name) if suffix is not None else source.path
                text = snap.read_text(path)
                if text is not None:
                    files.append(path)
                    found.extend(parse_binding_file(path, text))
    return (found if looked else None), files


def read_readiness(snap: Snapshot, facts: HostFacts) -> None:
    lspci = snap.command(spec.LSPCI_VERBOSE.line)
    readiness = ReadinessFacts()
    # Read everything first (each source names its path), then keep it only when this collection looked.
    for name in snap.listdir(spec.PCI_DEVICES.path) or []:
        address = facts.pci_device(name).address if facts.pci and facts.pci_device(name) else None
        if address:
            readiness.devices[address] = _device(snap, name)
    if lspci is not None and (lspci.ok or lspci.stdout.strip()):
        readiness.lspci = parse_lspci_verbose(lspci.stdout)
    iomem = snap.read_text(spec.PROC_IOMEM.path)
    ranges = parse_iomem(iomem) if iomem is not None else None
    readiness.iomem = framebuffers_in_bars(ranges) if ranges is not None else None
    readiness.iomem_devices = ({a for a in map(normalize_pci_address, (r.name for r in ranges)) if a}
                               if ranges is not None else None)
    fbs = snap.listdir(spec.GRAPHICS_CLASS.path)
    if fbs is not None:
        readiness.framebuffers = {fb: snap.link_name(spec.FB_DEVICE.at(fb)) or "" for fb in fbs if fb.startswith("fb")}
    dmesg = snap.command(spec.DMESG.line)
    readiness.console_log = parse_console_log(dmesg.stdout) if dmesg is not None else None
    readiness.bindings, readiness.binding_files = _bindings(snap)
    facts.readiness = readiness if lspci is not None else None
