"""The lab's emulated stand-ins for the hot-plug flow, on the product's engine (e2e/hotplug.py).

The lab guest has no host device to take: an e1000e ``<interface type='user'>`` stands in for
a NIC, a ``<disk bus='usb'>`` for a USB disk. :class:`LabHotplugger` runs the engine's flow on
them: absent, attach, visible (NIC -- a PCI function 8086:10d3 bound to e1000e with a netdev
and that link in ``ip -o link``; disk -- a block device whose USB parent is 46f4:0001 with our
serial), the disk mounted READ-ONLY and the known file's sha256 read back, detach, gone.
"""

from __future__ import annotations

import time

from ..e2e.hotplug import MOUNT_POINT, HotplugError, HotplugResult, Hotplugger, Step, nic_probe, usb_disk_probe
from . import templates
from .guest_image import DiskImage

NIC_VENDOR, NIC_DEVICE = "8086", "10d3"      # QEMU e1000e = Intel 82574L
USB_VENDOR, USB_PRODUCT = "46f4", "0001"     # QEMU usb-storage
USB_SERIAL = "VFIOLAB0001"

NIC_PROBE = nic_probe(NIC_VENDOR, NIC_DEVICE, "@MAC@")  # the emulated stand-in fills in its MAC
USB_PROBE = usb_disk_probe(USB_VENDOR, USB_PRODUCT, USB_SERIAL)


class LabHotplugger(Hotplugger):
    """The engine, plus the two emulated flows of the lab guest."""

    def nic(self, mac: str = "52:54:00:e1:00:0e", alias: str = "ua-labnic0") -> HotplugResult:
        res = HotplugResult("nic", alias, templates.nic_xml(mac=mac, alias=alias))
        return self.run_device(res, NIC_PROBE.replace("@MAC@", mac))

    def usb_disk(self, disk: DiskImage, alias: str = "ua-labusbdisk0",
                 target: str = "sda") -> HotplugResult:
        res = HotplugResult("usb-disk", alias, templates.usb_disk_xml(
            source=disk.path, target=target, serial=USB_SERIAL, alias=alias,
            readonly=True))

        def prove(r: HotplugResult) -> None:
            t = time.monotonic()
            block = next((l.split()[1] for l in r.step("attach->visible").evidence
                          if l.startswith("block ") and f"serial={USB_SERIAL}" in l), None)
            if not block:
                raise HotplugError("no block device line in the evidence")
            script = (
                f"set -e; mkdir -p {MOUNT_POINT}; "
                f"mount -t ext2 -o ro /dev/{block} {MOUNT_POINT}; "
                f"trap 'umount {MOUNT_POINT}' EXIT; "
                f"grep ' {MOUNT_POINT} ' /proc/mounts; "
                f"echo \"blockdev-ro $(cat /sys/block/{block}/ro)\"; "
                f"sha256sum {MOUNT_POINT}/{disk.known_file}")
            p = self.guest.run(script, timeout=30, check=False)
            lines = [l for l in p.stdout.splitlines() if l.strip()]
            mount_line = next((l for l in lines if f" {MOUNT_POINT} " in l), "")
            opts = mount_line.split()[3].split(",") if len(mount_line.split()) > 3 else []
            sums = [l.split()[0] for l in lines if l.endswith(disk.known_file)]
            ok = (p.returncode == 0 and "ro" in opts and sums == [disk.sha256])
            detail = f"mounted ro={'ro' in opts}, sha256 {'matches' if sums == [disk.sha256] else 'MISMATCH'}"
            if p.stderr.strip():
                lines.append("stderr: " + p.stderr.strip())
            r.steps.append(Step("read-only-checksum", time.monotonic() - t, ok, lines, detail))
            # unmounted by the trap; make sure before detaching
            self.guest.run(f"! grep -q ' {MOUNT_POINT} ' /proc/mounts", check=False)
            if not ok:
                raise HotplugError(f"USB disk read-back failed: {detail}")

        return self.run_device(res, USB_PROBE, prove)
