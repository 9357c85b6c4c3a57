"""The nested lab: a real VT-d host (L1) that assigns real (emulated) PCI and USB
devices with ``<hostdev>`` to its own guest (L2).

::

    L0  this machine: the lab's private libvirtd (see daemons.py), QEMU/TCG
     |   127.0.0.1:P1 -> L1:22        SSH to L1
     |   127.0.0.1:P2 -> L1:16509     L1's libvirtd (qemu+tcp, auth none)
     |   127.0.0.1:P3 -> L1:2222      SSH to L2 (L2's hostfwd listens on L1's 10.0.2.15:2222)
     |
    L1  q35 + Intel vIOMMU (intremap, caching mode), intel_iommu=on; e1000e at
     |   0000:00:03.0 alone in its IOMMU group; qemu-xhci + usb-storage disk
     |   (46f4:0001, the lab's read-only ext2 image); a dual-function virtio-rng
     |   at 00:04.0/.1 sharing one group (the non-viable group the tests name);
     |   vfio, vfio_pci loaded.
     |   L0's root over 9p, read-only, at /hostroot; the run's share (L0:
     |   <work>/share) over 9p, writable, at /lab. /lab/l1-init.sh (written
     |   here) binds /boot, /lib/modules/$KREL, /etc/os-release from /hostroot
     |   so the static checks see a real host, then builds a chroot of
     |   /hostroot (its /dev /proc /sys bound in; tmpfs on /tmp /run
     |   /var/lib/libvirt /etc/libvirt; the share on /srv, which also holds
     |   /var/log/libvirt and /var/cache/libvirt) and starts L0's own
     |   virtlogd + libvirtd there (TCP listener, qemu.conf without security
     |   driver, cgroups or namespaces).
     |   kvm_amd loads in L1 (L1's CPU is qemu64, which has svm, and TCG
     |   emulates SVM), so L1 has /dev/kvm and L1's libvirtd offers
     |   <domain type='kvm'>. Not +npt: TCG's nested paging (QEMU 7.2) made
     |   L2 reset during boot and L1's kernel panic ("corrupted stack end
     |   detected inside scheduler" in the KVM vCPU thread) in 2 of 8 L2
     |   boots; without it 12 of 12 booted.
     |
    L2  the existing lab guest (guest_image.py: busybox + dropbear + e1000e,
         xhci, usb-storage modules), a persistent domain of L1's libvirtd (defined on L1's tmpfs):
         type 'kvm' when L1's libvirtd offers it (KVM in L1 on TCG's emulated
         SVM: ~3x faster to boot than TCG inside TCG), else 'qemu'; its
         console log lands in the share, where L0 reads it.

QEMU's capabilities, which L1's libvirtd probes on first use (~12 s under
TCG), are kept between runs in ``<cache>/nested-l1-libvirt-cache`` (copied
into the share before L1 boots, back after L2 started); libvirt re-probes by
itself when they do not match.

Everything is torn down on exit (also on failure and Ctrl-C): L2 destroyed
through L1's libvirtd, the libvirt connections closed, L1 destroyed, L0's
daemons stopped (they kill whatever is left in their namespace), ssh
ControlMasters closed. Nothing runs on L0 outside the lab's namespace except
those ssh masters, which are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Dict, List, Optional

from . import guest_image, nested_image, templates, tools
from ..e2e.connection import ensure_event_loop
from ..e2e.guest import GuestError
from ..e2e.undo import UndoJournal
from .daemons import QEMU_CONF, VIRTLOGD_CONF, LabDaemons
from .guest import LabGuest, free_port

L1_NIC_SLOT = "0x03"
L1_NIC_ADDRESS = "0000:00:03.0"
L1_NIC_MAC = "52:54:00:e1:00:03"
L1_NIC_DRIVER = "e1000e"
USB_VENDOR_PRODUCT = "46f4:0001"
USB_SERIAL = "VFIOLAB0001"           # lab/hotplug.USB_SERIAL: the L2 probe matches it
L1_GUEST_IP = guest_image.GUEST_IP   # L1's address on its management NIC
L1_LIBVIRT_PORT = 16509
L1_L2_SSH_PORT = 2222                # L2's hostfwd in L1 (on L1_GUEST_IP)
# transparent_hugepage=never: once, with KVM in L1 running L2, L1 wedged with khugepaged blocked
# (the run then fell back to L2 under TCG, see NestedLab.start)
L1_CMDLINE = templates.DEFAULT_CMDLINE + " intel_iommu=on transparent_hugepage=never"
L2_KVM_SSH_TIMEOUT_S = 90.0    # seen ~20 s; longer means KVM in L1 is stuck: start over under TCG
L2_TCG_SSH_TIMEOUT_S = 300.0   # seen 70-110 s
L1_LIBVIRT_KEEPALIVE = (5, 3)  # a wedged L1 fails libvirt calls after ~20 s instead of hanging them
# Where the share is mounted inside L1's chroot: a directory that exists on L0
# (the chroot's root is L0's, read-only) and that nothing in the chroot needs.
SHARE_MOUNT_CANDIDATES = ("/srv", "/mnt", "/media", "/opt")

L1_LIBVIRTD_CONF = """\
# vfio-certify nested lab, L1's libvirtd.conf (written by nested.py)
listen_tls = 0
listen_tcp = 1
listen_addr = "0.0.0.0"
tcp_port = "{port}"
auth_tcp = "none"
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

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


