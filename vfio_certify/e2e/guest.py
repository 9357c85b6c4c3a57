"""A running domain and its guest OS, as the hot-plug flow drives them.

:class:`Guest` is the one interface the engine (hotplug.py) and the flow (flow.py) use; the
user's own VM (:class:`DomainGuest`, reached over SSH) and the test lab's guests satisfy it.
"""
from __future__ import annotations

import math
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable
from urllib.parse import urlparse

from .undo import UndoJournal

GUEST_PATH = "PATH=/sbin:/usr/sbin:/bin:/usr/bin"


SLOW_AFTER_S = 5.0    # a guest that takes longer to answer a trivial command over SSH is slow (TCG inside TCG)
DEAD_AFTER_S = 300.0  # one that has not answered for this long is dead
CONNECT_TIMEOUT_S = 10.0  # an SSH connection's deadline (TCP, banner, key exchange) while the pace is unknown


class GuestError(RuntimeError):
    """A command in the guest failed, timed out, or the guest stopped answering."""


@dataclass(frozen=True)
class Pace:
    """How fast the guest answered a trivial command (`true`) over a new SSH connection; answered_s None:
    it did not answer for waited_s. A slow guest gets deadlines derived from it; a dead one gets none."""

    answered_s: Optional[float]
    waited_s: float = 0.0
    slow_after_s: float = SLOW_AFTER_S

    @property
    def alive(self) -> bool:
        return self.answered_s is not None

    @property
    def slow(self) -> bool:
        return self.alive and self.answered_s >= self.slow_after_s

    def describe(self) -> str:
        if not self.alive:
            return f"dead (no answer for {self.waited_s:.0f} s)"
        if self.slow:
            return f"slow (answered in {self.answered_s:.0f} s)"
        return f"answering (in {self.answered_s:.1f} s)"

    def connect_timeout(self, floor: float = CONNECT_TIMEOUT_S) -> float:
        """An SSH connection's deadline: three times what the guest took to answer, at least floor."""
        return max(floor, 3 * (self.answered_s or 0.0))

    @property
    def connect_timeout_s(self) -> float:
        return self.connect_timeout()

    @property
    def slowdown(self) -> float:
        """How many times a slow guest stretches the waits inside it (a device showing, a detach acknowledged)."""
        return max(1.0, (self.answered_s or 0.0) / self.slow_after_s)

    def command_timeout_s(self, timeout: float) -> float:
        """A guest command's deadline: its own, and for a slow guest the time its SSH connection may take."""
        return timeout + (self.connect_timeout_s if self.slow else 0.0)

    def worse(self, other: "Pace") -> "Pace":
        """The slower of two measurements: deadlines never shrink within a run."""
        if not other.alive or not self.alive:
            return other if not other.alive else self
        return other if other.answered_s > self.answered_s else self


def measure_pace(answers: Callable[[float], bool], dead_after_s: float = DEAD_AFTER_S,
                 slow_after_s: float = SLOW_AFTER_S) -> Pace:
    """Ask the guest to run `true` until it does or dead_after_s pass. answers(seconds) makes one attempt
    that may take that long and says whether the guest answered; a refused or dropped connection is
    tried again a second later (a guest that is busy, not gone, answers one of them)."""
    began = time.monotonic()
    while True:
        left = dead_after_s - (time.monotonic() - began)
        if left <= 0:
            return Pace(None, time.monotonic() - began, slow_after_s)
        try:
            if answers(left):
                return Pace(time.monotonic() - began, 0.0, slow_after_s)
        except (subprocess.TimeoutExpired, GuestError):
            pass
        time.sleep(min(1.0, max(0.0, dead_after_s - (time.monotonic() - began))))


