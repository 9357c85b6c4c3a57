"""The L1 initramfs of the nested lab: the lab guest's busybox + dropbear base,
plus what a VT-d host (with L0's libvirt and QEMU over 9p) needs.

It differs from :mod:`guest_image`'s L2 image in three ways:

* more modules, loaded by /init in dependency order: 9p + 9pnet_virtio (L0's
  root, read-only, and the lab's writable share), vfio + vfio_iommu_type1 +
  vfio_pci (the VFIO stack; /dev/vfio/vfio appears when vfio loads), kvm +
  kvm_amd (tried: under TCG the CPU shows svm, whether KVM accepts the
  emulated SVM is reported, never faked);
* /init mounts L0's root at /hostroot (9p, tag ``hostroot``, read-only) and the
  lab's share at /lab (9p, tag ``labshare``, writable), then runs
  ``/lab/l1-init.sh`` -- written by :mod:`nested` for every run, so the setup
  of L1 (bind mounts for the static checks, the chroot, libvirtd) can change
  without rebuilding this image;
* its own SSH keys (client + dropbear host key), host name ``lab-l1``.

Both are :class:`initramfs.ImageRecipe` built from the one /init template; the image is
cached the same way, in ``<cache>/l1-image-<hash>/``.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from .guest_image import GUEST_MODULES
from .initramfs import GuestImage, ImageRecipe, build_image

L1_MODULES: Tuple[str, ...] = GUEST_MODULES + (
    "9pnet_virtio",    # transport for both 9p shares
    "9p",              # L0's root (/hostroot) and the lab share (/lab)
    "vfio",            # /dev/vfio/vfio
    "vfio_iommu_type1",
    "vfio_pci",
    "kvm",
    "kvm_amd",         # TCG's default CPU is AMD with svm; may refuse: reported
)

# L1's /init, once its management NIC is up: the two 9p shares, then this run's set-up.
L1_INIT_EXTRA = r"""mkdir -p /hostroot /lab
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /hostroot; then
    echo "lab-l1-init: L0 root on /hostroot (read-only)"
else
    echo "lab-l1-init: mounting the hostroot 9p share failed"
fi
if mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 labshare /lab; then
    if [ -x /lab/l1-init.sh ]; then
        echo "lab-l1-init: running /lab/l1-init.sh"
        /lab/l1-init.sh > /run/lab-l1-init.log 2>&1
        echo "lab-l1-init: /lab/l1-init.sh exit $?"
    fi
else
    echo "lab-l1-init: mounting the labshare 9p share failed"
fi
"""

L1_RECIPE = ImageRecipe(prefix="l1-image", hostname="lab-l1", tag="lab-l1-init", modules=L1_MODULES,
                        init_extra=L1_INIT_EXTRA, extra_dirs=("hostroot", "lab", "boot"))


def build_l1_image(cache_root: Optional[os.PathLike] = None,
                   kernel: Optional[str] = None, force: bool = False) -> GuestImage:
    """Build L1's image, or reuse the cached one for identical inputs."""
    return build_image(L1_RECIPE, cache_root, kernel, force)
