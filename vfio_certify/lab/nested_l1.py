"""L1 of the nested lab: a VT-d host (TCG q35 + Intel vIOMMU) running L0's libvirtd and QEMU.

See nested.py for the whole picture (L0, L1, L2). Here: L1's devices and addresses, its domain
XML, the share L0 writes for it (its libvirt configuration and l1-init.sh, the set-up its /init
runs every boot; nested_image.py builds that /init), and :class:`L1Guest`, which reads L1's
devices, reaches its libvirtd and reports what L1 is.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from . import templates, tools
from .base import LabError
from .daemons import write_libvirt_etc
from .guest import LabGuest, free_port
from .initramfs import GUEST_IP

if TYPE_CHECKING:
    from .nested import NestedLab

L1_NIC_SLOT = "0x03"
L1_NIC_ADDRESS = "0000:00:03.0"
L1_NIC_MAC = "52:54:00:e1:00:03"
L1_NIC_DRIVER = "e1000e"
USB_VENDOR_PRODUCT = "46f4:0001"
USB_SERIAL = "VFIOLAB0001"           # lab/hotplug.USB_SERIAL: the L2 probe matches it
L1_GUEST_IP = GUEST_IP               # L1's address on its management NIC
L1_LIBVIRT_PORT = 16509
L1_L2_SSH_PORT = 2222                # L2's hostfwd in L1 (on L1_GUEST_IP)
# transparent_hugepage=never: once, with KVM in L1 running L2, L1 wedged with khugepaged blocked
# (the run then fell back to L2 under TCG, see NestedLab.start)
L1_CMDLINE = templates.DEFAULT_CMDLINE + " intel_iommu=on transparent_hugepage=never"
L1_USUAL_BOOT_S = 20.0         # L1's boot to SSH on an idle L0 (seen 8-10 s); slower says how busy L0 is
L1_LIBVIRT_KEEPALIVE = (5, 3)  # a wedged L1 fails libvirt calls after ~20 s instead of hanging them
# Where the share is mounted inside L1's chroot: a directory that exists on L0
# (the chroot's root is L0's, read-only) and that nothing in the chroot needs.
SHARE_MOUNT_CANDIDATES = ("/srv", "/mnt", "/media", "/opt")


class NestedLabError(LabError):
    pass


L1_INIT = r"""#!/bin/sh
# L1 setup for this run (written by vfio_certify/lab/nested.py, run by L1's /init)
KREL=$(uname -r)
H=/hostroot
ok=1
run() { "$@" || { echo "l1-init: FAILED: $*"; ok=0; }; }
echo "l1-init: the static checks' view of this host"
mkdir -p /lib/modules/$KREL /boot
run mount --bind $H/lib/modules/$KREL /lib/modules/$KREL
run mount --bind $H/boot /boot
: > /etc/os-release
run mount --bind $H/etc/os-release /etc/os-release
echo "l1-init: chroot $H for libvirtd"
for d in dev proc sys; do run mount --rbind /$d $H/$d; done
for d in tmp run var/lib/libvirt etc/libvirt; do
    run mount -t tmpfs -o mode=0755 tmpfs $H/$d