@runtime_checkable
class Guest(Protocol):
    """A running libvirt domain and a shell in its guest OS."""

    conn: Any  # libvirt.virConnect the domain lives on
    dom: Any  # libvirt.virDomain
    journal: UndoJournal  # where the engine records its changes and their undos

    def run(self, command: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command in the guest as root; GuestError when it cannot (or fails, with check)."""
        ...

    def live_xml(self) -> str:
        """The domain's live XML."""
        ...

    def is_running(self) -> bool:
        ...

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of the guest's serial console, '' when it is not ours to read."""
        ...

    def measure_pace(self, dead_after_s: Optional[float] = None) -> "Pace":
        """Time a trivial command (up to dead_after_s); later SSH deadlines derive from the slowest answer."""
        ...


class GuestUrlError(ValueError):
    pass


def parse_guest_url(url: str) -> tuple[str, Optional[str], Optional[int]]:
    """ssh://user@host:port -> (host, user, port); the guest must be reachable over SSH."""
    parsed = urlparse(url if "://" in url else f"ssh://{url}")
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise GuestUrlError(f"--guest {url!r}: expected ssh://[user@]host[:port]")
    return parsed.hostname, parsed.username, parsed.port


class DomainGuest:
    """The user's VM: a domain of the host's libvirtd, its guest reached over SSH (--guest).

    Each command is one SSH connection, with deadlines that follow the guest's pace: measure_pace()
    times `true`, and a slow guest's connections and commands get time in proportion. A connection
    that fails before the command started (a banner exchange that timed out) is not taken for a dead
    guest: the guest is asked again for up to dead_after_s and, if it answers, the command is tried
    once more; an error says "slow (answered in 38 s)" or "dead (no answer for 300 s)".
    """

    STARTED = "vfio-certify: command started"  # on stderr, first: the command ran (so it is never repeated)

    def __init__(self, conn, dom, guest_url: str, ssh_config: Optional[str] = None,
                 identity_file: Optional[str] = None, journal: Optional[UndoJournal] = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, dead_after_s: float = DEAD_AFTER_S,
                 slow_after_s: float = SLOW_AFTER_S):
        self.conn, self.dom = conn, dom
        self.host, self.user, self.port = parse_guest_url(guest_url)
        self.ssh_config, self.identity_file = ssh_config, identity_file
        self.journal = journal or UndoJournal()
        self.connect_timeout_s, self.dead_after_s, self.slow_after_s = connect_timeout_s, dead_after_s, slow_after_s
        self.pace: Optional[Pace] = None  # not measured yet: the usual deadlines

    def _ssh_argv(self, connect_timeout: float) -> list[str]:
        alive_probes = max(3, math.ceil(connect_timeout / 5))  # a busy guest may leave keepalives unanswered
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={math.ceil(connect_timeout)}",
                "-o", "ServerAliveInterval=5", "-o", f"ServerAliveCountMax={alive_probes}"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.port:
            argv += ["-p", str(self.port)]
        return argv + [f"{self.user}@{self.host}" if self.user else self.host]

    def _ssh(self, command: str, timeout: float, connect_timeout: float) -> subprocess.CompletedProcess:
        full = f"echo {shlex.quote(self.STARTED)} >&2; export {GUEST_PATH}; {command}"
        return subprocess.run([*self._ssh_argv(connect_timeout), "--", "sh -c " + shlex.quote(full)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)

    def measure_pace(self, dead_after_s: Optional[float] = None) -> Pace:
        pace = measure_pace(lambda left: self._ssh("true", left, left).returncode == 0,
                            dead_after_s or self.dead_after_s, self.slow_after_s)
        self.pace = pace if self.pace is None else self.pace.worse(pace)
        return pace

    def run(self, command: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        for attempt in (1, 2):
            pace = self.pace if self.pace and self.pace.alive else Pace(0.0)
            deadline = pace.command_timeout_s(timeout)
            try:
                p = self._ssh(command, deadline, pace.connect_timeout(self.connect_timeout_s))
            except subprocess.TimeoutExpired as exc:
                started = self.STARTED in _text(exc.stderr)
                why = f"no answer within {deadline:.0f} s" + ("" if started else ", before the command started")
            else:
                started = self.STARTED in p.stderr
                p.stderr = "".join(line for line in p.stderr.splitlines(True) if line.rstrip("\n") != self.STARTED)
                if p.returncode != 255:
                    break
                why = p.stderr.strip() or "ssh exit 255"
            pace = self.measure_pace()  # slow or dead?
            if started or attempt == 2 or not pace.alive:  # a command that ran is never repeated
                raise GuestError(f"the guest stopped answering over SSH: {why}; the guest is {pace.describe()}")
        if check and p.returncode != 0:
            raise GuestError(f"guest command failed (exit {p.returncode}): {p.stderr.strip()}")
        return p

    def live_xml(self) -> str:
        return self.dom.XMLDesc(0)

    def is_running(self) -> bool:
        try:
            return bool(self.dom.isActive())
        except Exception:
            return False

    def console_tail(self, lines: int = 40) -> str:
        return ""  # a user's domain: its console is theirs; libvirt's error text is reported instead


def _text(output) -> str:
    """A TimeoutExpired's partial output, bytes or str."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
