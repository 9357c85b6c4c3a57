"""A real OpenSSH server on 127.0.0.1 for tests (no mocks).

``LoopbackSshd`` runs ``/usr/sbin/sshd -D -e`` from a private temp dir with
its own host key, client key, authorized_keys and ssh_config. Every session
goes through a forced-command wrapper that appends one line to a log before
running the requested command, so tests can count the remote commands a
piece of code issued::

    with LoopbackSshd() as sshd:
        subprocess.run(["ssh", "-F", sshd.ssh_config, "127.0.0.1", "true"])
        assert len(sshd.remote_commands()) == 1

Log line format: ``<byte length of $SSH_ORIGINAL_COMMAND> <first 80 chars>``
(newlines/tabs in the command are replaced by spaces).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

SSHD = "/usr/sbin/sshd"
# sshd's compiled-in privilege separation directory on Debian.
PRIVSEP_DIR = "/run/sshd"

# Sessions run as this machine's root, and sshd runs a forced command with root's login shell (bash -c),
# which reads root's own ~/.bashrc (Debian builds bash to do so for ssh sessions). On a developer's machine
# that file sets up their tools (pyenv init: 0.2-1 s and dozens of processes per session); a KVM host's root
# has the distribution's stock dotfiles. The session's HOME (sshd_config SetEnv) is a folder holding those
# (/etc/skel's), so each connection costs what it costs on a freshly installed host, no more and no less.
SKELETON = Path("/etc/skel")


def stock_home(folder: Path) -> Path:
    """A home folder with the distribution's stock dotfiles (those it gives a new user), for SetEnv HOME=."""
    folder.mkdir(mode=0o755, exist_ok=True)
    if SKELETON.is_dir():
        for dotfile in SKELETON.iterdir():
            if dotfile.is_file():
                shutil.copyfile(dotfile, folder / dotfile.name)
    return folder


START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_WRAPPER = """\
#!/bin/sh
# Forced command: log one line per session, then run what the client asked.
cmd="${{SSH_ORIGINAL_COMMAND-}}"
head=$(printf '%s' "$cmd" | tr '\\n\\r\\t' '   ' | cut -c1-80)
printf '%s %s\\n' "$(printf '%s' "$cmd" | wc -c)" "$head" >> '{log}'
if [ -z "$cmd" ]; then
    exec /bin/sh -l
fi
exec /bin/sh -c "$cmd"
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_map() -> Dict[int, List[int]]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." -- comm may contain spaces/parens.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendant_levels(pid: int) -> List[List[int]]:
    """Descendants of pid, grouped by depth (children, grandchildren, ...)."""
    children = _children_map()
    levels: List[List[int]] = []
    current = [pid]
    seen = {pid}
    while True:
        nxt = [c for p in current for c in children.get(p, []) if c not in seen]
        if not nxt:
            return levels
        seen.update(nxt)
        levels.append(nxt)
        current = nxt


def _descendants(pid: int) -> Set[int]:
    return {p for level in _descendant_levels(pid) for p in level}


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _terminate(pids: List[int], timeout: float = 2.0) -> None:
    """SIGTERM pids, wait until they are reaped; SIGKILL what is still alive."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


class LoopbackSshd:
    """OpenSSH server listening on 127.0.0.1:<free port>, logging commands."""

    def __init__(self, start: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vfio-certify-sshd-"))
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.identity_file = str(self.dir / "id_ed25519")
        self.authorized_keys = self.dir / "authorized_keys"
        self.wrapper = self.dir / "forced-command.sh"
        self.commands_log = self.dir / "commands.log"
        self.sshd_config = self.dir / "sshd_config"
        self.pid_file = self.dir / "sshd.pid"
        self.log_file = self.dir / "sshd.log"
        self.ssh_config = str(self.dir / "ssh_config")
        self.home = self.dir / "home"
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None
        if start:
            self.start()

    # -- availability ---------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """Why a loopback sshd cannot run here, or None if it can."""
        problems = []
        if os.geteuid() != 0:
            problems.append("not running as root")
        if not os.access(SSHD, os.X_OK):
            problems.append(f"{SSHD} missing")
        for tool in ("ssh-keygen", "ssh"):
            if shutil.which(tool) is None:
                problems.append(f"{tool} missing")
        if not problems:
            return None
        return (
            "loopback sshd needs openssh-server + openssh-client "
            "(scripts/setup.sh installs them) and root: " + ", ".join(problems)
        )

    # -- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def start(self) -> "LoopbackSshd":
        if self._proc is not None:
            return self
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self._keygen(self.host_key, "vfio-certify-test-host")
        self._keygen(Path(self.identity_file), "vfio-certify-test-client")
        self.wrapper.write_text(_WRAPPER.format(log=self.commands_log))
        self.wrapper.chmod(0o755)
        self.commands_log.touch()
        pubkey = Path(self.identity_file + ".pub").read_text().strip()
        self.authorized_keys.write_text(f'command="{self.wrapper}" {pubkey}\n')
        self.authorized_keys.chmod(0o600)
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        stock_home(self.home)

        # The free port can be stolen between probing and sshd's bind(); retry.
        last_error = ""
        for _attempt in range(3):
            self.port = _free_port()
            self._write_configs()
            try:
                self._launch()
                atexit.register(self.stop)
                return self
            except _BindFailed as exc:
                last_error = str(exc)
        raise RuntimeError(f"sshd could not bind a port:\n{last_error}")

    def stop(self) -> None:
        """Terminate sshd and every session process it forked (bounded)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Per-connection sshd children call setsid(), so they survive the
        # listener and are not in its process group: collect the process tree
        # and stop it leaves-first, so each parent is still alive to reap its
        # children (no orphans/zombies left for PID 1).
        levels = _descendant_levels(proc.pid)
        for level in reversed(levels):
            _terminate(level)
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def cleanup(self) -> None:
        """stop() and remove the temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LoopbackSshd":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- command log ----------------------------------------------------------

    def remote_commands(self) -> List[str]:
        """One line per SSH session since the last reset_log()."""
        try:
            text = self.commands_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def reset_log(self) -> None:
        self.commands_log.write_text("")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no sshd log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _keygen(path: Path, comment: str) -> None:
        for p in (path, Path(f"{path}.pub")):
            if p.exists():
                p.unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def _write_configs(self) -> None:
        self.sshd_config.write_text(
            f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
PidFile {self.pid_file}
AuthorizedKeysFile {self.authorized_keys}
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
UseDNS no
MaxStartups 100:30:200
MaxSessions 64
SetEnv HOME={self.home}
"""
        )
        Path(self.ssh_config).write_text(
            f"""\
Host 127.0.0.1
    Port {self.port}
    User root
    IdentityFile {self.identity_file}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
"""
        )

    def _launch(self) -> None:
        # Validate the config first: a syntax error is reported immediately.
        check = subprocess.run(
            [SSHD, "-t", "-f", str(self.sshd_config)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected {self.sshd_config}:\n{check.stderr}")
        log = open(self.log_file, "ab")
        try:
            # sshd must be started by absolute path (it re-execs itself).
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                tail = self.log_tail()
                if "Address already in use" in tail:
                    raise _BindFailed(tail)
                raise RuntimeError(f"sshd exited during startup:\n{tail}")
            if self._banner_ok():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"sshd did not accept connections on 127.0.0.1:{self.port} "
                    f"within {START_TIMEOUT:.0f}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _banner_ok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LoopbackSshd {self.url} {state} dir={self.dir}>"


class _BindFailed(RuntimeError):
    pass
