"""A running domain and its guest OS, as the hot-plug flow drives them.

:class:`Guest` is the one interface the engine (hotplug.py) and the flow (flow.py) use; the
user's own VM (:class:`DomainGuest`, reached over SSH) and the test lab's guests satisfy it.
"""
from __future__ import annotations

import shlex
import subprocess
from typing import Any, Optional, Protocol, runtime_checkable
from urllib.parse import urlparse

from .undo import UndoJournal

GUEST_PATH = "PATH=/sbin:/usr/sbin:/bin:/usr/bin"


class GuestError(RuntimeError):
    """A command in the guest failed, timed out, or the guest stopped answering."""


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


class GuestUrlError(ValueError):
    pass


def parse_guest_url(url: str) -> tuple[str, Optional[str], Optional[int]]:
    """ssh://user@host:port -> (host, user, port); the guest must be reachable over SSH."""
    parsed = urlparse(url if "://" in url else f"ssh://{url}")
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise GuestUrlError(f"--guest {url!r}: expected ssh://[user@]host[:port]")
    return parsed.hostname, parsed.username, parsed.port


class DomainGuest:
    """The user's VM: a domain of the host's libvirtd, its guest reached over SSH (--guest)."""

    def __init__(self, conn, dom, guest_url: str, ssh_config: Optional[str] = None,
                 identity_file: Optional[str] = None, journal: Optional[UndoJournal] = None):
        self.conn, self.dom = conn, dom
        self.host, self.user, self.port = parse_guest_url(guest_url)
        self.ssh_config, self.identity_file = ssh_config, identity_file
        self.journal = journal or UndoJournal()

    def _ssh_argv(self) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.port:
            argv += ["-p", str(self.port)]
        return argv + [f"{self.user}@{self.host}" if self.user else self.host]

    def run(self, command: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        full = f"export {GUEST_PATH}; {command}"
        try:
            p = subprocess.run([*self._ssh_argv(), "--", "sh -c " + shlex.quote(full)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"guest command timed out after {timeout}s") from None
        if p.returncode == 255:
            raise GuestError(f"the guest stopped answering over SSH: {p.stderr.strip()}")
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
