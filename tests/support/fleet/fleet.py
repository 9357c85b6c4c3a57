"""LoopbackFleet: N fake KVM hosts, each a real sshd on its own loopback address.

See the package docstring (tests/support/fleet/__init__.py) for usage.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

from ..sshd import PRIVSEP_DIR, SSHD, _alive, _children_map, _exists, _terminate, stock_home
from .rootfs import SnapshotImage, Toolbox, build_host_root, find_busybox, find_dash

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
FIRST_ADDRESS = ipaddress.IPv4Address("127.0.0.2")
MAX_HOSTS = 253  # 127.0.0.2 .. 127.0.0.254

# How a host fails to be reachable.
REFUSED = "refused"  # nothing listens on its port: "Connection refused"
DENIED = "denied"    # a real sshd that does not know the fleet's key: "Permission denied (publickey)"
SILENT = "silent"    # the TCP connection is accepted but no SSH banner ever comes (connect timeout)
UNREACHABLE_KINDS = (REFUSED, DENIED, SILENT)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Chroot PATH for a session; the collection script prepends the same directories anyway.
SESSION_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

_WRAPPER = """\
#!/bin/sh
# Forced command of fleet host {name}: log one line per session (outside the fake root),
# optionally stall the login, then run what the client asked inside the fake root.
cmd="${{SSH_ORIGINAL_COMMAND-}}"
head=$(printf '%s' "$cmd" | tr '\\n\\r\\t' '   ' | cut -c1-80)
printf '%s %s\\n' "$(printf '%s' "$cmd" | wc -c)" "$head" >> '{log}'
{delay}
if [ -z "$cmd" ]; then
    exec {env} -i PATH={path} HOME=/ TERM="${{TERM:-dumb}}" USER=root LOGNAME=root SHELL=/bin/sh \\
        ${{SSH_CONNECTION:+"SSH_CONNECTION=$SSH_CONNECTION"}} ${{SSH_CLIENT:+"SSH_CLIENT=$SSH_CLIENT"}} \\
        {chroot} {userspec}'{root}' /bin/sh -i
fi
exec {env} -i PATH={path} HOME=/ USER=root LOGNAME=root SHELL=/bin/sh \\
    ${{SSH_CONNECTION:+"SSH_CONNECTION=$SSH_CONNECTION"}} ${{SSH_CLIENT:+"SSH_CLIENT=$SSH_CLIENT"}} \\
    {chroot} {userspec}'{root}' /bin/sh -c "$cmd"
