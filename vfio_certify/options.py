"""Every option of vfio-certify, declared once, and the one validation of their values.

The `vfio-certify` command (cli.py, argparse) and plain pytest (plugin.py, pytest_addoption)
both build their options from OPTIONS, and both call validate() before anything is collected.
Adding an option is one Option() here; the command forwards it to pytest by its flag.

Where an option lives:
- `cli` and `pytest` both true: the same flag on the command and under pytest (`--device`);
- `cli` only: the command's own spelling of something pytest spells otherwise (`--host` for
  testinfra's comma-separated `--hosts`, `--output`, `-j` for xdist's `-n`);
- `pytest` only: set by the command, not typed by a user (`--certify-output`, `--e2e-lab`);
- `declared_by_testinfra`: pytest-testinfra declares it for pytest; the command declares it for
  argparse and forwards it under the same flag.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from .collect.runner import BOUND_SLACK_S, COLLECT_TIMEOUT_S

if TYPE_CHECKING:  # validate() imports them: the command declares its options before it imports the rest
    from .devices import DeviceSpec
    from .diff import RunRecord
    from .waivers import Waiver

DEFAULT_CONNECT_TIMEOUT_S = 10
HOSTS_PER_WORKER = 100  # -j: a worker's hosts before a fresh worker takes over (xdist_by_host.py)
DEFAULT_OUTPUT = "reports/latest"  # beside the report templates in reports/templates, ignored by git


class OptionError(Exception):
    """A usage or configuration error; str() is one line naming the option and the value."""


def whole_number(text: str, unit: str = "") -> int:
    """A whole number, at least 1 (argparse and pytest both call it); `unit` (plural) names what it counts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number{' of ' + unit if unit else ''}: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1{' ' + unit[:-1] if unit else ''}: {text!r}")
    return value


def seconds(text: str) -> int:
    return whole_number(text, "seconds")


# Groups: where --help lists an option.
MAIN, E2E, CONNECTION = "main", "e2e", "connection"
E2E_TITLE = "end to end (--e2e)"


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    group: str = MAIN
    cli: bool = True
    pytest: bool = True
    declared_by_testinfra: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[-1].lstrip("-").replace("-", "_")

    def default(self) -> Any:
        if "default" in self.kwargs:
            return self.kwargs["default"]
        return False if self.kwargs.get("action") == "store_true" else None


