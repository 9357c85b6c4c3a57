"""Device readiness: what decides whether a device survives being handed to a VM, and the next reboot.

Pure, forgiving parsers (text in, typed facts out, never an exception): `lspci -vvv` (FLReset, NoSoftRst,
link capability and status), /proc/iomem (which firmware framebuffer sits in which PCI BAR), the kernel
log lines that name the boot VGA device and the EFI framebuffer, and the files that bind a device to
vfio-pci at the next boot (modprobe.d, modules-load.d, driverctl, initramfs-tools, dracut).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from .dmesg import strip_prefix
from .pci import normalize_pci_address

# Firmware framebuffers that keep a GPU's BAR for the host console (drivers/firmware/sysfb*.c,
# drivers/video/fbdev/{efifb,simplefb,vesafb}.c, drivers/gpu/drm/tiny/simpledrm.c).
FIRMWARE_FRAMEBUFFERS = ("BOOTFB", "efifb", "simplefb", "simple-framebuffer", "simpledrm", "vesafb", "vesa-framebuffer")
# The kernel's reset methods, in the order it tries them (drivers/pci/pci.c pci_reset_fn_methods, 5.15+).
RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")


@dataclass
class LspciVerbose:
    """What `lspci -vvv` says of one function's reset and link capabilities (None: the line was not there)."""
    flreset: Optional[bool] = None  # DevCap: FLReset+/-
    af_flr: Optional[bool] = None  # Advanced Features: AFCap: ... FLR+/-
    nosoftrst: Optional[bool] = None  # Power Management: Status: ... NoSoftRst+/-
    lines: list[str] = field(default_factory=list)  # the lines quoted as evidence


_VERBOSE_HEAD = re.compile(r"^((?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s")
_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9 ]*):")


def _flag(name: str, line: str) -> Optional[bool]:
    match = re.search(rf"(?:^|\s){re.escape(name)}([+-])", line)
    return None if match is None else match.group(1) == "+"


def parse_lspci_verbose(text: str) -> dict[str, LspciVerbose]:
    """`lspci -vvv` (with or without -D) -> {address: LspciVerbose}."""
    found: dict[str, LspciVerbose] = {}
    current: Optional[LspciVerbose] = None
    section = key = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            match = _VERBOSE_HEAD.match(line)
            address = normalize_pci_address(match.group(1)) if match else None
            current = found.setdefault(address, LspciVerbose()) if address else None
            section = ""
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Capabilities:"):
            section = stripped
        head = _KEY.match(stripped)
        key = head.group(1) if head else key  # a line without a key continues the one above (DevCap's 2nd line)
        if key == "DevCap" and current.flreset is None and "FLReset" in stripped:
            current.flreset = _flag("FLReset", stripped)
            current.lines.append(stripped)
        elif key == "AFCap" and "FLR" in stripped:
            current.af_flr = _flag("FLR", stripped)
            current.lines.append(stripped)
        elif stripped.startswith("Status:") and "Power Management" in section and "NoSoftRst" in stripped:
            current.nosoftrst = _flag("NoSoftRst", stripped)
            current.lines.append(stripped)
    return found


@dataclass
class IomemRange:
    start: str
    end: str
    name: str
    depth: int


_IOMEM = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


