"""One end-to-end session: undo a killed run's leftovers, then drive the user's domain or the lab.

With --domain, the user's running VM on the certified host is used, through libvirt (URI
from --libvirt-uri, else derived from the host: local -> qemu:///system, ssh://u@h ->
qemu+ssh://u@h/system) and its guest over SSH (--guest). Without --domain the lab runs: a
throwaway guest on this machine. Which lab ran is said in every result.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..model import CheckResult, Outcome, Severity
from .flow import E2EOptions, recover_leftovers, run_device
from .journal import ChangeJournal

LAB_STANDIN_NOTE = ("emulated stand-in lab (an e1000e <interface> and a USB <disk> hot-plugged into a throwaway "
                    "TCG guest): proves the guest-side checks and teardown, not <hostdev>, vfio binding or driver restore")


class E2ESetupError(Exception):
    """The session cannot start (no such domain, libvirt unreachable); str() is one line."""


@dataclass
class E2EConfig:
    domain: str = ""
    guest: str = ""
    guest_ssh_config: Optional[str] = None
    libvirt_uri: str = ""
    journal: Optional[str] = None
    options: E2EOptions = field(default_factory=E2EOptions)


def default_libvirt_uri(host_spec: str) -> str:
    parsed = urlparse(host_spec)
    if parsed.scheme in ("", "local"):
        return "qemu:///system"
    if parsed.scheme in ("ssh", "paramiko", "safe-ssh") and parsed.hostname:
        user = f"{parsed.username}@" if parsed.username else ""
        port = f":{parsed.port}" if parsed.port else ""
        return f"qemu+ssh://{user}{parsed.hostname}{port}/system"
    raise E2ESetupError(f"cannot derive a libvirt URI for {host_spec}: give --libvirt-uri")


class E2ESession:
    def __init__(self, config: E2EConfig, host_spec: str, recollect: Callable[[], HostFacts]):
        self.config = config
        self.host_spec = host_spec
        self.recollect = recollect
        self.journal = ChangeJournal(config.journal)
        self.recovered: list[str] = []
        self.lab = None
        self.guest = None
        self.uri = ""
        self.setup_seconds = 0.0
        self.setup_error = ""  # set when start() failed: every e2e check then reports it

    @property
    def mode(self) -> str:
        return "domain" if self.config.domain else "lab"

    def start(self) -> "E2ESession":
        import libvirt

        began = time.monotonic()
        self.recovered = recover_leftovers(self.journal, libvirt.open)
        if self.config.domain:
            self.uri = self.config.libvirt_uri or default_libvirt_uri(self.host_spec)
            if not self.config.guest:
                raise E2ESetupError("--domain needs --guest ssh://root@<the VM> to prove the devices inside it")
            try:
                conn = libvirt.open(self.uri)
                dom = conn.lookupByName(self.config.domain)
            except libvirt.libvirtError as exc:
                raise E2ESetupError(f"libvirt {self.uri}: {exc.get_error_message()}") from None
            if not dom.isActive():
                raise E2ESetupError(f"domain {self.config.domain!r} is not running: start it first (hot-plug needs a live guest)")
            from .guest import DomainGuest

            self.guest = DomainGuest(conn, dom, self.config.guest, self.config.guest_ssh_config)
        else:
            from ..lab.guest import Lab

            self.lab = Lab()
            self.lab.start()
            self.guest, self.uri = self.lab.guest, self.lab.daemons.uri
        self.setup_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def _setup_failed(self, check_id: str) -> CheckResult:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"end-to-end could not start: {self.setup_error}", [f"host {self.host_spec}"],
                           "Fix what the message names (domain name, libvirt URI, guest address) and run again.")

    def leftovers_result(self) -> CheckResult:
        if self.setup_error and not self.recovered:
            return self._setup_failed("e2e.leftovers")
        failed = [line for line in self.recovered if line.startswith("COULD NOT RECOVER")]
        if failed:
            return CheckResult("e2e.leftovers", Outcome.ERROR, Severity.REQUIRED,
                               f"{len(failed)} change(s) left by an earlier run could not be undone", self.recovered,
                               "\n".join(line.split("by hand: ", 1)[-1] for line in failed))
        message = (f"undid {len(self.recovered)} change(s) an earlier, interrupted run left behind"
                   if self.recovered else "no change left behind by an earlier run")
        return CheckResult("e2e.leftovers", Outcome.PASSED, Severity.REQUIRED, message,
                           self.recovered + [f"journal: {self.journal.path}"])

    def run(self, facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec]) -> CheckResult:
        if self.setup_error:
            from .flow import check_id_for

            return self._setup_failed(check_id_for(spec, facts))
        return run_device(self.guest, facts, spec, named, self.journal, self.uri, self.recollect, self.config.options)

    def run_lab_standin(self, kind: str) -> CheckResult:
        """The emulated stand-in for a NIC ('nic') or a USB disk ('usb') in the lab guest."""
        from ..lab.hotplug import Hotplugger

        if self.setup_error:
            return self._setup_failed(f"e2e.{kind}[lab-standin]")
        hotplugger = Hotplugger(self.guest)
        try:
            res = hotplugger.nic() if kind == "nic" else hotplugger.usb_disk(self.lab.disk)
        finally:
            hotplugger.close()
        check_id = f"e2e.{kind}[lab-standin]"
        evidence = [LAB_STANDIN_NOTE, *res.summary().splitlines()[1:]]
        timings = ", ".join(f"{s.name} {s.seconds:.2f} s" for s in res.steps
                            if s.name in ("attach->visible", "detach->gone-in-guest", "read-only-checksum"))
        if res.ok:
            return CheckResult(check_id, Outcome.PASSED, Severity.REQUIRED,
                               f"lab stand-in: attached, proven in the guest, detached, gone ({timings})", evidence)
        evidence += ["--- guest console ---", *self.guest.console_tail(20).splitlines()]
        return CheckResult(check_id, Outcome.FAILED, Severity.REQUIRED, f"lab stand-in failed: {res.error}", evidence,
                           "A lab failure, not a host finding: see the steps and the guest console above.")


def recollect_for(target) -> Callable[[], HostFacts]:
    """Collect the host again (one more remote command), for the host-restored check."""
    from ..collect import collect_snapshot
    from ..facts import read_host_facts

    def recollect() -> HostFacts:
        with tempfile.TemporaryDirectory(prefix="vfio-certify-e2e-") as tmp:
            return read_host_facts(collect_snapshot(target, Path(tmp) / "s"))

    return recollect
