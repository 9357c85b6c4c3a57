"""Boot the lab guest through the private libvirtd, reach it over SSH, run
commands in it, tear it all down.

:class:`Lab` is the whole thing as one context manager::

    with Lab() as lab:                      # daemons + image + boot + SSH
        print(lab.guest.run("uname -r").stdout)
    # guest destroyed, daemons stopped, ssh master closed -- also on errors

SSH goes to 127.0.0.1:<free port>, which QEMU user networking forwards to the
guest's dropbear (the domain's <qemu:commandline> hostfwd). The client is
OpenSSH with a generated ssh_config: the lab's ed25519 key, the guest's host
key pinned in a private known_hosts (StrictHostKeyChecking=yes, HostKeyAlias,
so the changing port doesn't matter) and a ControlMaster so each command
costs one channel, not one key exchange, on the slow TCG guest.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

from ..e2e.guest import DEAD_AFTER_S, GUEST_PATH, GuestError, Pace, measure_pace
from ..e2e.undo import UndoJournal
from . import guest_image, templates, tools
from .base import LabBase
from .initramfs import HOST_KEY_ALIAS, GuestImage


class SshTimeout(GuestError):
    pass


def _conn_alive(conn) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_client_options(keys: List[Path], known_hosts: Path) -> str:
    """The ssh_config options of every lab guest: root with the lab's own keys, the guest's host key
    pinned in a private known_hosts, never a password or an agent, a dead guest noticed in ~15 s."""
    return ("    User root\n" + "".join(f"    IdentityFile {k}\n" for k in keys) + f"""\
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