class NestedLabError(RuntimeError):
    pass


def _ssh_config_text(workdir: Path, known_hosts: Path, keys: List[Path],
                     hosts: Dict[str, int]) -> str:
    out = []
    for alias, port in hosts.items():
        out.append(f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n"
                   f"    ControlPath {workdir / ('ssh-ctl-' + alias)}\n    ControlMaster no\n")
    out.append("Host *\n    User root\n" + "".join(f"    IdentityFile {k}\n" for k in keys) + f"""\
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    BatchMode yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    ConnectTimeout 5
    ServerAliveInterval 5
    ServerAliveCountMax 3
    LogLevel ERROR
""")
    return "\n".join(out)


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


class _NestedGuestMixin:
    """Shared by L1 and L2: the combined ssh_config is written by NestedLab."""

    lab: "NestedLab"

    def _write_ssh_config(self) -> None:
        self.lab._write_ssh_config()


class L1Guest(_NestedGuestMixin, LabGuest):
    HOST = "lab-l1"

    def __init__(self, lab: "NestedLab", conn, image, workdir, journal, memory_mib, vcpus):
        super().__init__(conn, image, workdir, journal=journal,
                         name=f"vfio-certify-nested-l1-{os.getpid()}",
                         memory_mib=memory_mib, vcpus=vcpus, root_ports=4,
                         cmdline=L1_CMDLINE)
        self.lab = lab
        self.ssh_config = lab.ssh_config
        self.control_path = lab.workdir / "ssh-ctl-lab-l1"

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


