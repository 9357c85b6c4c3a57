"""A lab-private ``virtlogd`` + ``libvirtd``: no systemd, nothing in /etc touched.

Why a mount namespace and not the session daemon
------------------------------------------------
``libvirtd`` decides privileged ("system") versus session mode by its
effective uid alone: run as root it *always* reads
``/etc/libvirt/qemu.conf`` and keeps its sockets/state in ``/run/libvirt``,
``/var/lib/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt``.
``-f`` only replaces ``libvirtd.conf``; no option or environment variable moves
``qemu.conf`` for a root daemon, and the XDG_* variables are read only in
session mode, i.e. by a non-root daemon (which would need a second user that
root's files, /boot and the lab's images must then be shared with).

So the lab runs the ordinary root daemons inside a private mount namespace
(``unshare --mount --propagation private``) in which the work dir's own
directories are bind-mounted over exactly those paths::

    <work>/etc    -> /etc/libvirt        (libvirtd.conf, virtlogd.conf, qemu.conf)
    <work>/run    -> /run                (sockets, pid files, domain state)
    <work>/lib    -> /var/lib/libvirt
    <work>/log    -> /var/log/libvirt    (libvirtd.log, virtlogd.log, qemu/<dom>.log)
    <cache>/libvirt-cache -> /var/cache/libvirt   (QEMU capabilities: kept
                                                   between runs, saves the probe)

The mounts exist only in the namespace; the host's /etc, /run and /var are
never written, and a system libvirtd (if any) is not disturbed. Clients
outside connect through the socket's path in the work dir:
``qemu+unix:///system?socket=<work>/run/libvirt/libvirt-sock``.

The namespace is held by a small stdlib-only process, ``_nsholder.py``
(``unshare ... python3 _nsholder.py``), which does the bind mounts, runs
``virtlogd -d`` and ``libvirtd -d`` and then stays as their child subreaper
(they and the QEMU processes libvirtd daemonises are re-parented to it and
reaped there: PID 1 on this kind of machine reaps nothing). It runs in its own
session, so a terminal's Ctrl-C reaches only the test process (whose teardown
then stops things in order), and it has ``PR_SET_PDEATHSIG`` = SIGTERM, so if
the test process dies without a teardown (SIGKILL, crash) the holder still
stops everything.

The namespace also gives a precise notion of "the lab's processes": every
process whose ``/proc/<pid>/ns/mnt`` is the namespace (holder, virtlogd,
libvirtd, QEMU, helpers). Teardown terminates exactly those -- never by name:
libvirtd first, then virtlogd, then stragglers, SIGTERM then SIGKILL -- and
:meth:`LabDaemons.stop` reports any that survive.

qemu.conf (owned by the lab): ``security_driver = "none"`` (no AppArmor/SELinux
labelling), ``cgroup_controllers = [ ]`` (no systemd/cgroup management),
``namespaces = [ ]`` (no per-domain /dev namespace), QEMU runs as root with
``dynamic_ownership = 0`` and ``remember_owner = 0`` so the lab's files are
never chowned or xattr-tagged.
"""

from __future__ import annotations

import json
import os
import sys
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..e2e.connection import ensure_event_loop
from . import tools

QEMU_CONF = """\
# vfio-certify lab qemu.conf (lab-private; the host's /etc/libvirt is untouched)
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "logd"
"""

LIBVIRTD_CONF = """\
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

VIRTLOGD_CONF = """\
# vfio-certify lab virtlogd.conf
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""



def libvirtd_conf(tcp_port: Optional[int] = None) -> str:
    """The lab's libvirtd.conf: unix sockets for root only, no auth, a log file; with tcp_port also
    a plain TCP listener (nested L1's, which L0 reaches through a hostfwd)."""
    tcp = (f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "0.0.0.0"\ntcp_port = "{tcp_port}"\nauth_tcp = "none"\n'
           if tcp_port else "")
    return "# vfio-certify lab libvirtd.conf (written by vfio_certify/lab/daemons.py)\n" + tcp + LIBVIRTD_CONF


