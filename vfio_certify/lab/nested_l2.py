"""L2 of the nested lab: the lab guest (guest_image.py) as a persistent domain of L1's libvirtd,
the running VM that L1's devices are assigned to. See nested.py for the whole picture.

It runs under KVM in L1 (TCG's emulated SVM) when L1's libvirtd offers it, else under TCG
inside TCG: much slower to boot and to answer SSH.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from ..e2e.guest import GuestError
from . import templates
from .guest import LabGuest
from .nested_l1 import L1_GUEST_IP, L1_L2_SSH_PORT, NestedLabError

if TYPE_CHECKING:
    from .nested import NestedLab

L2_KVM_SSH_TIMEOUT_S = 90.0    # seen ~20 s; longer means KVM in L1 is stuck: start over under TCG
L2_TCG_SSH_TIMEOUT_S = 300.0   # seen 70-110 s
L2_MAX_SLOWDOWN = 3.0          # both deadlines stretch with L1's boot time, up to this many times


def choose_virt_type(l1_conn, wanted: str, journal) -> str:
    """'kvm' or 'qemu' as wanted; for 'auto', kvm when L1's libvirtd offers it."""
    import libvirt

    if wanted in ("qemu", "kvm"):
        return wanted
    if wanted != "auto":
        raise NestedLabError(f"l2_virt_type must be kvm, qemu or auto, not {wanted!r}")
    try:
        l1_conn.getDomainCapabilities(None, "x86_64", "q35", "kvm", 0)
        return "kvm"
    except libvirt.libvirtError as exc:
        journal.record("l2-virt-type", f"kvm not offered by L1's libvirtd: {exc}")
        return "qemu"


class L2Guest(LabGuest):
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
        self.slowdown = 1.0  # how much slower than usual L0 runs (NestedLab.start_l2_guest): attempts wait longer

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
            timeout = max(timeout, self.TCG_ATTEMPT_SECONDS * self.slowdown)
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
                             + self.lab.l1.log_tail()) from exc
        self.define_seconds = time.monotonic() - t0
        self.journal.record("domain-created", f"L2 {self.name} ({self.virt_type}) in L1"
                            f" ({self.define_seconds:.2f}s)")
        self.journal.push_undo("domain", f"destroy and undefine L2 {self.name}", self.destroy)
        self.wait_for_ssh(ssh_timeout, t0)
        self.boot_seconds = time.monotonic() - t0
        self.journal.record("ssh-answered", f"L2 {self.boot_seconds:.2f}s after start")
        self._start_master()
        return self.boot_seconds