OPTIONS: tuple[Option, ...] = (
    Option(("--host",), "a host: ssh://root@kvm1, local://, ansible://NAME (repeatable; default: this machine)",
           pytest=False, kwargs=dict(action="append", default=[], metavar="URL")),
    Option(("--snapshot",), "judge a collected snapshot or customer bundle (repeatable)",
           kwargs=dict(action="append", default=[], metavar="DIR|FILE.tar.gz")),
    Option(("--device",), "a device to be assigned: PCI 0000:07:00.1 or 07:00.1; USB 004.002 or 152d:9561 "
                          "(repeatable)",
           kwargs=dict(action="append", default=[], metavar="ADDR")),
    Option(("--baseline",), "an earlier run's output folder: report regressions since then (exit 1 on one)",
           kwargs=dict(default=None, metavar="DIR|summary.json")),
    Option(("--waivers",), "known exceptions (check id and host globs, reason, owner, expiry): waived failures "
                           "do not fail a host",
           kwargs=dict(default=None, metavar="FILE.toml")),
    Option(("-j", "--jobs"), "hosts judged in parallel by N worker processes (pytest-xdist; 'auto' = one per core), "
                             "never more than the hosts (one host: judged in this process)",
           pytest=False, kwargs=dict(metavar="N")),
    Option(("--hosts-per-worker",), f"with -j, a worker process judges at most N hosts, then a fresh one takes the "
                                    f"next N: a worker's memory is that of N hosts, whatever the number of hosts "
                                    f"(default {HOSTS_PER_WORKER})",
           kwargs=dict(type=whole_number, default=HOSTS_PER_WORKER, metavar="N")),
    Option(("--e2e",), "also hot-plug each --device into a running VM, prove it in the guest, detach, restore",
           group=E2E, kwargs=dict(action="store_true")),
    Option(("--domain",), "your running libvirt domain (without it, and with no --host, --snapshot or --device, "
                          "--e2e runs the suite's own nested VT-d lab)",
           group=E2E, kwargs=dict(default="")),
    Option(("--guest",), "that domain's guest over SSH: ssh://root@vm", group=E2E, kwargs=dict(default="", metavar="URL")),
    Option(("--guest-ssh-config",), "ssh_config for reaching the guest",
           group=E2E, kwargs=dict(default=None, metavar="FILE")),
    Option(("--libvirt-uri",), "the host's libvirt (default: qemu:///system, or qemu+ssh://HOST/system for "
                               "ssh:// hosts)",
           group=E2E, kwargs=dict(default="", metavar="URI")),
    Option(("--usb-file",), "a file on the USB disk to read back read-only (and its sha256 to compare)",
           group=E2E, kwargs=dict(default="", metavar="PATH[:SHA256]")),
    Option(("--force",), "assign a NIC the host itself uses (never the default)", group=E2E,
           kwargs=dict(action="store_true")),
    Option(("--persistent",), "also attach in the domain's persistent definition (virsh --config; default: live "
                              "only, as virt-xml --update), removed again on detach",
           group=E2E, kwargs=dict(action="store_true")),
    Option(("--journal",), "the change journal (default /var/lib/vfio-certify/journal.jsonl)",
           group=E2E, kwargs=dict(default=None, metavar="FILE")),
    Option(("--e2e-lab",), "set by `vfio-certify --e2e` when the target is its own nested lab: said in every e2e "
                           "result",
           group=E2E, cli=False, kwargs=dict(default="", metavar="TEXT")),
    Option(("--output",), "the folder report.html, certification.html, summary.json and junit.xml go to: a new one, "
                          "or one an earlier run wrote, which is replaced whole (default ./" + DEFAULT_OUTPUT + ")",
           pytest=False, kwargs=dict(default=DEFAULT_OUTPUT, metavar="DIR")),
    Option(("--certify-output",), "write summary.json and certification.html to DIR",
           cli=False, kwargs=dict(default=None, metavar="DIR")),
    Option(("--ssh-config",), "ssh_config file for ssh:// hosts", group=CONNECTION, pytest=False,
           declared_by_testinfra=True, kwargs=dict(metavar="FILE")),
    Option(("--ssh-identity-file",), "private key for ssh:// hosts", group=CONNECTION, pytest=False,
           declared_by_testinfra=True, kwargs=dict(metavar="FILE")),
    Option(("--ssh-extra-args",), "extra ssh arguments (replace the built-in keepalive/batch options)",
           group=CONNECTION, pytest=False, declared_by_testinfra=True, kwargs=dict(metavar="ARGS")),
    Option(("--ansible-inventory",), "inventory for ansible:// hosts", group=CONNECTION, pytest=False,
           declared_by_testinfra=True, kwargs=dict(metavar="FILE")),
    Option(("--sudo",), "run the collection with sudo on the host", group=CONNECTION, pytest=False,
           declared_by_testinfra=True, kwargs=dict(action="store_true")),
    Option(("--connect-timeout",), f"SSH connect timeout in seconds (default {DEFAULT_CONNECT_TIMEOUT_S})",
           group=CONNECTION, kwargs=dict(type=seconds, default=DEFAULT_CONNECT_TIMEOUT_S, metavar="S")),
    Option(("--collect-timeout",), f"seconds the collection may run on a host (default {COLLECT_TIMEOUT_S}); a host "
                                   f"that stalls is reported unreachable after the connect timeout, this and "
                                   f"{BOUND_SLACK_S} s more",
           group=CONNECTION, kwargs=dict(type=seconds, default=COLLECT_TIMEOUT_S, metavar="S")),
)
BY_DEST = {o.dest: o for o in OPTIONS}


def _argparse_kwargs(option: Option) -> dict[str, Any]:
    return {**option.kwargs, "help": option.help}