def write_libvirt_etc(directory: Path, qemu_conf_extra: str = "", tcp_port: Optional[int] = None) -> None:
    """The lab's /etc/libvirt: qemu.conf, libvirtd.conf and virtlogd.conf (L0's, and nested L1's)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "qemu.conf").write_text(QEMU_CONF + qemu_conf_extra)
    (directory / "libvirtd.conf").write_text(libvirtd_conf(tcp_port))
    (directory / "virtlogd.conf").write_text(VIRTLOGD_CONF)


# bind source (relative to work dir, or absolute) -> mount point in the namespace
_MOUNTS = (
    ("etc", "/etc/libvirt"),
    ("run", "/run"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
)
_CACHE_MOUNT = "/var/cache/libvirt"


class DaemonError(RuntimeError):
    pass


def _ns_of(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


class LabDaemons:
    """Start/stop the private daemons. Use as a context manager, or call
    :meth:`start` and (always) :meth:`stop`."""

    def __init__(self, workdir: Optional[os.PathLike] = None,
                 cache_dir: Optional[os.PathLike] = None,
                 qemu_conf_extra: str = ""):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(
            tempfile.mkdtemp(prefix="vfio-certify-lab-"))
        self.cache_dir = Path(cache_dir) if cache_dir else self.workdir / "cache"
        self.qemu_conf_extra = qemu_conf_extra
        self.namespace: Optional[str] = None
        self.pids: Dict[str, int] = {}
        self.start_seconds: Optional[float] = None
        self._conns: List = []

    # -- paths ---------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def socket(self) -> Path:
        return self.run_dir / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def log_tail(self, name: str = "libvirtd.log", lines: int = 30) -> str:
        try:
            text = (self.log_dir / name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "LabDaemons":
        t0 = time.monotonic()
        unshare = tools.require("unshare")
        for target in ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt",
                       _CACHE_MOUNT):
            if not os.path.isdir(target):
                raise DaemonError(
                    f"{target} missing: needs libvirt-daemon-system "
                    "(scripts/setup.sh installs it)")
        for sub, _ in _MOUNTS:
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "qemu").mkdir(exist_ok=True)
        write_libvirt_etc(self.workdir / "etc", self.qemu_conf_extra)

        mounts = [(str(self.workdir / sub), dst) for sub, dst in _MOUNTS]
        mounts.append((str(self.cache_dir), _CACHE_MOUNT))
        spec = {
            "parent": os.getpid(), "host_ns": _ns_of(os.getpid()),
            "mounts": mounts, "mount": tools.require("mount"),
            "virtlogd": tools.require("virtlogd"),
            "libvirtd": tools.require("libvirtd"), "grace": 5.0,
        }
        spec_path = self.workdir / "nsholder.json"
        spec_path.write_text(json.dumps(spec))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
               "HOME": str(self.workdir)}
        self._holder_log = open(self.log_dir / "nsholder.log", "ab")
        self._holder = subprocess.Popen(
            [unshare, "--mount", "--propagation", "private", sys.executable,
             "-I", str(Path(__file__).with_name("_nsholder.py")), str(spec_path)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._holder_log, text=True, close_fds=True,
            # own session: a terminal's Ctrl-C (SIGINT to the foreground
            # process group) must reach only the test process, whose teardown
            # then stops the lab in order -- not kill the daemons under it.
            start_new_session=True)
        line = self._read_holder_line(timeout)
        if not line.startswith("READY "):
            self.stop()
            raise DaemonError(
                f"starting the lab daemons failed: {line.strip() or 'no answer'}"
                f"\n{self.log_tail('nsholder.log')}\n{self.log_tail()}")
        _, vpid, lpid = line.split()
        self.pids = {"nsholder": self._holder.pid, "virtlogd": int(vpid),
                     "libvirtd": int(lpid)}
        self.namespace = _ns_of(self._holder.pid)

        # libvirtd -d returns once daemonised; wait until it answers.
        import libvirt

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not _alive(self.pids["libvirtd"]):
                break
            try:
                conn = libvirt.open(self.uri)
                conn.getLibVersion()
                conn.close()
                self.start_seconds = time.monotonic() - t0
                return self
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise DaemonError(f"libvirtd did not answer on {self.socket} within "
                          f"{timeout:.0f}s: {last}\n{tail}")

    def _read_holder_line(self, timeout: float) -> str:
        result: List[str] = []

        def read() -> None:
            result.append(self._holder.stdout.readline())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        return result[0] if result else ""

    def connect(self, events: bool = False):
        """A libvirt-python connection to the lab daemon. events=True starts
        the default event loop first (for domain event callbacks)."""
        import libvirt

        if events:
            ensure_event_loop()
        conn = libvirt.open(self.uri)
        self._conns.append(conn)
        return conn

    def processes(self) -> Dict[int, str]:
        """{pid: comm} of every live process in the lab's mount namespace."""
        if not self.namespace:
            return {pid: _comm(pid) for pid in self.pids.values() if _alive(pid)}
        found = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pid = int(entry)
                if _ns_of(pid) == self.namespace and _alive(pid):
                    found[pid] = _comm(pid)
        return found

    def stop(self, timeout: float = 20.0) -> Dict[int, str]:
        """Stop everything in the namespace (the holder SIGTERMs libvirtd, then
        virtlogd, then any straggler such as QEMU, SIGKILL after a grace
        period, and reaps them). Returns the processes still alive afterwards
        (normally empty). Idempotent."""
        for conn in self._conns:
            try:
                conn.close()
            except Exception:
                pass
        self._conns.clear()
        holder = getattr(self, "_holder", None)
        if holder is not None and holder.poll() is None:
            holder.terminate()
            try:
                holder.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Belt and braces: anything still in the namespace (holder stuck or
        # killed) is terminated from here.
        rest = [p for p in self.processes() if p != os.getpid()]
        if rest:
            self._terminate(rest, 5.0)
        if holder is not None:
            try:
                holder.wait(5)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
            if holder.stdout:
                holder.stdout.close()
            self._holder = None
        if getattr(self, "_holder_log", None):
            self._holder_log.close()
            self._holder_log = None
        left = self.processes()
        if self._own_workdir and not left:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)
        return left

    @staticmethod
    def _terminate(pids: List[int], grace: float) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)

    def __enter__(self) -> "LabDaemons":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
