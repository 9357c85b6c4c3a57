"""Parts of the collection script run on their own, and a sysfs-like tree of links to run them on (the script's tests,
bench/collection_links.py)."""
from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Optional

from vfio_certify.collect import spec
from vfio_certify.collect.script import render_script


def shell_functions(*names: str, script: Optional[str] = None) -> str:
    """The named shell functions of the rendered script."""
    script = script or render_script()
    found = []
    for name in names:
        start = end = script.index(f"\n{name}() {{") + 1
        depth = None
        while depth != 0:  # to the end of the line where its braces balance (${...} balances too)
            line_end = script.index("\n", end) + 1
            depth = (depth or 0) + script.count("{", end, line_end) - script.count("}", end, line_end)
            end = line_end
        found.append(script[start:end])
    return "".join(found)


def sysfs_links(src: Path, functions: int = 40) -> dict[str, str]:
    """Under src, a sysfs-like tree of links as the kernel writes them (long relative targets): a driver and a group
    link for each of `functions` PCI functions, an SR-IOV pair, a NIC, a USB disk whose name holds a space and a glob,
    and two plain files named like links. Returns each link's path (relative to src) and what a bundle keeps of it:
    its glob's prefix (spec.LINKS) and the target's last component."""
    links = {}
    for n in range(functions):
        bdf = f"0000:{n // 256 + 1:02x}:{n // 8 % 32:02x}.{n % 8}"
        links[f"sys/bus/pci/devices/{bdf}/driver"] = "../../../bus/pci/drivers/igb"
        links[f"sys/bus/pci/devices/{bdf}/iommu_group"] = f"../../../../kernel/iommu_groups/{n + 10}"
    links["sys/bus/pci/devices/0000:01:01.1/physfn"] = "../0000:01:01.0"
    links["sys/bus/pci/devices/0000:01:01.0/virtfn0"] = "../0000:01:01.1"
    links["sys/bus/pci/devices/0000:02:00.0/driver"] = "vfio-pci"  # a target without a folder
    links["sys/class/net/eth0/device"] = "../../../0000:01:01.0"
    links["sys/bus/usb/devices/1-1 [x]/driver"] = "../../../../bus/usb/drivers/usb-storage"
    for path, target in links.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, src / path)
    (src / "sys/bus/pci/devices/0000:06:00.0").mkdir(parents=True)
    (src / "sys/bus/pci/devices/0000:06:00.0/driver.txt").write_text("not a link\n")
    (src / "sys/bus/pci/devices/0000:07:00.0").mkdir(parents=True)
    (src / "sys/bus/pci/devices/0000:07:00.0/driver").write_text("a plain file where a link would be\n")
    kept = {}
    for path, target in links.items():
        [link] = [s for s in spec.LINKS if fnmatchcase("/" + path, s.path)]
        kept[path] = link.target_prefix + target.rsplit("/", 1)[-1]
    return kept


def links_body(src: Path, out: Path, work: Path) -> str:
    """A shell program that runs the script's two passes of vc_links over src's links (spec.LINKS under src), making
    them under out, its lists in work."""
    words = " ".join(f"{link.target_prefix} '{src}{link.path}'" for link in spec.LINKS)
    return (f"NL='\n'; _IFS=$IFS; R='{out}'; T='{work}'; _D=\n{shell_functions('vc_md', 'vc_links')}"
            f"for _P in 1 2; do set -f; vc_links {words}; [ $_P = 2 ] || vc_md \"$_D\"; done\n")