class L2Guest(_NestedGuestMixin, LabGuest):
    """The lab guest as a persistent domain of L1's libvirtd."""

    HOST = "lab-l2"

    def __init__(self, lab: "NestedLab", conn, image, journal, memory_mib):
        super().__init__(conn, image, lab.share_dir / "l2", journal=journal,
                         name="vfio-certify-nested-l2", memory_mib=memory_mib)
        self.lab = lab
        self.ssh_config = lab.ssh_config
        self.control_path = lab.workdir / "ssh-ctl-lab-l2"
        self.l1_dir = f"{lab.share_mount}/l2"   # the same directory, as L1's chroot sees it
        self.virt_type = "qemu"

    def domain_xml(self, ssh_port: int) -> str:
        xml = templates.domain_xml(
            name=self.name, kernel=f"{self.l1_dir}/vmlinuz", initrd=f"{self.l1_dir}/initrd.gz",
            console_log=f"{self.l1_dir}/console.log", ssh_port=L1_L2_SSH_PORT,
            ssh_bind=L1_GUEST_IP, memory_mib=self.memory_mib, vcpus=self.vcpus,
            root_ports=self.root_ports, cmdline=self.cmdline,
            emulator="/usr/bin/qemu-system-x86_64")
        if self.virt_type != "qemu":
            xml = xml.replace("<domain type='qemu'", f"<domain type='{self.virt_type}'", 1)
        return xml

    # TCG inside TCG: dropbear's key exchange alone takes longer than the 2 s
    # LabGuest.wait_for_ssh gives each attempt (every cut-short attempt then
    # leaves a dropbear child behind, slowing the guest further).
    TCG_ATTEMPT_SECONDS = 30.0

    def _ssh(self, argv, timeout, master=True, input=None):
        if not master and self.virt_type == "qemu":
            timeout = max(timeout, self.TCG_ATTEMPT_SECONDS)
        return super()._ssh(argv, timeout, master=master, input=input)

    def boot(self, ssh_timeout: float = 300.0) -> float:
        import libvirt

        self.workdir.mkdir(parents=True, exist_ok=True)
        # copies, not links: L1 mounts the share writable, the image cache stays L0's
        shutil.copyfile(self.image.kernel, self.workdir / "vmlinuz")
        shutil.copyfile(self.image.initrd, self.workdir / "initrd.gz")
        self.ssh_port = self.lab.ports["l2_ssh"]
        self.xml = self.domain_xml(self.ssh_port)
        (self.workdir / "domain.xml").write_text(self.xml)
        if self.console_log.exists():
            self.console_log.unlink()
        t0 = time.monotonic()
        try:  # persistent (defined, then started), as a user's VM is: --persistent can be exercised on it
            self.dom = self.conn.defineXML(self.xml)
            self.dom.create()
        except libvirt.libvirtError as exc:
            if self.dom is not None:
                self.destroy()
            raise GuestError(f"defining or starting L2 in L1's libvirtd failed: {exc}\n"
                             + self.lab.l1_log_tail()) from exc
        self.define_seconds = time.monotonic() - t0
        self.journal.record("domain-created", f"L2 {self.name} ({self.virt_type}) in L1"
                            f" ({self.define_seconds:.2f}s)")
        self.journal.push_undo("domain", f"destroy and undefine L2 {self.name}", self.destroy)
        self.wait_for_ssh(ssh_timeout, t0)
        self.boot_seconds = time.monotonic() - t0
        self.journal.record("ssh-answered", f"L2 {self.boot_seconds:.2f}s after start")
        self._start_master()
        return self.boot_seconds