class LabGuest:
    """One transient domain booted from a :class:`GuestImage`."""

    HOST = "lab-guest"

    def __init__(self, conn, image: GuestImage, workdir: os.PathLike,
                 journal: Optional[UndoJournal] = None, name: Optional[str] = None,
                 memory_mib: int = 512, vcpus: int = 1, root_ports: int = 6,
                 cmdline: Optional[str] = None):
        self.conn = conn
        self.cmdline = cmdline or templates.DEFAULT_CMDLINE
        self.image = image
        self.workdir = Path(workdir)
        self.journal = journal or UndoJournal()
        self.name = name or f"vfio-certify-lab-{os.getpid()}"
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.root_ports = root_ports
        self.console_log = self.workdir / "console.log"
        self.ssh_config = self.workdir / "ssh_config"
        self.known_hosts = self.workdir / "known_hosts"
        self.control_path = self.workdir / "ssh-ctl"
        self.ssh_port: Optional[int] = None
        self.dom = None
        self.xml: Optional[str] = None
        self.boot_seconds: Optional[float] = None   # createXML -> SSH answered
        self.define_seconds: Optional[float] = None  # the createXML call itself
        self._master = False

    # -- XML / config --------------------------------------------------------
    def domain_xml(self, ssh_port: int) -> str:
        return templates.domain_xml(
            name=self.name, kernel=self.image.kernel, initrd=self.image.initrd,
            console_log=self.console_log, ssh_port=ssh_port,
            memory_mib=self.memory_mib, vcpus=self.vcpus,
            root_ports=self.root_ports, cmdline=self.cmdline)

    def _write_ssh_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.known_hosts.write_text(self.image.known_hosts_line())
        # ssh refuses a private key readable by others
        os.chmod(self.image.client_key, 0o600)
        self.ssh_config.write_text(
            f"Host {self.HOST}\n    HostName 127.0.0.1\n    Port {self.ssh_port}\n    HostKeyAlias {HOST_KEY_ALIAS}\n"
            f"    ControlPath {self.control_path}\n    ControlMaster no\n"
            + ssh_client_options([self.image.client_key], self.known_hosts))

    # -- boot ----------------------------------------------------------------
    def boot(self, ssh_timeout: float = 120.0) -> float:
        """Create the transient domain and wait for SSH; returns seconds from
        createXML to the first successful SSH command."""
        import libvirt

        self.workdir.mkdir(parents=True, exist_ok=True)
        last_exc = None
        for _attempt in range(3):  # a stolen hostfwd port fails createXML
            self.ssh_port = free_port()
            self.xml = self.domain_xml(self.ssh_port)
            (self.workdir / "domain.xml").write_text(self.xml)
            if self.console_log.exists():
                self.console_log.unlink()
            t0 = time.monotonic()
            try:
                self.dom = self.conn.createXML(self.xml, 0)
            except libvirt.libvirtError as exc:
                last_exc = exc
                if "hostfwd" in str(exc) or "Could not set up host forwarding" in str(exc):
                    continue
                raise GuestError(f"createXML failed: {exc}") from exc
            break
        else:
            raise GuestError(f"createXML failed 3 times: {last_exc}")
        self.define_seconds = time.monotonic() - t0
        self.journal.record("domain-created", f"{self.name} ssh=127.0.0.1:{self.ssh_port}"
                            f" ({self.define_seconds:.2f}s)")
        self.journal.push_undo("domain", f"destroy {self.name}", self.destroy)
        self._write_ssh_config()
        self.wait_for_ssh(ssh_timeout, t0)
        self.boot_seconds = time.monotonic() - t0
        self.journal.record("ssh-answered", f"{self.boot_seconds:.2f}s after start")
        self._start_master()
        return self.boot_seconds

    def is_running(self) -> bool:
        try:
            return bool(self.dom and self.dom.isActive())
        except Exception:
            return False

    # printed by the guest's /init right before busybox init starts dropbear
    READY_MARKER = "lab-init: starting busybox init"

    def wait_for_ssh(self, timeout: float, t0: Optional[float] = None) -> None:
        """Poll SSH until it answers. Attempts start once /init's marker is on
        the serial console (or after 20 s without it): before the guest's
        network is up, QEMU's slirp retransmits its SYN to the guest only
        after 1 s, 3 s, ... so an early attempt would stall for seconds.
        Each attempt is cut short at 2 s for the same reason."""
        t0 = t0 or time.monotonic()
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.is_running():
                raise GuestError("the guest stopped while waiting for SSH\n"
                                 + self._console_report())
            console = self.console_tail(200)
            if "Kernel panic" in console:
                raise GuestError("guest kernel panic\n" + self._console_report())
            if self.READY_MARKER not in console and time.monotonic() - t0 < 20:
                time.sleep(0.1)
                continue
            try:
                p = self._ssh(["true"], timeout=min(2.0, max(0.5, deadline - time.monotonic())),
                              master=False)
                if p.returncode == 0:
                    return
                last = (p.stderr or "").strip()
            except subprocess.TimeoutExpired:
                last = "ssh attempt timed out (2s)"
            time.sleep(0.1)
        if self.READY_MARKER not in self.console_tail(400):
            last = last or f"the guest's /init never printed {self.READY_MARKER!r}"
        raise SshTimeout(
            f"no SSH answer from the guest on 127.0.0.1:{self.ssh_port} within "
            f"{timeout:.0f}s (last ssh error: {last or '-'})\n" + self._console_report())

    def _start_master(self) -> None:
        p = subprocess.run(
            [tools.require("ssh"), "-F", str(self.ssh_config), "-o", "ControlMaster=yes",
             "-o", "ControlPersist=yes", "-N", "-f", self.HOST],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, timeout=30)
        self._master = p.returncode == 0
        if self._master:
            self.journal.record("ssh-master", f"ControlPath {self.control_path}")
            self.journal.push_undo("ssh-master", "close the ssh ControlMaster",
                                   self._stop_master)

    def _stop_master(self) -> None:
        if not self._master:
            return
        self._master = False
        pid = None
        chk = subprocess.run([tools.require("ssh"), "-F", str(self.ssh_config), "-O",
                              "check", self.HOST], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=10)
        if "pid=" in chk.stdout:
            try:
                pid = int(chk.stdout.split("pid=")[1].split(")")[0])
            except ValueError:
                pid = None
        subprocess.run([tools.require("ssh"), "-F", str(self.ssh_config), "-O",
                        "exit", self.HOST], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=10)
        if pid:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            break
                except OSError:
                    break
                time.sleep(0.05)
            else:
                if os.path.exists(f"/proc/{pid}"):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass

    # -- commands ------------------------------------------------------------
    def _ssh(self, argv: List[str], timeout: float, master: bool = True,
             input: Optional[str] = None) -> subprocess.CompletedProcess:
        # a new connection's banner and key exchange may take the whole attempt (ssh_config says 5 s)
        opts = [] if master else ["-o", "ControlPath=none", "-o", f"ConnectTimeout={max(1, math.ceil(timeout))}"]
        return subprocess.run(
            [tools.require("ssh"), "-F", str(self.ssh_config), *opts, self.HOST,
             "--", *argv],
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=timeout)

    def run(self, command: str, timeout: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command (busybox sh) in the guest as root."""
        full = f"export {GUEST_PATH}; {command}"
        began = time.monotonic()
        try:
            p = self._ssh([full], timeout=timeout)
            if p.returncode == 255 and timeout - (time.monotonic() - began) > 2:
                # ssh itself failed: once more, over a fresh connection (a guest just resumed from a
                # pause may drop the first one; the ControlMaster may have died with it)
                time.sleep(1)
                p = self._ssh([full], timeout=timeout - (time.monotonic() - began), master=False)
        except subprocess.TimeoutExpired as exc:
            raise GuestError(f"guest command timed out after {timeout}s: {command}\n"
                             + self._console_report()) from exc
        if p.returncode == 255:  # ssh itself failed twice: the guest stopped answering
            raise GuestError(f"ssh failed ({p.stderr.strip()}) running: {command}\n"
                             + self._console_report())
        if check and p.returncode != 0:
            raise GuestError(f"guest command failed (exit {p.returncode}): {command}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def measure_pace(self, dead_after_s: Optional[float] = None) -> Pace:
        """Time `true` over a new SSH connection (as a user's VM is reached), for up to dead_after_s."""
        return measure_pace(lambda left: self._ssh(["true"], timeout=left, master=False).returncode == 0,
                            dead_after_s or DEAD_AFTER_S)

    def testinfra_host(self):
        """A testinfra Host over the same ssh_config (pytest-testinfra)."""
        import testinfra

        return testinfra.get_host(f"ssh://{self.HOST}", ssh_config=str(self.ssh_config))

    # -- console ---------------------------------------------------------------
    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def _console_report(self, lines: int = 40) -> str:
        return (f"--- serial console tail ({self.console_log}) ---\n"
                f"{self.console_tail(lines) or '(empty)'}\n--- end of console ---")

    def live_xml(self) -> str:
        return self.dom.XMLDesc(0)

    # -- teardown --------------------------------------------------------------
    def destroy(self) -> None:
        """Destroy the (transient) domain; idempotent."""
        import libvirt

        self._stop_master()
        self.journal.discard_undo("ssh-master")
        if self.dom is None:
            return
        try:
            if self.dom.isActive():
                self.dom.destroy()
                self.journal.record("domain-destroyed", self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                pass
            elif not _conn_alive(self.conn):
                # libvirtd is gone (crashed or killed): QEMU is then stopped
                # with everything else in the lab's namespace by the daemons'
                # teardown, which checks that nothing survives.
                self.journal.record("domain-destroy-skipped",
                                    f"libvirt connection lost: {exc}", ok=False)
                self.dom = None
                return
            else:
                raise
        try:  # a persistent definition (not made by boot(), but be safe)
            self.dom.undefine()
        except libvirt.libvirtError:
            pass
        self.dom = None


class Lab(LabBase):
    """Daemons + guest image + booted guest, torn down on exit (always)."""

    def __init__(self, cache_root: Optional[os.PathLike] = None,
                 workdir: Optional[os.PathLike] = None, ssh_timeout: float = 120.0,
                 keep_workdir: Optional[bool] = None, memory_mib: int = 512,
                 cmdline: Optional[str] = None):
        super().__init__(cache_root, workdir, keep_workdir)
        self.cmdline = cmdline
        self.ssh_timeout = ssh_timeout
        self.memory_mib = memory_mib
        self.image: Optional[GuestImage] = None
        self.disk: Optional[guest_image.DiskImage] = None
        self.guest: Optional[LabGuest] = None
        self.conn = None

    def _start(self) -> None:
        t = time.monotonic()
        self.image = guest_image.build_guest_image(self.cache_root)
        self.timings["image_seconds"] = time.monotonic() - t
        self.journal.record("image", f"{self.image.directory} "
                            f"({'cached' if self.image.cached else 'built'})")
        self.disk = guest_image.build_usb_disk(self.cache_root / "disks")
        self._start_daemons("daemons_seconds")
        self.conn = self.daemons.connect(events=True)
        self.guest = LabGuest(self.conn, self.image, self.workdir / "guest",
                              journal=self.journal, memory_mib=self.memory_mib,
                              cmdline=self.cmdline)
        self.guest.boot(self.ssh_timeout)
        self.timings["boot_to_ssh_seconds"] = self.guest.boot_seconds