done
chmod 1777 $H/tmp
run cp /lab/etc-libvirt/libvirtd.conf /lab/etc-libvirt/virtlogd.conf /lab/etc-libvirt/qemu.conf $H/etc/libvirt/
mkdir -p /lab/log/qemu
run mount --bind /lab @SHARE_MOUNT@
run mount --bind /lab/log $H/var/log/libvirt
run mount --bind /lab/libvirt-cache $H/var/cache/libvirt
echo "l1-init: mounts ok=$ok"
(
    chroot $H /usr/sbin/virtlogd -d -f /etc/libvirt/virtlogd.conf && echo "virtlogd started"
    chroot $H /usr/sbin/libvirtd -d --listen -f /etc/libvirt/libvirtd.conf && echo "libvirtd started"
) > /lab/log/daemons-start.log 2>&1 &
exit 0
"""



def write_share(share: Path, share_mount: str, caps_cache: Path) -> None:
    """What L1 reads from L0 at boot: its libvirt configuration, l1-init.sh, the folders its
    libvirtd logs and caches into (QEMU's capabilities, kept between runs in caps_cache), and L2's."""
    if not share_mount:
        raise NestedLabError(f"none of {', '.join(SHARE_MOUNT_CANDIDATES)} exists on this "
                             "machine: L1's chroot needs one to mount the lab share on")
    (share / "log" / "qemu").mkdir(parents=True, exist_ok=True)
    (share / "l2").mkdir(parents=True, exist_ok=True)
    (share / "libvirt-cache").mkdir(parents=True, exist_ok=True)
    if caps_cache.is_dir():
        shutil.copytree(caps_cache, share / "libvirt-cache", dirs_exist_ok=True)
    write_libvirt_etc(share / "etc-libvirt", tcp_port=L1_LIBVIRT_PORT)
    init = share / "l1-init.sh"
    init.write_text(L1_INIT.replace("@SHARE_MOUNT@", "$H" + share_mount))
    os.chmod(init, 0o755)


def l1_domain_xml(*, name: str, kernel: os.PathLike, initrd: os.PathLike,
                  usb_disk: os.PathLike, share_dir: os.PathLike, console_log: os.PathLike,
                  ssh_port: int, libvirt_port: int, l2_ssh_port: int,
                  memory_mib: int = 2048, vcpus: int = 2, root_ports: int = 4,
                  cmdline: str = L1_CMDLINE, cpu_model: str = "", cpu_features=(),
                  uuid: Optional[str] = None) -> str:
    """L1's domain XML (fixtures/lab/nested_l1.xml.j2)."""
    return templates.render(
        "nested_l1.xml.j2", name=name, uuid=uuid or str(uuidlib.uuid4()),
        kernel=str(kernel), initrd=str(initrd), cmdline=cmdline,
        memory_mib=int(memory_mib), vcpus=int(vcpus),
        cpu_model=cpu_model, cpu_features=list(cpu_features),
        emulator=tools.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64",
        root_ports=int(root_ports), usb_disk=str(usb_disk), usb_serial=USB_SERIAL,
        share_dir=str(share_dir), console_log=str(console_log),
        rng_slot="0x11", mgmt_slot="0x10", mgmt_mac="52:54:00:c0:ff:11",
        guest_net="10.0.2.0/24", ssh_port=int(ssh_port),
        libvirt_port=int(libvirt_port), l1_libvirt_port=L1_LIBVIRT_PORT,
        l2_ssh_port=int(l2_ssh_port), l1_l2_ssh_port=L1_L2_SSH_PORT,
        nic_slot=L1_NIC_SLOT, nic_mac=L1_NIC_MAC)


class L1Guest(LabGuest):
    HOST = "lab-l1"

    def __init__(self, lab: "NestedLab", conn, image, workdir, journal, memory_mib, vcpus):
        super().__init__(conn, image, workdir, journal=journal,
                         name=f"vfio-certify-nested-l1-{os.getpid()}",
                         memory_mib=memory_mib, vcpus=vcpus, root_ports=4,
                         cmdline=L1_CMDLINE)
        self.lab = lab
        self.ssh_config = lab.ssh_config
        self.control_path = lab.workdir / "ssh-ctl-lab-l1"
        self.libvirt_conn = None

    def _write_ssh_config(self) -> None:
        self.lab._write_ssh_config()  # one ssh_config for L1 and L2

    def domain_xml(self, ssh_port: int) -> str:
        lab = self.lab
        lab.ports["l1_ssh"] = ssh_port
        lab.ports["l1_libvirt"] = free_port()
        lab.ports["l2_ssh"] = free_port()
        return l1_domain_xml(
            name=self.name, kernel=self.image.kernel, initrd=self.image.initrd,
            cmdline=self.cmdline, memory_mib=self.memory_mib, vcpus=self.vcpus,
            cpu_model=lab.l1_cpu_model, cpu_features=lab.l1_cpu_features,
            root_ports=self.root_ports, usb_disk=lab.disk.path, share_dir=lab.share_dir,
            console_log=self.console_log, ssh_port=ssh_port,
            libvirt_port=lab.ports["l1_libvirt"], l2_ssh_port=lab.ports["l2_ssh"])

    def log_tail(self, name: str = "libvirtd.log", lines: int = 30) -> str:
        """Tail of a log L1 writes into the share (libvirtd.log, virtlogd.log,
        daemons-start.log, qemu/<domain>.log)."""
        try:
            text = (self.lab.share_dir / "log" / name).read_text(errors="replace")
        except OSError:
            return f"(no {name} in the share)"
        return f"--- L1 {name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def read_devices(self, timeout: float = 20.0) -> tuple[str, str]:
        """(the NIC's driver, the USB disk's bus.device) in L1, polled: USB enumeration may finish
        after SSH is up."""
        deadline = time.monotonic() + timeout
        while True:
            out = self._devices()
            nic_driver = out[0] if out else "none"
            usb = out[1:]
            if (nic_driver == L1_NIC_DRIVER and len(usb) == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if nic_driver != L1_NIC_DRIVER or len(usb) != 1:
            raise NestedLabError(
                f"L1 does not show its devices as expected: {L1_NIC_ADDRESS} driver "
                f"{nic_driver} (want {L1_NIC_DRIVER}), {USB_VENDOR_PRODUCT} at {usb or 'nowhere'}"
                "\n" + self.run("cat /run/lab-modules.log", check=False).stdout)
        return nic_driver, usb[0]

    def _devices(self) -> List[str]:
        return self.run(
            "basename $(readlink /sys/bus/pci/devices/%s/driver) 2>/dev/null || echo none; "
            "for u in /sys/bus/usb/devices/*; do [ -f $u/idVendor ] || continue; "
            "[ \"$(cat $u/idVendor):$(cat $u/idProduct)\" = %s ] && "
            "printf '%%03d.%%03d\\n' $(cat $u/busnum) $(cat $u/devnum); done; true"
            % (L1_NIC_ADDRESS, USB_VENDOR_PRODUCT), timeout=30).stdout.split()

    def connect_libvirt(self, uri: str, timeout: float):
        """A connection to L1's libvirtd (its undo closes it), once it answers."""
        import libvirt

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise NestedLabError("L1 stopped while waiting for its libvirtd\n"
                                     + self._console_report())
            try:
                conn = libvirt.open(uri)
                conn.getLibVersion()
                conn.setKeepAlive(*L1_LIBVIRT_KEEPALIVE)  # the event loop thread runs it (ensure_event_loop)
                self.libvirt_conn = conn
                self.journal.push_undo("l1-conn", "close the L1 libvirt connection", self._close_libvirt)
                return conn
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.5)
        raise NestedLabError(
            f"L1's libvirtd did not answer on {uri} within {timeout:.0f}s: {last}\n"
            + self.log_tail("daemons-start.log") + "\n" + self.log_tail()
            + "\n" + self.run("cat /run/lab-l1-init.log", check=False).stdout)

    def _close_libvirt(self) -> None:
        from .base import close_quietly

        close_quietly(self.libvirt_conn)
        self.libvirt_conn = None

    def report(self) -> Dict[str, object]:
        """What L1 is, read over SSH: module loads (with kvm_amd's fate),
        /dev/kvm, /dev/vfio, CPU flags, the IOMMU groups."""
        out = self.run(
            "echo \"modules-failed $(grep -c ^FAILED /run/lab-modules.log)\"; "
            "grep ^FAILED /run/lab-modules.log; "
            "[ -c /dev/kvm ] && echo kvm yes || echo kvm no; "
            "echo \"vfio $(ls /dev/vfio | tr '\\n' ' ')\"; "
            "echo \"cpu $(grep -o -w -E 'svm|vmx|hypervisor' /proc/cpuinfo | sort -u | tr '\\n' ' ')\"; "
            "echo \"groups $(ls /sys/kernel/iommu_groups | wc -l)\"; "
            "echo \"nic-group $(basename $(readlink /sys/bus/pci/devices/%s/iommu_group))\"; "
            "echo \"nic-driver $(basename $(readlink /sys/bus/pci/devices/%s/driver))\"" % (
                L1_NIC_ADDRESS, L1_NIC_ADDRESS), timeout=30, check=False).stdout
        rep: Dict[str, object] = {"failed_modules": []}
        for line in out.splitlines():
            key, _, val = line.partition(" ")
            if key == "FAILED":
                rep["failed_modules"].append(val)
            elif key:
                rep[key] = val.strip()
        return rep