class NestedLab:
    """L0 daemons + L1 (a VT-d host running libvirtd) + L2 (a running guest of
    L1 without the devices to assign). A context manager; :meth:`close` is
    always safe to call."""

    def __init__(self, cache_root: Optional[os.PathLike] = None,
                 workdir: Optional[os.PathLike] = None,
                 l1_memory_mib: int = 2048, l1_vcpus: int = 2,
                 l2_memory_mib: int = 512,
                 l1_ssh_timeout: float = 120.0, l1_libvirt_timeout: float = 120.0,
                 l2_ssh_timeout: Optional[float] = None, start_l2: bool = True,
                 l2_attempts: int = 2,
                 keep_workdir: Optional[bool] = None,
                 l1_cpu_model: str = "qemu64", l1_cpu_features: tuple = ("svm",),
                 l2_virt_type: Optional[str] = None, l2_kvm_ssh_timeout: float = L2_KVM_SSH_TIMEOUT_S):
        self.cache_root = Path(cache_root) if cache_root else guest_image.default_cache_root()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(
            tempfile.mkdtemp(prefix="vfio-certify-nested-"))
        self.keep_workdir = (os.environ.get("VFIO_CERTIFY_LAB_KEEP") == "1"
                             if keep_workdir is None else keep_workdir)
        self.l1_memory_mib, self.l1_vcpus, self.l2_memory_mib = l1_memory_mib, l1_vcpus, l2_memory_mib
        self.l1_ssh_timeout, self.l1_libvirt_timeout = l1_ssh_timeout, l1_libvirt_timeout
        self.l2_ssh_timeout, self.start_l2 = l2_ssh_timeout, start_l2
        self.l2_attempts = max(1, l2_attempts)
        self.l2_failures: List[str] = []   # earlier L2 attempts that died (see start_l2_guest)
        self.fallbacks: List[str] = []     # the lab started again with L2 under TCG (see start)
        self.l1_cpu_model, self.l1_cpu_features = l1_cpu_model, list(l1_cpu_features)
        # "kvm", "qemu" or "auto" (kvm when L1's libvirtd offers it)
        self.l2_virt_type_wanted = (l2_virt_type or os.environ.get("VFIO_CERTIFY_NESTED_L2_VIRT")
                                    or "auto")
        self.l2_virt_type = ""
        self.l2_kvm_ssh_timeout = l2_kvm_ssh_timeout
        self.share_dir = self.workdir / "share"
        self.ssh_config = self.workdir / "ssh_config"
        self.known_hosts = self.workdir / "known_hosts"
        self.caps_cache = self.cache_root / "nested-l1-libvirt-cache"
        self.share_mount = next((d for d in SHARE_MOUNT_CANDIDATES if os.path.isdir(d)), "")
        self.ports: Dict[str, int] = {}
        self.journal = UndoJournal()          # L0 daemons
        self.l1_journal = UndoJournal()       # L1 domain + its ssh master
        self.l2_journal = UndoJournal()       # L2 domain, its ssh master, hot-plugs
        self.daemons: Optional[LabDaemons] = None
        self.l1_image = self.l2_image = None
        self.disk: Optional[guest_image.DiskImage] = None
        self.l0_conn = None
        self.l1_conn = None
        self.l1: Optional[L1Guest] = None
        self.l2: Optional[L2Guest] = None
        self.nic_driver = ""        # the NIC's driver in L1 before assignment (e1000e)
        self.usb_bus_device = ""    # the USB disk in L1 as bus.device ("002.002")
        self.timings: Dict[str, float] = {}
        self.teardown_errors: List[str] = []
        self.leftover_processes: Dict[int, str] = {}
        self.failed = False

    # -- the interface the end-to-end engine uses ------------------------------
    @property
    def l1_ssh_url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.ports['l1_ssh']}"

    @property
    def l2_ssh_url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.ports['l2_ssh']}"

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.ports['l1_libvirt']}/system"

    @property
    def domain(self) -> str:
        return self.l2.name if self.l2 else ""

    nic_address = L1_NIC_ADDRESS
    usb_vendor_product = USB_VENDOR_PRODUCT
    usb_serial = USB_SERIAL

    @property
    def disk_known_file(self) -> str:
        return self.disk.known_file

    @property
    def disk_sha256(self) -> str:
        return self.disk.sha256

    def l1_console_tail(self, lines: int = 40) -> str:
        return self.l1.console_tail(lines) if self.l1 else ""

    def l2_console_tail(self, lines: int = 40) -> str:
        return self.l2.console_tail(lines) if self.l2 else ""

    def l1_log_tail(self, name: str = "libvirtd.log", lines: int = 30) -> str:
        """Tail of a log L1 writes into the share (libvirtd.log, virtlogd.log,
        daemons-start.log, qemu/<domain>.log)."""
        try:
            text = (self.share_dir / "log" / name).read_text(errors="replace")
        except OSError:
            return f"(no {name} in the share)"
        return f"--- L1 {name} ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- setup -----------------------------------------------------------------
    def _write_ssh_config(self) -> None:
        hosts = {}
        lines = []
        if "l1_ssh" in self.ports:
            hosts["lab-l1"] = self.ports["l1_ssh"]
            lines.append(f"[127.0.0.1]:{self.ports['l1_ssh']} {self.l1_image.host_public_key}")
        if "l2_ssh" in self.ports:
            hosts["lab-l2"] = self.ports["l2_ssh"]
            lines.append(f"[127.0.0.1]:{self.ports['l2_ssh']} {self.l2_image.host_public_key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")
        keys = [self.l1_image.client_key, self.l2_image.client_key]
        for k in keys:
            os.chmod(k, 0o600)
        self.ssh_config.write_text(_ssh_config_text(self.workdir, self.known_hosts, keys, hosts))

    def _write_share(self) -> None:
        if not self.share_mount:
            raise NestedLabError(f"none of {', '.join(SHARE_MOUNT_CANDIDATES)} exists on this "
                                 "machine: L1's chroot needs one to mount the lab share on")
        share = self.share_dir
        (share / "etc-libvirt").mkdir(parents=True, exist_ok=True)
        (share / "log" / "qemu").mkdir(parents=True, exist_ok=True)
        (share / "l2").mkdir(parents=True, exist_ok=True)
        (share / "libvirt-cache").mkdir(parents=True, exist_ok=True)
        if self.caps_cache.is_dir():
            shutil.copytree(self.caps_cache, share / "libvirt-cache", dirs_exist_ok=True)
        (share / "etc-libvirt" / "libvirtd.conf").write_text(
            L1_LIBVIRTD_CONF.format(port=L1_LIBVIRT_PORT))
        (share / "etc-libvirt" / "virtlogd.conf").write_text(VIRTLOGD_CONF)
        (share / "etc-libvirt" / "qemu.conf").write_text(QEMU_CONF)
        init = share / "l1-init.sh"
        init.write_text(L1_INIT.replace("@SHARE_MOUNT@", "$H" + self.share_mount))
        os.chmod(init, 0o755)

    def start(self) -> "NestedLab":
        """Bring L0's daemons, L1 and L2 up. L2 runs under KVM in L1 when L1 offers it (about 3x faster to
        boot than TCG inside TCG); if that fails -- KVM on TCG's emulated SVM once wedged L1 -- everything is
        torn down and started again with L2 under TCG, and `fallbacks` says so."""
        try:
            try:
                self._start()
            except NestedLabError as exc:
                if self.l2_virt_type != "kvm" or self.l2_virt_type_wanted != "auto":
                    raise
                self.fallbacks.append(f"L2 under KVM in L1 did not come up ({str(exc).splitlines()[0]}): "
                                      "the nested lab was started again with L2 under TCG")
                self._tear_down_for_restart()
                self.l2_virt_type_wanted = "qemu"
                self._start()
        except BaseException:
            self.failed = True
            self.close()
            raise
        return self

    def _tear_down_for_restart(self) -> None:
        for j in (self.l2_journal, self.l1_journal, self.journal):
            self.teardown_errors += j.undo_all()
        if self.teardown_errors:
            raise NestedLabError(f"could not tear the nested lab down to start it again: {self.teardown_errors[0]}")
        self.l1 = self.l2 = None
        self.l1_conn = self.l0_conn = None
        self.daemons = None
        self.ports = {}
        self.timings = {}

    def _start(self) -> None:
        import libvirt

        t = time.monotonic()
        self.l2_image = guest_image.build_guest_image(self.cache_root)
        self.l1_image = nested_image.build_l1_image(self.cache_root)
        self.disk = guest_image.build_usb_disk(self.cache_root / "disks")
        self.timings["images_seconds"] = time.monotonic() - t
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self._write_share()

        t = time.monotonic()
        self.daemons = LabDaemons(self.workdir / "libvirt",
                                  cache_dir=self.cache_root / "libvirt-cache")
        self.journal.push_undo("daemons", "stop L0's virtlogd/libvirtd", self._stop_daemons)
        self.daemons.start()
        self.timings["l0_daemons_seconds"] = time.monotonic() - t
        ensure_event_loop()
        self.l0_conn = libvirt.open(self.daemons.uri)
        self.journal.push_undo("l0-conn", "close the L0 libvirt connection", self._close_l0_conn)

        self.l1 = L1Guest(self, self.l0_conn, self.l1_image, self.workdir / "l1",
                          self.l1_journal, self.l1_memory_mib, self.l1_vcpus)
        self.l1.boot(self.l1_ssh_timeout)
        self.timings["l1_boot_to_ssh_seconds"] = self.l1.boot_seconds
        self._read_l1_devices()

        t = time.monotonic()
        self._connect_l1_libvirt(self.l1_libvirt_timeout)
        self.timings["l1_libvirt_seconds"] = time.monotonic() - t

        if self.start_l2:
            self.start_l2_guest()

    def _read_l1_devices(self, timeout: float = 20.0) -> None:
        """The NIC's driver and the USB disk's bus.device in L1 (polled: USB
        enumeration may finish after SSH is up)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self._l1_devices()
            self.nic_driver = out[0] if out else "none"
            usb = out[1:]
            if (self.nic_driver == L1_NIC_DRIVER and len(usb) == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if self.nic_driver != L1_NIC_DRIVER or len(usb) != 1:
            raise NestedLabError(
                f"L1 does not show its devices as expected: {L1_NIC_ADDRESS} driver "
                f"{self.nic_driver} (want {L1_NIC_DRIVER}), {USB_VENDOR_PRODUCT} at {usb or 'nowhere'}"
                "\n" + self.l1.run("cat /run/lab-modules.log", check=False).stdout)
        self.usb_bus_device = usb[0]

    def _l1_devices(self) -> List[str]:
        return self.l1.run(
            "basename $(readlink /sys/bus/pci/devices/%s/driver) 2>/dev/null || echo none; "
            "for u in /sys/bus/usb/devices/*; do [ -f $u/idVendor ] || continue; "
            "[ \"$(cat $u/idVendor):$(cat $u/idProduct)\" = %s ] && "
            "printf '%%03d.%%03d\\n' $(cat $u/busnum) $(cat $u/devnum); done; true"
            % (L1_NIC_ADDRESS, USB_VENDOR_PRODUCT), timeout=30).stdout.split()

    def _connect_l1_libvirt(self, timeout: float) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.l1.is_running():
                raise NestedLabError("L1 stopped while waiting for its libvirtd\n"
                                     + self.l1._console_report())
            try:
                conn = libvirt.open(self.libvirt_uri)
                conn.getLibVersion()
                conn.setKeepAlive(*L1_LIBVIRT_KEEPALIVE)  # the event loop thread runs it (ensure_event_loop)
                self.l1_conn = conn
                self.l1_journal.push_undo("l1-conn", "close the L1 libvirt connection",
                                          self._close_l1_conn)
                return
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.5)
        raise NestedLabError(
            f"L1's libvirtd did not answer on {self.libvirt_uri} within {timeout:.0f}s: {last}\n"
            + self.l1_log_tail("daemons-start.log") + "\n" + self.l1_log_tail()
            + "\n" + self.l1.run("cat /run/lab-l1-init.log", check=False).stdout)

    def _choose_l2_virt_type(self) -> str:
        import libvirt

        wanted = self.l2_virt_type_wanted
        if wanted in ("qemu", "kvm"):
            return wanted
        if wanted != "auto":
            raise NestedLabError(f"l2_virt_type must be kvm, qemu or auto, not {wanted!r}")
        try:
            self.l1_conn.getDomainCapabilities(None, "x86_64", "q35", "kvm", 0)
            return "kvm"
        except libvirt.libvirtError as exc:
            self.l1_journal.record("l2-virt-type", f"kvm not offered by L1's libvirtd: {exc}")
            return "qemu"

    def start_l2_guest(self) -> float:
        """Start L2 in L1's libvirtd and wait for its SSH; returns seconds
        from createXML to SSH. An L2 that dies or never answers is destroyed
        and started again (up to l2_attempts times; each failure is kept in
        l2_failures with its console); a dead L1 is never retried."""
        t = time.monotonic()
        virt_type = self._choose_l2_virt_type()
        self.l2_virt_type = virt_type
        self.timings["l2_virt_type_probe_seconds"] = time.monotonic() - t
        timeout = self.l2_ssh_timeout or (self.l2_kvm_ssh_timeout if virt_type == "kvm" else L2_TCG_SSH_TIMEOUT_S)
        # under KVM a failure may have wedged L1: no retry here, start() starts over under TCG
        attempts = 1 if virt_type == "kvm" and self.l2_virt_type_wanted == "auto" else self.l2_attempts
        for attempt in range(1, attempts + 1):
            self.l2 = L2Guest(self, self.l1_conn, self.l2_image, self.l2_journal, self.l2_memory_mib)
            self.l2.virt_type = virt_type
            try:
                self.l2.boot(timeout)
                break
            except GuestError as exc:
                console = self.l2.console_tail(60)
                self.l2_journal.undo_all()   # destroy this L2 (and its ssh master)
                if not self.l1.is_running() or attempt == attempts:
                    raise NestedLabError(
                        f"L2 ({virt_type}) did not come up (attempt {attempt}): {exc}\n"
                        f"--- L1 console ---\n{self.l1_console_tail(40)}") from exc
                self.l2_failures.append(f"attempt {attempt}: {str(exc).splitlines()[0]}\n{console}")
                self.journal.record("l2-retry", f"attempt {attempt} failed: {str(exc).splitlines()[0]}",
                                    ok=False)
        self.timings["l2_attempts"] = attempt
        self.timings["l2_boot_to_ssh_seconds"] = self.l2.boot_seconds
        self.timings["l2_define_seconds"] = self.l2.define_seconds
        self.timings["l2_start_seconds"] = time.monotonic() - t
        self._save_caps_cache()
        return self.l2.boot_seconds

    def _save_caps_cache(self) -> None:
        """Keep what L1's libvirtd probed for the next run (best effort)."""
        src = self.share_dir / "libvirt-cache"
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".nested-caps-", dir=self.cache_root))
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if self.caps_cache.exists():
                shutil.rmtree(self.caps_cache, ignore_errors=True)
            os.rename(tmp, self.caps_cache)
        except OSError as exc:
            self.journal.record("caps-cache", f"not saved: {exc}", ok=False)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def l1_report(self) -> Dict[str, object]:
        """What L1 is, read over SSH: module loads (with kvm_amd's fate),
        /dev/kvm, /dev/vfio, CPU flags, the IOMMU groups."""
        out = self.l1.run(
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

    # -- teardown ----------------------------------------------------------------
    def _close_l1_conn(self) -> None:
        if self.l1_conn is not None:
            try:
                self.l1_conn.close()
            except Exception:
                pass
            self.l1_conn = None

    def _close_l0_conn(self) -> None:
        if self.l0_conn is not None:
            try:
                self.l0_conn.close()
            except Exception:
                pass
            self.l0_conn = None

    def _stop_daemons(self) -> None:
        if self.daemons is not None:
            self.leftover_processes = self.daemons.stop()
            if self.leftover_processes:
                raise NestedLabError(f"lab processes survived: {self.leftover_processes}")

    def close(self) -> None:
        """L2 (and any hot-plug still attached), L1, L0's daemons -- in that
        order; every undo runs even if an earlier one fails."""
        for j in (self.l2_journal, self.l1_journal, self.journal):
            self.teardown_errors += j.undo_all()
        if self.workdir.exists():
            (self.workdir / "journal.txt").write_text(
                "\n".join(j.text() for j in (self.journal, self.l1_journal, self.l2_journal)) + "\n")
        if self._own_workdir and not self.keep_workdir and not self.failed \
                and not self.teardown_errors:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "NestedLab":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.failed = True
        self.close()


def main(argv=None) -> int:
    """``python -m vfio_certify.lab.nested``: bring the nested lab up, print how
    to reach it (L1 and L2 over SSH, L1's libvirtd, the devices), keep it up
    until Ctrl-C (or --seconds), tear it down."""
    import argparse
    import json
    import signal
    import sys

    ap = argparse.ArgumentParser(prog="python -m vfio_certify.lab.nested")
    ap.add_argument("--seconds", type=float, default=0, help="stay up this long (default: until Ctrl-C)")
    ap.add_argument("--l2-virt", choices=("auto", "kvm", "qemu"), default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, consoles)")
    args = ap.parse_args(argv)
    reason = tools.unavailable_reason()
    if reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 77
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    lab = NestedLab(keep_workdir=args.keep or None, l2_virt_type=args.l2_virt)
    try:
        lab.start()
        print(json.dumps({
            "l1_ssh_url": lab.l1_ssh_url, "l2_ssh_url": lab.l2_ssh_url,
            "ssh_config": str(lab.ssh_config), "libvirt_uri": lab.libvirt_uri,
            "domain": lab.domain, "l2_virt_type": lab.l2_virt_type,
            "nic_address": lab.nic_address, "nic_driver": lab.nic_driver,
            "usb_vendor_product": lab.usb_vendor_product, "usb_bus_device": lab.usb_bus_device,
            "disk_known_file": lab.disk_known_file, "disk_sha256": lab.disk_sha256,
            "workdir": str(lab.workdir),
            "timings": {k: round(v, 3) for k, v in lab.timings.items()},
        }, indent=2), flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lab.close()
        left = lab.leftover_processes
        print(f"teardown: {'clean' if not (lab.teardown_errors or left) else (lab.teardown_errors, left)}",
              file=sys.stderr)
    return 0 if not (lab.teardown_errors or lab.leftover_processes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
