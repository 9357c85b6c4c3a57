"""A running domain and its guest OS, as the hot-plug flow drives them (the user's own VM).

The same interface as the lab's LabGuest (conn, dom, journal, run, live_xml, is_running,
console_tail), so one flow serves the lab and a real host.
"""
from __future__ import annotations

import shlex
import subprocess
from typing import Optional
from urllib.parse import urlparse

from ..lab.guest import GUEST_PATH, GuestError
from ..lab.journal import Journal


class GuestUrlError(ValueError):
    pass


def parse_guest_url(url: str) -> tuple[str, Optional[str], Optional[int]]:
    """ssh://user@host:port -> (host, user, port); the guest must be reachable over SSH."""
    parsed = urlparse(url if "://" in url else f"ssh://{url}")
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise GuestUrlError(f"--guest {url!r}: expected ssh://[user@]host[:port]")
    return parsed.hostname, parsed.username, parsed.port


class DomainGuest:
    def __init__(self, conn, dom, guest_url: str, ssh_config: Optional[str] = None,
                 identity_file: Optional[str] = None, journal: Optional[Journal] = None):
        self.conn, self.dom = conn, dom
        self.host, self.user, self.port = parse_guest_url(guest_url)
        self.ssh_config, self.identity_file = ssh_config, identity_file
        self.journal = journal or Journal()

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
