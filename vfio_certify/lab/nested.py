"""The nested lab: a real VT-d host (L1) that assigns real (emulated) PCI and USB
devices with ``<hostdev>`` to its own guest (L2).

By level: L0 is this module's orchestration (NestedLab: its daemons, the ssh_config,
start, the restart with L2 under TCG, teardown); L1 is nested_l1.py (with its
image in nested_image.py); L2 is nested_l2.py.

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
from pathlib import Path
from typing import Dict, List, Optional

from ..e2e.guest import GuestError
from ..e2e.undo import UndoJournal
from . import guest_image, nested_image, tools
from .base import LabBase
from .guest import ssh_client_options
from .nested_l1 import (L1_NIC_ADDRESS, L1_USUAL_BOOT_S, SHARE_MOUNT_CANDIDATES, USB_SERIAL, USB_VENDOR_PRODUCT, L1Guest,
                        NestedLabError, write_share)
from .nested_l2 import L2_KVM_SSH_TIMEOUT_S, L2_MAX_SLOWDOWN, L2_TCG_SSH_TIMEOUT_S, L2Guest, choose_virt_type


def _ssh_config_text(workdir: Path, known_hosts: Path, keys: List[Path],
                     hosts: Dict[str, int]) -> str:
    out = []
    for alias, port in hosts.items():
        out.append(f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n"
                   f"    ControlPath {workdir / ('ssh-ctl-' + alias)}\n    ControlMaster no\n")
    out.append("Host *\n" + ssh_client_options(keys, known_hosts))
    return "\n".join(out)


class NestedLab(LabBase):
    """L0 daemons + L1 (a VT-d host running libvirtd) + L2 (a running guest of
    L1 without the devices to assign). A context manager; :meth:`close` is
    always safe to call."""

    WORKDIR_PREFIX = "vfio-certify-nested-"

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
        super().__init__(cache_root, workdir, keep_workdir)
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
        self.l0_conn = None
        self.l1_journal = UndoJournal()       # L1 domain, its ssh master and libvirt connection
        self.l2_journal = UndoJournal()       # L2 domain, its ssh master, hot-plugs
        self.l1_image = self.l2_image = None
        self.disk: Optional[guest_image.DiskImage] = None
        self.l1: Optional[L1Guest] = None
        self.l2: Optional[L2Guest] = None
        self.nic_driver = ""        # the NIC's driver in L1 before assignment (e1000e)
        self.usb_bus_device = ""    # the USB disk in L1 as bus.device ("002.002")

    def journals(self) -> List[UndoJournal]:
        """L2 (and any hot-plug still attached), L1, L0's daemons -- in that order."""
        return [self.l2_journal, self.l1_journal, self.journal]

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

    @property
    def l1_conn(self):
        """The connection to L1's libvirtd (None until it answered)."""
        return self.l1.libvirt_conn if self.l1 else None

    def l1_log_tail(self, name: str = "libvirtd.log", lines: int = 30) -> str:
        return self.l1.log_tail(name, lines) if self.l1 else f"(no L1, no {name})"

    def l1_report(self) -> Dict[str, object]:
        return self.l1.report()

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

    def _start(self) -> None:
        """Bring L0's daemons, L1 and L2 up. L2 runs under KVM in L1 when L1 offers it (about 3x faster to
        boot than TCG inside TCG); if that fails -- KVM on TCG's emulated SVM once wedged L1 -- everything is
        torn down and started again with L2 under TCG, and `fallbacks` says so."""
        try:
            self._start_once()
        except NestedLabError as exc:
            if self.l2_virt_type != "kvm" or self.l2_virt_type_wanted != "auto":
                raise
            self.fallbacks.append(f"L2 under KVM in L1 did not come up ({str(exc).splitlines()[0]}): "
                                  "the nested lab was started again with L2 under TCG")
            self._tear_down_for_restart()
            self.l2_virt_type_wanted = "qemu"
            self._start_once()

    def _tear_down_for_restart(self) -> None:
        self._undo_all()
        if self.teardown_errors:
            raise NestedLabError(f"could not tear the nested lab down to start it again: {self.teardown_errors[0]}")
        self.l1 = self.l2 = None
        self.l0_conn = None
        self.daemons = None
        self.ports = {}
        self.timings = {}

    def _start_once(self) -> None:
        t = time.monotonic()
        self.l2_image = guest_image.build_guest_image(self.cache_root)
        self.l1_image = nested_image.build_l1_image(self.cache_root)
        self.disk = guest_image.build_usb_disk(self.cache_root / "disks")
        self.timings["images_seconds"] = time.monotonic() - t
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        write_share(self.share_dir, self.share_mount, self.caps_cache)

        self._start_daemons("l0_daemons_seconds")
        self.l0_conn = self.daemons.connect(events=True)  # closed when the daemons stop

        self.l1 = L1Guest(self, self.l0_conn, self.l1_image, self.workdir / "l1",
                          self.l1_journal, self.l1_memory_mib, self.l1_vcpus)
        self.l1.boot(self.l1_ssh_timeout)
        self.timings["l1_boot_to_ssh_seconds"] = self.l1.boot_seconds
        self.nic_driver, self.usb_bus_device = self.l1.read_devices()

        t = time.monotonic()
        self.l1.connect_libvirt(self.libvirt_uri, self.l1_libvirt_timeout)
        self.timings["l1_libvirt_seconds"] = time.monotonic() - t

        if self.start_l2:
            self.start_l2_guest()

    def start_l2_guest(self) -> float:
        """Start L2 in L1's libvirtd and wait for its SSH; returns seconds
        from createXML to SSH. An L2 that dies or never answers is destroyed
        and started again (up to l2_attempts times; each failure is kept in
        l2_failures with its console); a dead L1 is never retried."""
        t = time.monotonic()
        virt_type = choose_virt_type(self.l1_conn, self.l2_virt_type_wanted, self.l1_journal)
        self.l2_virt_type = virt_type
        self.timings["l2_virt_type_probe_seconds"] = time.monotonic() - t
        # a slow L0 (other work on its cores) is not a stuck L2: its deadline stretches with L1's boot
        slowdown = min(L2_MAX_SLOWDOWN, max(1.0, self.l1.boot_seconds / L1_USUAL_BOOT_S))
        self.timings["l2_deadline_slowdown"] = slowdown
        timeout = self.l2_ssh_timeout or slowdown * (self.l2_kvm_ssh_timeout if virt_type == "kvm"
                                                     else L2_TCG_SSH_TIMEOUT_S)
        # under KVM a failure may have wedged L1: no retry here, start() starts over under TCG
        attempts = 1 if virt_type == "kvm" and self.l2_virt_type_wanted == "auto" else self.l2_attempts
        for attempt in range(1, attempts + 1):
            self.l2 = L2Guest(self, self.l1_conn, self.l2_image, self.l2_journal, self.l2_memory_mib)
            self.l2.virt_type, self.l2.slowdown = virt_type, slowdown
            try:
                self.l2.boot(timeout)
                break
            except GuestError as exc:
                console = self.l2.console_tail(60)
                self.l2_journal.undo_all()   # destroy this L2 (and its ssh master)
                if not self.l1.is_running() or attempt == attempts:
                    raise NestedLabError(
                        f"L2 ({virt_type}) did not come up (attempt {attempt}): {exc}\n"
                        f"--- L1 console ---\n{self.l1.console_tail(40)}") from exc
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
