"""The lab guest's image (also nested L2's), and the USB disk it reads back.

The guest is :mod:`initramfs`'s busybox + dropbear base with the drivers of the
hot-plugged devices (e1000e, xhci + usb-storage, ext4 for the disk's ext2) and
virtio for its management NIC and entropy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from . import tools
from .initramfs import GuestImage, ImageRecipe, build_image

# Modules the guest loads at boot, in this order (dependencies are resolved
# from modules.dep and loaded first).
GUEST_MODULES: Tuple[str, ...] = (
    "virtio_pci",      # management NIC transport
    "virtio_net",      # management NIC (virtio-net-pci, added by qemu:commandline)
    "virtio_rng",      # entropy (virtio-rng): dropbear needs an initialised crng
    "e1000e",          # the hot-plugged NIC (8086:10d3)
    "xhci_pci",        # qemu-xhci controller (and xhci_hcd, usbcore)
    "usb_storage",     # the hot-plugged USB disk (46f4:0001)
    "sd_mod",          # ... as /dev/sdX
    "ext4",            # ext2 filesystem on it (CONFIG_EXT4_USE_FOR_EXT2)
    "crc32c_generic",
)

GUEST_RECIPE = ImageRecipe(prefix="image", hostname="lab-guest", tag="lab-init", modules=GUEST_MODULES)


def build_guest_image(cache_root: Optional[os.PathLike] = None,
                      kernel: Optional[str] = None,
                      force: bool = False) -> GuestImage:
    """Build the guest image, or reuse the cached one for identical inputs."""
    return build_image(GUEST_RECIPE, cache_root, kernel, force)


# --------------------------------------------------------------------------
# the USB disk stand-in

KNOWN_FILE_NAME = "vfio-certify-known.txt"


@dataclasses.dataclass
class DiskImage:
    path: Path
    known_file: str        # path of the known file inside the filesystem
    sha256: str            # its checksum
    size_bytes: int


def build_usb_disk(directory: os.PathLike, size_mib: int = 8) -> DiskImage:
    """A raw ext2 image holding one known file, made with ``mke2fs -d`` (no
    loop mount, no root needed). Reused if already there with the same file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    content = (b"vfio-certify lab USB disk\n" +
               b"".join(b"line %04d: the quick brown fox\n" % i for i in range(200)))
    digest = hashlib.sha256(content).hexdigest()
    path = directory / f"usb-disk-{digest[:12]}.raw"
    if not path.is_file():
        src = Path(tempfile.mkdtemp(prefix="usb-src-", dir=directory))
        tmp_img = src.with_suffix(".raw.tmp")
        try:
            (src / KNOWN_FILE_NAME).write_bytes(content)
            with open(tmp_img, "wb") as f:
                f.truncate(size_mib << 20)
            subprocess.run([tools.require("mke2fs"), "-q", "-F", "-t", "ext2",
                            "-L", "LABUSB", "-d", str(src), str(tmp_img)],
                           check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
            os.rename(tmp_img, path)
        finally:
            shutil.rmtree(src, ignore_errors=True)
            if tmp_img.exists():
                tmp_img.unlink()
    return DiskImage(path=path, known_file=KNOWN_FILE_NAME, sha256=digest,
                     size_bytes=path.stat().st_size)
