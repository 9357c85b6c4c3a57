"""One end-to-end session: undo a killed run's leftovers, then drive the running domain.

The domain (--domain) runs on the certified host and is reached through libvirt (URI from
--libvirt-uri, else derived from the host: local -> qemu:///system, ssh://u@h ->
qemu+ssh://u@h/system), its guest over SSH (--guest). When the host is the suite's own nested
lab (vfio_certify/lab/target.py), lab_note says so at the head of every result's evidence.
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
from .connection import ensure_event_loop, open_with_keepalive
from .flow import E2EOptions, recover_leftovers, run_device
from .journal import ChangeJournal, JournalLocked


class E2ESetupError(Exception):
    """The session cannot start (no such domain, libvirt unreachable); str() is one line."""


@dataclass
class E2EConfig:
    domain: str = ""
    guest: str = ""
    guest_ssh_config: Optional[str] = None
    libvirt_uri: str = ""
    journal: Optional[str] = None
    lab_note: str = ""  # set when the target is the suite's nested lab
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
        self.guest = None
        self.uri = ""
        self.setup_seconds = 0.0
        self.setup_error = ""  # set when start() failed: every e2e check then reports it

    def start(self) -> "E2ESession":
        """Lock the journal, undo leftovers, reach the domain; when that fails, nothing stays held."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> "E2ESession":
        import libvirt

        began = time.monotonic()
        try:  # for the whole session: another run would take this run's open changes for leftovers and undo them
            self.journal.lock()
        except JournalLocked as exc:
            raise E2ESetupError(str(exc)) from None
        ensure_event_loop()  # DEVICE_REMOVED events, and keepalive on every connection
        self.recovered = recover_leftovers(self.journal, libvirt.open)
        if not self.config.domain or not self.config.guest:
            raise E2ESetupError("--e2e needs --domain NAME and --guest ssh://root@<the VM> to prove the devices inside it")
        self.uri = self.config.libvirt_uri or default_libvirt_uri(self.host_spec)
        try:
            conn = open_with_keepalive(libvirt.open, self.uri)
            dom = conn.lookupByName(self.config.domain)
        except libvirt.libvirtError as exc:
            raise E2ESetupError(f"libvirt {self.uri}: {exc.get_error_message()}") from None
        if not dom.isActive():
            raise E2ESetupError(f"domain {self.config.domain!r} is not running: start it first (hot-plug needs a live guest)")
        if self.config.options.persistent and not dom.isPersistent():
            raise E2ESetupError(f"--persistent: domain {self.config.domain!r} is transient (it has no persistent "
                                "definition to write the <hostdev> to); drop --persistent or define the domain")
        from .guest import DomainGuest

        self.guest = DomainGuest(conn, dom, self.config.guest, self.config.guest_ssh_config)
        self.setup_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        if self.guest is not None:
            try:
                self.guest.conn.close()
            except Exception:
                pass
            self.guest = None
        self.journal.unlock()

    def _labelled(self, result: CheckResult) -> CheckResult:
        if self.config.lab_note:
            result.evidence = [self.config.lab_note, *result.evidence]
        return result

    def _setup_failed(self, check_id: str) -> CheckResult:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"end-to-end could not start: {self.setup_error}", [f"host {self.host_spec}"],
                           "Fix what the message names (domain name, libvirt URI, guest address) and run again.")

    def leftovers_result(self) -> CheckResult:
        return self._labelled(self._leftovers_result())

    def run(self, facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec]) -> CheckResult:
        """The whole flow for one device (flow.run_device), or the setup error when the session could not start."""
        return self._labelled(self._run(facts, spec, named))

    def _leftovers_result(self) -> CheckResult:
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

    def _run(self, facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec]) -> CheckResult:
        if self.setup_error:
            from .flow import check_id_for

            return self._setup_failed(check_id_for(spec, facts))
        return run_device(self.guest, facts, spec, named, self.journal, self.uri, self.recollect, self.config.options)


def recollect_for(target) -> Callable[[], HostFacts]:
    """Collect the host again (one more remote command), for the host-restored check."""
    from ..collect import collect_snapshot
    from ..facts import read_host_facts

    def recollect() -> HostFacts:
        with tempfile.TemporaryDirectory(prefix="vfio-certify-e2e-") as tmp:
            return read_host_facts(collect_snapshot(target, Path(tmp) / "s"))

    return recollect