def parse_iomem(text: str) -> list[IomemRange]:
    """/proc/iomem, each range with its nesting depth (two spaces a level). Read as non-root the addresses
    are all zero, yet the nesting, which is what says who holds a BAR, is still right."""
    ranges = []
    for line in text.splitlines():
        match = _IOMEM.match(line.rstrip("\r"))
        if match:
            ranges.append(IomemRange(match.group(2), match.group(3), match.group(4).strip(), len(match.group(1)) // 2))
    return ranges


def framebuffers_in_bars(ranges: list[IomemRange]) -> dict[str, list[str]]:
    """{PCI address: ['BOOTFB', 'simpledrm', ...]}: firmware framebuffers nested inside one of its BARs."""
    held: dict[str, list[str]] = {}
    owners: list[tuple[int, str]] = []  # (depth, PCI address) of the enclosing ranges
    for entry in ranges:
        while owners and owners[-1][0] >= entry.depth:
            owners.pop()
        address = normalize_pci_address(entry.name)
        if address:
            owners.append((entry.depth, address))
            continue
        if owners and any(entry.name.startswith(fb) for fb in FIRMWARE_FRAMEBUFFERS):
            line = f"{entry.start}-{entry.end} : {entry.name}"
            held.setdefault(owners[-1][1], []).append(line)
    return held


_BOOT_VGA = re.compile(r"^pci ([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]): vgaarb: setting as boot VGA device")
_EFIFB_BAR = re.compile(r"^pci ([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]): BAR \d+: assigned to efifb")
_CONSOLE_LINES = re.compile(r"^(efifb: framebuffer at|simple-framebuffer|simplefb: framebuffer at|vesafb: framebuffer at"
                            r"|\[drm\] Initialized simpledrm|fb\d+: (EFI VGA|simple|VESA VGA))")


@dataclass
class ConsoleLog:
    """The kernel log's word on the host console: the last boot VGA device, efifb's BAR, framebuffer lines."""
    boot_vga: str = ""  # the address vgaarb set last (a later "(overriding previous)" wins)
    efifb_bar: str = ""  # pci X: BAR n: assigned to efifb
    lines: list[str] = field(default_factory=list)


def parse_console_log(text: str) -> ConsoleLog:
    log = ConsoleLog()
    for raw in text.splitlines():
        message = strip_prefix(raw)
        match = _BOOT_VGA.match(message)
        if match:
            log.boot_vga = normalize_pci_address(match.group(1)) or ""
            log.lines.append(message[:300])
        match = _EFIFB_BAR.match(message)
        if match:
            log.efifb_bar = normalize_pci_address(match.group(1)) or ""
            log.lines.append(message[:300])
        elif _CONSOLE_LINES.match(message) and len(log.lines) < 12:
            log.lines.append(message[:300])
    return log


@dataclass
class BootBinding:
    """One way the next boot reaches vfio-pci (or loads a stale module), with the line that says so."""
    kind: str  # "ids" (vfio-pci ids=), "softdep", "driverctl", "initramfs", "load", "stale"
    source: str  # the file
    line: str
    ids: tuple[str, ...] = ()  # vendor:device ids (kind "ids")
    address: str = ""  # driverctl's PCI address
    driver: str = ""  # softdep's host driver, driverctl's override


_IDS = re.compile(r"(?:^|\s)ids=([0-9a-fA-F:,]+)")
_STALE_MODULES = ("vfio_virqfd",)  # merged into vfio in 6.2: listing it only prints a modprobe error


def parse_binding_file(path: str, text: str) -> list[BootBinding]:
    """modprobe.d, modules-load.d, /etc/modules, initramfs-tools/modules, dracut.conf.d and driverctl.d files."""
    found: list[BootBinding] = []
    name = path.rsplit("/", 1)[-1]
    if "/driverctl.d/" in path:  # file name pci-0000:07:00.1, content: the driver
        driver = text.strip().splitlines()[0].strip() if text.strip() else ""
        address = normalize_pci_address(name.split("-", 1)[-1]) or ""
        if address:
            found.append(BootBinding("driverctl", path, f"{name}: {driver}", address=address, driver=driver))
        return found
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        module = words[0].replace("-", "_") if words else ""
        if "/modprobe.d/" in path:
            if words[0] == "options" and len(words) > 2 and words[1].replace("-", "_") == "vfio_pci":
                ids = _IDS.search(" ".join(words[2:]))
                if ids:
                    found.append(BootBinding("ids", path, line, tuple(i.lower() for i in ids.group(1).split(",") if i)))
            elif words[0] == "softdep" and len(words) > 3 and "pre:" in words:
                after = words[words.index("pre:") + 1:]
                if any(w.replace("-", "_") == "vfio_pci" for w in after):
                    found.append(BootBinding("softdep", path, line, driver=words[1].replace("-", "_")))
            continue
        if "dracut.conf" in path:
            match = re.search(r"(force_drivers|add_drivers)\s*\+?=\s*\"([^\"]*)\"", line)
            if match and any(m.replace("-", "_") == "vfio_pci" for m in match.group(2).split()):
                found.append(BootBinding("initramfs", path, line))
            if match and any(m.replace("-", "_") in _STALE_MODULES for m in match.group(2).split()):
                found.append(BootBinding("stale", path, line))
            continue
        if module in _STALE_MODULES:
            found.append(BootBinding("stale", path, line))
        elif module == "vfio_pci":
            kind = "initramfs" if path.endswith("initramfs-tools/modules") else "load"
            found.append(BootBinding(kind, path, line))
            ids = _IDS.search(line)
            if ids:
                found.append(BootBinding("ids", path, line, tuple(i.lower() for i in ids.group(1).split(",") if i)))
    return found


def parse_cpulist(text: str) -> list[int]:
    """'0-7,16-23' -> [0..7, 16..23]; [] on anything else."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        try:
            cpus.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            return []
    return cpus