"""


class FleetError(RuntimeError):
    pass


@dataclass(frozen=True)
class FleetHost:
    """One host of the fleet.

    name          inventory / ssh_config name (letters, digits, '.', '_', '-')
    snapshot_dir  a snapshot folder (meta.json, root/, commands/) the host is built from
    unreachable   None, or REFUSED / DENIED / SILENT (then snapshot_dir is not needed)
    delay_s       the login stalls this long before the command runs (a slow host;
                  float("inf"): a host that never answers once logged in)
    hostname      what `uname -n` says (default: meta.json's hostname)
    shell         "dash" (default, faithful) or "busybox" (exercises ash; see rootfs.py)
    tar           "gnu" (default: a distribution's tar, which the script makes links with) or
                  "busybox" (its applet: one ln per link); busybox sh runs its applet anyway
    user          None (root), or "uid:gid": sessions run as that user in the fake root
                  (a collection without root: files it cannot read)
    """

    name: str
    snapshot_dir: Optional[os.PathLike] = None
    unreachable: Optional[str] = None
    delay_s: float = 0.0
    hostname: Optional[str] = None
    shell: str = "dash"
    tar: str = "gnu"
    user: Optional[str] = None

    @classmethod
    def down(cls, name: str, how: str = REFUSED) -> "FleetHost":
        return cls(name, unreachable=how)

    @classmethod
    def slow(cls, name: str, snapshot_dir: os.PathLike, delay_s: float) -> "FleetHost":
        return cls(name, snapshot_dir, delay_s=delay_s)

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise FleetError(f"fleet host name {self.name!r}: use letters, digits, '.', '_', '-'")
        if self.unreachable is not None and self.unreachable not in UNREACHABLE_KINDS:
            raise FleetError(f"{self.name}: unreachable must be one of {UNREACHABLE_KINDS}")
        if self.unreachable is None and self.snapshot_dir is None:
            raise FleetError(f"{self.name}: a reachable host needs a snapshot_dir")
        if self.delay_s < 0:
            raise FleetError(f"{self.name}: delay_s must be >= 0")
        if self.user is not None and not re.match(r"^[0-9]+:[0-9]+$", self.user):
            raise FleetError(f"{self.name}: user must be numeric uid:gid")


class _Host:
    """Runtime state of one fleet host."""

    def __init__(self, spec: FleetHost, address: str, dir: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.address = address
        self.port = 0
        self.dir = dir
        self.root = dir / "root"
        self.host_key = dir / "ssh_host_ed25519_key"
        self.authorized_keys = dir / "authorized_keys"
        self.wrapper = dir / "forced-command.sh"
        self.commands_log = dir / "commands.log"
        self.sshd_config = dir / "sshd_config"
        self.pid_file = dir / "sshd.pid"
        self.log_file = dir / "sshd.log"
        self.proc: Optional[subprocess.Popen] = None
        self.socket: Optional[socket.socket] = None  # REFUSED / SILENT placeholder
        self.real_dev_null = True

    @property
    def runs_sshd(self) -> bool:
        return self.spec.unreachable in (None, DENIED)

    @property
    def url(self) -> str:
        return f"ssh://root@{self.address}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _can_bind(address: str) -> bool:
    try:
        _free_port(address)
        return True
    except OSError:
        return False


def _keygen(path: Path, comment: str) -> subprocess.Popen:
    for p in (path, Path(f"{path}.pub")):
        if p.exists():
            p.unlink()
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_all(procs: Iterable[subprocess.Popen], what: str) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise FleetError(f"{what} failed: {err.decode(errors='replace').strip()}")


def _base_dir() -> str:
    """Where fleet folders go: $VFIO_CERTIFY_FLEET_DIR, else /dev/shm when it is a tmpfs
    that allows devices and executables (building 50 fake roots is thousands of mkdir and
    link calls: ~0.5 ms each on a VM's ext4, ~10 us on tmpfs), else the temp dir."""
    override = os.environ.get("VFIO_CERTIFY_FLEET_DIR")
    if override:
        return override
    for candidate in ("/dev/shm",):
        try:
            flags = os.statvfs(candidate).f_flag
        except OSError:
            continue
        if not flags & (os.ST_NODEV | os.ST_NOEXEC | os.ST_RDONLY) and os.access(candidate, os.W_OK):
            return candidate
    return tempfile.gettempdir()


def _process_root(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


class LoopbackFleet:
    """N fake KVM hosts reachable over real SSH on 127.0.0.2, 127.0.0.3, ...

    Each reachable host is its own sshd (its own host key, port and log); every session
    runs through a forced command that logs it, then chroots into the host's fake root
    (built from a snapshot folder) and runs the requested command there with dash.
    """

    def __init__(self, hosts: Sequence[FleetHost], start: bool = True,
                 distinct_addresses: bool = True, keep_dir: bool = False,
                 base_dir: Optional[str] = None) -> None:
        if not hosts:
            raise FleetError("a fleet needs at least one host")
        if len(hosts) > MAX_HOSTS:
            raise FleetError(f"at most {MAX_HOSTS} hosts (127.0.0.2-254)")
        seen: Set[str] = set()
        for host in hosts:
            host.validate()
            if host.name in seen:
                raise FleetError(f"fleet host name {host.name!r} used twice")
            seen.add(host.name)
        self.specs = list(hosts)
        self.keep_dir = keep_dir
        self.distinct_addresses = distinct_addresses
        self.dir = Path(tempfile.mkdtemp(prefix="vfio-certify-fleet-", dir=base_dir or _base_dir()))
        os.chmod(self.dir, 0o755)
        self.identity_file = str(self.dir / "id_ed25519")
        self.ssh_config = str(self.dir / "ssh_config")
        self.ansible_inventory = str(self.dir / "inventory.ini")
        self.home = self.dir / "home"  # the sessions' HOME: stock dotfiles (see support/sshd.py's stock_home)
        self._hosts: Dict[str, _Host] = {}
        self._started = False
        self.start_seconds: Optional[float] = None
        if start:
            self.start()

    # -- availability ---------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """Why a fleet cannot run here, or None if it can."""
        problems = []
        if os.geteuid() != 0:
            problems.append("not running as root")
        if not os.access(SSHD, os.X_OK):
            problems.append(f"{SSHD} missing")
        for tool in ("ssh-keygen", "ssh", "chroot", "env", "ldd"):
            if shutil.which(tool) is None:
                problems.append(f"{tool} missing")
        if find_busybox() is None:
            problems.append("busybox missing")
        if find_dash() is None:
            problems.append("dash missing")
        if not problems:
            return None
        return ("needs root, openssh-server and busybox-static "
                "(scripts/setup.sh installs them): " + ", ".join(problems))

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "LoopbackFleet":
        if self._started:
            return self
        reason = self.unavailable_reason()
        if reason:
            raise FleetError(reason)
        began = time.monotonic()
        self._started = True
        atexit.register(self.cleanup)
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        stock_home(self.home)
        use_distinct = self.distinct_addresses and _can_bind(str(FIRST_ADDRESS))
        keygens = [_keygen(Path(self.identity_file), "vfio-certify-fleet-client")]
        for i, spec in enumerate(self.specs):
            address = str(FIRST_ADDRESS + i) if use_distinct else "127.0.0.1"
            host = _Host(spec, address, self.dir / "hosts" / spec.name)
            host.dir.mkdir(parents=True)
            self._hosts[spec.name] = host
            if host.runs_sshd:
                keygens.append(_keygen(host.host_key, f"vfio-certify-fleet-{spec.name}"))

        # Fake roots (while the keys are being generated).
        reachable = [h for h in self._hosts.values() if h.spec.unreachable is None]
        if reachable:
            toolbox = Toolbox.build(self.dir / "toolbox")
            from vfio_certify.collect import spec as collect_spec

            faked = {command.split()[0] for command in collect_spec.COMMANDS}
            images: Dict[Path, SnapshotImage] = {}
            for host in reachable:
                source = Path(host.spec.snapshot_dir).resolve()
                if source not in images:
                    images[source] = SnapshotImage.build(source, self.dir / "images" / str(len(images)))
                _, host.real_dev_null = build_host_root(
                    host.root, images[source], toolbox, faked,
                    hostname=host.spec.hostname, shell=host.spec.shell, tar=host.spec.tar,
                )
        _wait_all(keygens, "ssh-keygen")

        pubkey = Path(self.identity_file + ".pub").read_text().strip()
        chroot = shutil.which("chroot")
        env = shutil.which("env")
        for host in self._hosts.values():
            if host.spec.unreachable in (REFUSED, SILENT):
                host.socket = self._placeholder(host)
                continue
            host.commands_log.touch()
            if host.spec.unreachable == DENIED:
                # A well-formed key that is not the fleet's: authentication fails.
                host.authorized_keys.write_text(Path(f"{host.host_key}.pub").read_text())
            else:
                delay = f"sleep {host.spec.delay_s:g}" if host.spec.delay_s else ""
                host.wrapper.write_text(_WRAPPER.format(
                    name=host.name, log=host.commands_log, delay=delay, env=env,
                    chroot=chroot, root=host.root, path=SESSION_PATH,
                    userspec=f"--userspec={host.spec.user} " if host.spec.user else ""))
                host.wrapper.chmod(0o755)
                host.authorized_keys.write_text(f'command="{host.wrapper}" {pubkey}\n')
            host.authorized_keys.chmod(0o600)

        pending = [h for h in self._hosts.values() if h.runs_sshd]
        for _attempt in range(3):
            for host in pending:
                host.port = _free_port(host.address)
                self._write_sshd_config(host)
                self._launch(host)
            pending = self._wait_listening(pending)
            if not pending:
                break
        if pending:
            raise FleetError("sshd could not bind a port for "
                             + ", ".join(h.name for h in pending))
        self._write_ssh_config()
        self._write_ansible_inventory()

    def _placeholder(self, host: _Host) -> socket.socket:
        """REFUSED: a bound, never-listening socket keeps the port ours and closed.
        SILENT: a listening socket that is never accepted (the kernel completes the TCP
        handshake, no SSH banner ever comes)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host.address, 0))
        if host.spec.unreachable == SILENT:
            sock.listen(64)
        host.port = sock.getsockname()[1]
        return sock

    def _write_sshd_config(self, host: _Host) -> None:
        host.sshd_config.write_text(
            f"""\
ListenAddress {host.address}:{host.port}
HostKey {host.host_key}
PidFile {host.pid_file}
AuthorizedKeysFile {host.authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
UseDNS no
MaxStartups 100:30:200
MaxSessions 64
SetEnv HOME={self.home}
"""
        )

    def _launch(self, host: _Host) -> None:
        with open(host.log_file, "ab") as log:
            # sshd must be started by absolute path (it re-execs itself).
            host.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(host.sshd_config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
            )

    def _wait_listening(self, hosts: List[_Host]) -> List[_Host]:
        """Wait for "Server listening" in every log; return the hosts whose port was taken."""
        waiting = list(hosts)
        retry: List[_Host] = []
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            still = []
            for host in waiting:
                text = host.log_text()
                if f"Server listening on {host.address} port {host.port}." in text:
                    continue
                if host.proc is not None and host.proc.poll() is not None:
                    host.proc = None
                    if "Address already in use" in text:
                        retry.append(host)
                        continue
                    raise FleetError(f"sshd of {host.name} exited during startup:\n"
                                     + "\n".join(text.splitlines()[-20:]))
                still.append(host)
            waiting = still
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise FleetError(
                    f"sshd of {', '.join(h.name for h in waiting)} not listening "
                    f"within {START_TIMEOUT:.0f}s")
            time.sleep(0.02)
        return retry

    def _write_ssh_config(self) -> None:
        addresses = [h.address for h in self._hosts.values()]
        unique = len(set(addresses)) == len(addresses)
        blocks = []
        for host in self._hosts.values():
            patterns = f"{host.name} {host.address}" if unique else host.name
            blocks.append(f"Host {patterns}\n    HostName {host.address}\n    Port {host.port}\n")
        blocks.append(
            f"""\
Host *
    User root
    IdentityFile {self.identity_file}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
"""
        )
        Path(self.ssh_config).write_text("\n".join(blocks))

    def _write_ansible_inventory(self) -> None:
        lines = ["# vfio-certify loopback fleet (tests/support/fleet)", "[fleet]"]
        for host in self._hosts.values():
            lines.append(
                f"{host.name} ansible_host={host.address} ansible_port={host.port} "
                f"ansible_user=root ansible_ssh_private_key_file={self.identity_file} "
                "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
            )
        Path(self.ansible_inventory).write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        """Stop every sshd, every session it forked, and anything still running inside a
        fake root (e.g. busybox `timeout` watchers reparented to init). Bounded."""
        listeners = [h.proc for h in self._hosts.values() if h.proc is not None]
        for host in self._hosts.values():
            host.proc = None
            if host.socket is not None:
                host.socket.close()
                host.socket = None
        # Per-connection sshd children call setsid(): walk each listener's process tree
        # and stop it leaves-first, so every parent is alive to reap its children.
        children = _children_map()
        levels: List[List[int]] = []
        for proc in listeners:
            current, seen, depth = [proc.pid], {proc.pid}, 0
            while True:
                nxt = [c for p in current for c in children.get(p, []) if c not in seen]
                if not nxt:
                    break
                seen.update(nxt)
                if len(levels) <= depth:
                    levels.append([])
                levels[depth].extend(nxt)
                current, depth = nxt, depth + 1
        for level in reversed(levels):
            _terminate(level)
        strays = self._orphaned_sessions() + self._chrooted_pids()
        if strays:
            _terminate(strays)
        for proc in listeners:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in listeners:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)

    def cleanup(self) -> None:
        """stop() and remove the fleet's folder (unless keep_dir)."""
        self.stop()
        try:
            atexit.unregister(self.cleanup)
        except Exception:
            pass
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LoopbackFleet":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- what tests look at ---------------------------------------------------

    @property
    def names(self) -> List[str]:
        return list(self._hosts)

    @property
    def urls(self) -> Dict[str, str]:
        """name -> "ssh://root@127.0.0.x:port" (unreachable hosts included)."""
        return {name: host.url for name, host in self._hosts.items()}

    def host(self, name: str) -> _Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(f"no fleet host {name!r} (hosts: {', '.join(self._hosts)})") from None

    def address(self, name: str) -> str:
        return self.host(name).address

    def port(self, name: str) -> int:
        return self.host(name).port

    def root(self, name: str) -> Path:
        """The host's fake root folder (what its sessions are chroot'ed into)."""
        return self.host(name).root

    def remote_commands(self, name: str) -> List[str]:
        """One line per SSH session the host ran: "<byte length> <first 80 chars>"."""
        try:
            text = self.host(name).commands_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def handshakes(self, name: str) -> int:
        """SSH logins the host's sshd accepted ("Accepted publickey" lines)."""
        return self.host(name).log_text().count("Accepted publickey for ")

    def connections(self, name: str) -> int:
        """TCP connections the host's sshd received, authenticated or not."""
        return self.host(name).log_text().count("Connection from ")

    def reset_logs(self) -> None:
        """Forget the sessions and connections seen so far (on every host)."""
        for host in self._hosts.values():
            if host.commands_log.exists():
                host.commands_log.write_text("")
            if host.log_file.exists():
                host.log_file.write_text("")

    def log_tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.host(name).log_text().splitlines()[-lines:]) or "(no sshd log)"

    def pids(self) -> Set[int]:
        """Every process this fleet runs now: listeners, their sessions, chrooted strays."""
        listeners = {h.proc.pid for h in self._hosts.values()
                     if h.proc is not None and _exists(h.proc.pid)}
        children = _children_map()
        found = set(listeners)
        todo = list(listeners)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found | set(self._chrooted_pids())

    def leftover_pids(self) -> Set[int]:
        """Processes still alive that belong to this fleet (for asserting a clean stop):
        anything chroot'ed into a fake root or naming the fleet folder on its command line."""
        mine = set(self._chrooted_pids())
        needle = str(self.dir).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        mine.add(int(entry))
            except OSError:
                continue
        return {pid for pid in mine if _alive(pid)}

    def _orphaned_sessions(self) -> List[int]:
        """Forced commands left behind by a client that hung up while the login stalled (delay_s):
        no longer under their sshd. Each comes before its children (its sleep), so that it
        is gone before a dead child would let it go on to run the command."""
        needle = f"{self.dir}/hosts/".encode()
        children = _children_map()
        found: List[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if needle in cmdline and b"forced-command.sh" in cmdline:
                found += [int(entry), *children.get(int(entry), [])]
        return found

    def _chrooted_pids(self) -> List[int]:
        prefix = str(self.dir) + "/"
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _process_root(int(entry)).startswith(prefix):
                pids.append(int(entry))
        return pids

    def __repr__(self) -> str:
        return f"<LoopbackFleet {len(self._hosts)} hosts dir={self.dir}>"