def add_to_argparse(parser: argparse.ArgumentParser, groups: Iterable[str] = (MAIN, E2E, CONNECTION)) -> None:
    """The command's options of `groups`, in declaration order; E2E under its own heading."""
    e2e = None
    for option in OPTIONS:
        if not option.cli or option.group not in groups:
            continue
        target = parser
        if option.group == E2E:
            e2e = e2e or parser.add_argument_group(E2E_TITLE)
            target = e2e
        target.add_argument(*option.flags, **_argparse_kwargs(option))


def add_to_pytest(parser: Any) -> None:
    """pytest_addoption: every option pytest takes that this project declares (testinfra's are its own)."""
    groups = {MAIN: parser.getgroup("vfio-certify"), CONNECTION: parser.getgroup("vfio-certify"),
              E2E: parser.getgroup("vfio-certify end to end")}
    for option in OPTIONS:
        if option.pytest:
            groups[option.group].addoption(*option.flags, **_argparse_kwargs(option))


def forward_to_pytest(values: argparse.Namespace) -> list[str]:
    """The pytest arguments that give pytest the same values the command was given."""
    argv: list[str] = []
    for option in OPTIONS:
        if not (option.pytest or option.declared_by_testinfra):
            continue
        value, flag = getattr(values, option.dest, option.default()), option.flags[-1]
        if option.kwargs.get("action") == "store_true":
            argv += [flag] if value else []
        elif option.kwargs.get("action") == "append":
            argv += [f"{flag}={v}" for v in value or []]
        elif value not in (None, "") and value != option.default():
            argv.append(f"{flag}={value}")
    return argv


@dataclass
class Validated:
    devices: list[DeviceSpec]
    waivers: list[Waiver]
    baseline: Optional[RunRecord]


def validate(values: Any, hosts: list[str], nested_lab: bool = False) -> Validated:
    """The one check of option values, before anything is collected; raises OptionError (one line).

    `values` is the command's argparse namespace or pytest's config.option; `hosts` the live hosts
    as given (the command's --host, pytest's --hosts split at commas); `nested_lab`: the command
    will boot its own lab and fill in the end-to-end options itself.
    """
    from .devices import DeviceSpecError, parse_devices

    snapshots: list[str] = list(getattr(values, "snapshot", None) or [])
    try:
        devices = parse_devices(getattr(values, "device", None) or [])
    except DeviceSpecError as exc:
        raise OptionError(str(exc)) from None
    usb_file = getattr(values, "usb_file", "") or ""
    if usb_file:  # the end-to-end flow (and the lab it drives) is imported only by a run that uses it
        from .e2e.flow import usb_file_problem

        problem = usb_file_problem(usb_file)
        if problem:
            raise OptionError(problem)
    if getattr(values, "e2e", False) and not nested_lab:
        if not getattr(values, "domain", ""):
            raise OptionError("--e2e with --host, --snapshot or --device needs --domain NAME and --guest "
                              "ssh://root@vm (your running VM on that host); `vfio-certify --e2e` alone runs the "
                              "suite's own nested lab")
        if len(hosts) + len(snapshots) > 1:
            raise OptionError("--e2e takes one host: the one the domain runs on")
        if snapshots:
            raise OptionError(f"--e2e needs a live host, not the snapshot {snapshots[0]}")
    for flag, given in (("--host", hosts), ("--snapshot", snapshots)):
        twice = next((v for i, v in enumerate(given) if v in given[:i]), None)
        if twice is not None:
            raise OptionError(f"{flag} {twice}: given twice")
    for path in snapshots:
        p = Path(path)
        if not p.exists():
            raise OptionError(f"--snapshot {path}: no such folder or file")
        if p.is_file() and not p.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise OptionError(f"--snapshot {path}: expected a snapshot folder or a .tar.gz bundle")
    waivers: list[Waiver] = []
    if getattr(values, "waivers", None):  # the waivers and the diff are imported only by a run that uses them
        from .waivers import WaiverError, load_waivers
        try:
            waivers = load_waivers(values.waivers)
        except WaiverError as exc:
            raise OptionError(str(exc)) from None
    baseline_path = getattr(values, "baseline", None)
    baseline_run = None
    if baseline_path:
        from .diff import DiffInputError, load_run
        try:
            baseline_run = load_run(baseline_path)
        except DiffInputError as exc:
            raise OptionError(str(exc)) from None
    return Validated(devices, waivers, baseline_run)
