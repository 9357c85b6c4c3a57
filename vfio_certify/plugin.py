"""pytest glue: targets, the facts fixture, recording results, writing the reports.

Loaded by the repository's conftest.py. It does nothing for test modules that do not
use the `host_facts`/`certify` fixtures, so the project's own tests are unaffected.

Targets come from testinfra's --hosts (comma separated) and our --snapshot (repeatable);
with neither, the local host is certified. Each target is collected once per session
(one remote command), then every check judges the same HostFacts.
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import pytest

from .collect import CollectError, Target, collect_snapshot
from .collect.runner import put_venv_on_path
from .devices import DeviceSpec, DeviceSpecError, parse_devices
from .facts import HostFacts, read_host_facts
from .model import CheckResult, HostOverview, HostResult, Outcome, RunResult
from .report.fixplan import fix_plan, plan_summary
from .report.overview import overview_from_facts
from .snapshot import BundleError, Snapshot, SnapshotError, unpack_bundle
from .diff import DiffInputError, RunDiff, RunRecord, diff_runs, load_run, write_overview
from .waivers import Waiver, WaiverError, apply_waivers, load_waivers

RESULT_KEY = pytest.StashKey[CheckResult]()
TARGET_KEY = pytest.StashKey[str]()
# A check's result travels in its report under this user property, so that results judged in
# pytest-xdist workers reach the controller the same way as in a single process.
REPORT_PROPERTY = "vfio_certify"


class CertifyWarning(UserWarning):
    """A check passed with a concern (outcome 'warning')."""


@dataclass
class CertifyTarget:
    name: str  # as given on the command line
    source: str  # local, ssh, snapshot, ansible, ...
    spec: Optional[Target] = None  # live hosts
    snapshot_path: Optional[str] = None  # snapshot folders and bundles


@dataclass
class Collected:
    facts: Optional[HostFacts] = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class CertifySession:
    targets: list[CertifyTarget]
    devices: list[DeviceSpec]
    output: Optional[Path]
    waivers: list[Waiver] = field(default_factory=list)
    baseline: Optional[RunRecord] = None
    diff: Optional[RunDiff] = None
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    started: float = field(default_factory=time.monotonic)
    hosts: dict[str, HostResult] = field(default_factory=dict)
    _collected: dict[str, Collected] = field(default_factory=dict)
    _workdir: Optional[tempfile.TemporaryDirectory] = None

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="vfio-certify-")
        return Path(self._workdir.name)

    def collected(self, target: CertifyTarget) -> Collected:
        if target.name not in self._collected:
            self._collected[target.name] = self._collect(target)
        return self._collected[target.name]

    def _collect(self, target: CertifyTarget) -> Collected:
        begin = time.monotonic()
        dest = self.workdir() / f"target-{len(self._collected)}"
        try:
            if target.spec is not None:
                snap = collect_snapshot(target.spec, dest)
            elif target.snapshot_path and Path(target.snapshot_path).is_file():
                snap = Snapshot(unpack_bundle(target.snapshot_path, dest))
            else:
                snap = Snapshot(target.snapshot_path or "")
            facts = read_host_facts(snap)
        except (CollectError, BundleError, SnapshotError) as exc:
            return Collected(error=str(exc), seconds=time.monotonic() - begin)
        except Exception as exc:  # noqa: BLE001 -- a bug, reported as this host's result, never a traceback
            detail = " ".join(str(exc).split())[:300]
            return Collected(error=f"reading it failed ({type(exc).__name__}{': ' + detail if detail else ''}): "
                                   "a bug in vfio-certify, please report it", seconds=time.monotonic() - begin)
        return Collected(facts=facts, seconds=time.monotonic() - begin)

    def host_result(self, name: str, source: str) -> HostResult:
        if name not in self.hosts:
            self.hosts[name] = HostResult(host=name, source=source)
        return self.hosts[name]

    def add_from_report(self, payload: dict) -> None:
        host = self.host_result(payload["host"], payload["source"])
        host.checks.append(CheckResult.from_summary(payload["result"]))
        if payload.get("overview") is not None:
            host.overview = HostOverview.from_dict(payload["overview"])
        if payload.get("unreachable"):
            host.unreachable_reason = payload["unreachable"]

    def run_result(self) -> RunResult:
        """Hosts in command-line order; a host none of whose checks ran is left out."""
        run = RunResult(started_at=self.started_at, duration_s=time.monotonic() - self.started)
        run.hosts = [self.hosts[t.name] for t in self.targets if t.name in self.hosts]
        for host in run.hosts:  # checklist order, whatever order parallel workers reported in
            host.checks.sort(key=lambda c: (AREA_ORDER.index(c.area) if c.area in AREA_ORDER else len(AREA_ORDER), c.id))
            host.fix_plan = fix_plan(host)
        return run

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


SESSION_KEY = pytest.StashKey[CertifySession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vfio-certify")
    group.addoption("--snapshot", action="append", default=[], metavar="DIR|FILE.tar.gz",
                    help="judge a snapshot folder or bundle instead of a live host (repeatable)")
    group.addoption("--device", action="append", default=[], metavar="ADDR",
                    help="a device to be assigned: PCI 0000:07:00.1 / 07:00.1, USB 004.002 or 152d:9561 (repeatable)")
    group.addoption("--certify-output", default=None, metavar="DIR",
                    help="write summary.json and certification.html to DIR")
    group.addoption("--baseline", default=None, metavar="DIR|summary.json",
                    help="an earlier run's output: report what regressed since (diff.json, the terminal, the page)")
    group.addoption("--waivers", default=None, metavar="FILE.toml",
                    help="known exceptions: check id and host globs, reason, owner, expiry date")
    e2e = parser.getgroup("vfio-certify end to end")
    e2e.addoption("--e2e", action="store_true", help="also attach each device to a running VM and prove it in the guest")
    e2e.addoption("--domain", default="", help="the running libvirt domain to use")
    e2e.addoption("--guest", default="", metavar="URL", help="the domain's guest OS over SSH: ssh://root@vm")
    e2e.addoption("--guest-ssh-config", default=None, metavar="FILE", help="ssh_config for reaching the guest")
    e2e.addoption("--libvirt-uri", default="", metavar="URI", help="libvirt of the host (default from the host URL)")
    e2e.addoption("--usb-file", default="", metavar="PATH[:SHA256]",
                  help="a file on the USB disk to read back (and its sha256 to compare)")
    e2e.addoption("--force", action="store_true", help="assign a NIC the host itself uses (never the default)")
    e2e.addoption("--persistent", action="store_true",
                  help="also attach in the domain's persistent definition (virsh --config), removed again on detach")
    e2e.addoption("--e2e-lab", default="", metavar="TEXT",
                  help="set by `vfio-certify --e2e` when the target is its own nested lab: said in every e2e result")
    e2e.addoption("--journal", default=None, metavar="FILE", help="the change journal (default /var/lib/vfio-certify/journal.jsonl)")
    group.addoption("--connect-timeout", type=int, default=10, metavar="S",
                    help="seconds to wait for an SSH connection to a host (default 10)")


def _expand_ansible(hosts: list[str], inventory: Optional[str]) -> list[str]:
    """ansible://GROUP or ansible://all becomes one ansible://HOST target per inventory host."""
    expanded: list[str] = []
    for spec in hosts:
        if not spec.startswith("ansible://"):
            expanded.append(spec)
            continue
        try:
            from testinfra.backend.ansible import AnsibleBackend

            put_venv_on_path()
            names = AnsibleBackend.get_hosts(spec[len("ansible://"):] or "all", ansible_inventory=inventory)
        except Exception:  # no ansible, bad inventory: the collection will say why, per host
            names = []
        expanded += [f"ansible://{n}" for n in names] or [spec]
    return list(dict.fromkeys(expanded))


def _targets(config: pytest.Config) -> list[CertifyTarget]:
    opt = config.option
    targets: list[CertifyTarget] = []
    hosts = [h.strip() for h in (getattr(opt, "hosts", None) or "").split(",") if h.strip()]
    for name in _expand_ansible(hosts, getattr(opt, "ansible_inventory", None)):
        spec = Target(
            spec=name if "://" in name else f"ssh://{name}",
            ssh_config=getattr(opt, "ssh_config", None),
            ssh_identity_file=getattr(opt, "ssh_identity_file", None),
            ssh_extra_args=getattr(opt, "ssh_extra_args", None),
            ansible_inventory=getattr(opt, "ansible_inventory", None),
            sudo=bool(getattr(opt, "sudo", False)),
            connect_timeout_s=opt.connect_timeout,
        )
        targets.append(CertifyTarget(name, spec.source, spec=spec))
    for path in dict.fromkeys(opt.snapshot):  # a snapshot named twice is judged once
        targets.append(CertifyTarget(path, "snapshot", snapshot_path=path))
    if not targets:
        targets.append(CertifyTarget("local://", "local", spec=Target("local://")))
    return targets


def pytest_configure(config: pytest.Config) -> None:
    try:
        devices = parse_devices(config.option.device)
    except DeviceSpecError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        waivers = load_waivers(config.option.waivers) if config.option.waivers else []
    except WaiverError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        baseline = load_run(config.option.baseline) if config.option.baseline else None
    except DiffInputError as exc:
        raise pytest.UsageError(f"--baseline: {exc}") from None
    output = Path(config.option.certify_output) if config.option.certify_output else None
    certify_session = CertifySession(targets=_targets(config), devices=devices, output=output, waivers=waivers,
                                     baseline=baseline)
    config.stash[SESSION_KEY] = certify_session
    config.pluginmanager.register(_ResultGatherer(certify_session), "vfio-certify-results")
    config.addinivalue_line("markers", "check(id): the check id a test in checks/ reports under")
    config.addinivalue_line("markers", "device_kind(kind): only devices of this kind (pci, usb) parametrize the test")
    config.addinivalue_line("markers", "e2e: an end-to-end test (runs with --e2e)")
    if config.option.e2e and len(certify_session.targets) != 1:
        raise pytest.UsageError("--e2e takes one host: the one the domain runs on")
    if config.option.e2e and certify_session.targets[0].spec is None:
        raise pytest.UsageError(f"--e2e needs a live host, not the snapshot {certify_session.targets[0].name}")
    if config.option.e2e and not config.option.domain:
        raise pytest.UsageError("--e2e needs --domain NAME and --guest ssh://root@vm (your running VM on the host); "
                                "`vfio-certify --e2e` alone runs the suite's own nested lab")
    from .e2e.flow import usb_file_problem

    if usb_file_problem(config.option.usb_file):
        raise pytest.UsageError(usb_file_problem(config.option.usb_file))
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlColumns(), "vfio-certify-html-columns")


def _session(config: pytest.Config) -> CertifySession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("check") is None:
        return  # only the checklist (checks/) is parametrized by host and device
    session = _session(metafunc.config)
    if "certify_target" in metafunc.fixturenames:
        metafunc.parametrize("certify_target", session.targets, ids=[t.name for t in session.targets], scope="session")
    if "device" in metafunc.fixturenames:
        kinds = {m.args[0] for m in metafunc.definition.iter_markers("device_kind")}
        devices = [d for d in session.devices if not kinds or d.kind in kinds]
        # No device named: one placeholder, deselected below, instead of pytest's noisy empty-set skip.
        metafunc.parametrize("device", devices or [None], ids=[d.key for d in devices] or ["no-device"])


# Checklist order: what a person fixes first comes first (reports, JUnit and summary.json follow it).
AREA_ORDER = ["host", "cpu", "kvm", "kernel", "firmware", "iommu", "vfio", "device"]


def _area_rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker("check")
    area = marker.args[0].split(".", 1)[0] if marker else ""
    return AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With pytest-xdist (-j), a host's checks all go to one worker: one collection per host.

    xdist's own loadgroup cannot be used: it renames node ids, which pytest 9 no longer
    honours. This scheduler groups by the host named first in each check's parameters. The
    controller has node ids only, not items: a host is matched as pytest writes it into the id
    (non-ASCII escaped, `kvm-\\xfc`), and as given (escaping disabled by the ini option).
    """
    if config.option.dist not in ("load", "loadgroup", "loadscope"):
        return None  # the user chose another distribution on purpose
    try:  # how pytest escapes non-ASCII ids (kvm-ü -> kvm-\xfc); private, so with a fallback of the same rule
        from _pytest.compat import ascii_escaped
    except ImportError:  # pragma: no cover
        def ascii_escaped(text: str) -> str:
            return text.encode("unicode_escape").decode("ascii")
    from xdist.scheduler import LoadScopeScheduling

    spelled = {form: t.name for t in _session(config).targets for form in (t.name, ascii_escaped(t.name))}
    forms = sorted(spelled, key=len, reverse=True)

    class ByHost(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") and "[" in nodeid else ""
            return next((spelled[f] for f in forms if params == f or params.startswith(f + "-")), nodeid)

    return ByHost(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_area_rank)  # stable: file order within an area
    keep, drop = [], []
    e2e = config.option.e2e
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "device" in callspec.params and callspec.params["device"] is None:
            drop.append(item)
            continue
        marker = item.get_closest_marker("e2e")
        if marker is not None and not e2e:
            drop.append(item)
            continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def e2e_session(request: pytest.FixtureRequest, certify_target: CertifyTarget):
    """The end-to-end session: leftovers undone, then the user's domain or the lab, torn down at the end."""
    from .e2e.flow import E2EOptions
    from .e2e.session import E2EConfig, E2ESession, E2ESetupError, recollect_for

    opt = request.config.option
    known_file, _, sha256 = opt.usb_file.partition(":")
    config = E2EConfig(domain=opt.domain, guest=opt.guest, guest_ssh_config=opt.guest_ssh_config,
                       libvirt_uri=opt.libvirt_uri, journal=opt.journal, lab_note=opt.e2e_lab,
                       options=E2EOptions(known_file=known_file, known_sha256=sha256.lower(), force=opt.force,
                                          persistent=opt.persistent))
    session = E2ESession(config, certify_target.spec.spec, recollect_for(certify_target.spec))
    try:
        session.start()
    except E2ESetupError as exc:  # each e2e check reports it as an error: never lost, never certified
        session.close()
        session.setup_error = str(exc)
    except Exception as exc:  # the lab failed to boot, libvirt died: the same, with the reason
        session.close()
        session.setup_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    yield session
    session.close()


@pytest.fixture(scope="session")
def certify_session(request: pytest.FixtureRequest) -> CertifySession:
    return _session(request.config)


@pytest.fixture(scope="session")
def named_devices(certify_session: CertifySession) -> list[DeviceSpec]:
    return certify_session.devices


@pytest.fixture(scope="session")
def collected(certify_target: CertifyTarget, certify_session: CertifySession) -> Collected:
    return certify_session.collected(certify_target)


@pytest.fixture
def host_facts(collected: Collected, certify_target: CertifyTarget) -> HostFacts:
    if collected.facts is None:
        pytest.skip(f"not judged: {certify_target.name} is unreachable ({collected.error})")
    return collected.facts


@pytest.fixture
def certify(request: pytest.FixtureRequest, certify_target: CertifyTarget):
    """certify(result): record a CheckResult for this test and turn its outcome into pytest's."""

    waivers = _session(request.config).waivers

    def judge(result: CheckResult) -> CheckResult:
        result = apply_waivers(result, certify_target.name, waivers)
        request.node.stash[RESULT_KEY] = result
        request.node.stash[TARGET_KEY] = certify_target.name
        text = _describe(result)
        if result.outcome in (Outcome.FAILED, Outcome.ERROR):
            pytest.fail(text, pytrace=False)
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.message)
        if result.outcome is Outcome.WARNING:
            warnings.warn(CertifyWarning(f"{result.id}: {result.message}"), stacklevel=2)
        return result

    return judge


def _describe(result: CheckResult) -> str:
    lines = [f"[{result.severity.value}] {result.id}: {result.message}"]
    lines += [f"  evidence: {e}" for e in result.evidence]
    if result.remediation:
        lines.append("  fix:")
        lines += [f"    {line}" for line in result.remediation.splitlines()]
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # A check's result is recorded from its call; a check whose set-up raised (a fixture crashed) has no
    # call, and is recorded from the set-up as an error: a host whose checks crash is never left out.
    if call.when != "call" and not (call.when == "setup" and report.failed):
        return
    callspec = getattr(item, "callspec", None)
    target: Optional[CertifyTarget] = callspec.params.get("certify_target") if callspec else None
    if target is None:
        return
    result = item.stash.get(RESULT_KEY, None)
    if result is None:
        if not report.failed or item.get_closest_marker("check") is None:
            return
        result = _crash_result(item, report, call)
    result.duration_s = report.duration
    payload: dict = {"host": target.name, "source": target.source, "result": result.to_payload()}
    if item.get_closest_marker("check").args[0] == "host.reachable":
        collected: Optional[Collected] = item.funcargs.get("collected")  # type: ignore[attr-defined]
        if collected is not None and collected.facts is not None:
            session = _session(item.config)
            payload["overview"] = overview_from_facts(collected.facts, session.devices, target.source).to_dict()
        elif collected is not None:
            payload["unreachable"] = collected.error
    report.user_properties += [("host", target.name), ("check_id", result.id), ("severity", result.severity.value),
                               ("certify_outcome", result.outcome.value), (REPORT_PROPERTY, json.dumps(payload))]


def result_of(report: pytest.TestReport) -> Optional[CheckResult]:
    for name, value in getattr(report, "user_properties", []):
        if name == REPORT_PROPERTY:
            return CheckResult.from_summary(json.loads(value)["result"])
    return None


def _crash_result(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo) -> CheckResult:
    """A check that raised instead of judging: an `error` naming the exception, never lost."""
    from .rules.catalog import severity_of

    base = item.get_closest_marker("check").args[0]
    params = [getattr(v, "key", v) for k, v in item.callspec.params.items()  # type: ignore[attr-defined]
              if k != "certify_target"]
    check_id = base + (f"[{'-'.join(str(p) for p in params)}]" if params else "")
    if call.excinfo is not None:
        detail = " ".join(str(call.excinfo.value).split())
        message = f"{call.excinfo.typename}{': ' + detail if detail else ''}"[:300]
    else:
        lines = str(report.longrepr).strip().splitlines() if report.longrepr else []
        message = lines[-1][:300] if lines else "the check raised"
    return CheckResult(check_id, Outcome.ERROR, severity_of(base), f"the check itself failed: {message}",
                       remediation="A bug in vfio-certify: please report it with the pytest output above.")


class _ResultGatherer:
    """Reads every report where reports arrive (the controller under xdist): results are gathered here only."""

    def __init__(self, session: CertifySession):
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == REPORT_PROPERTY:
                self.session.add_from_report(json.loads(value))
                return


def pytest_sessionfinish(session: pytest.Session, exitstatus: Union[int, pytest.ExitCode]) -> None:
    certify = session.config.stash.get(SESSION_KEY, None)
    if certify is None or hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        if certify is not None:
            certify.close()
        return
    if not certify.hosts and certify.output is None:  # not a certification run (the project's own tests)
        certify.close()
        return
    run = certify.run_result()  # no host judged (-k deselected every check): an empty summary, still written
    session.config.stash[RUN_KEY] = run
    if certify.baseline is not None:
        current = RunRecord(str(certify.output or "this run"), run.to_summary(), overviews_of(run))
        certify.diff = diff_runs(certify.baseline, current)
    if certify.output is not None:
        write_outputs(run, certify.output, certify.diff)
    certify.close()


RUN_KEY = pytest.StashKey[RunResult]()


def overviews_of(run: RunResult) -> dict[str, dict]:
    """What a later diff needs beyond summary.json: kernel, command line, groups and drivers per host."""
    return {h.host: h.overview.to_dict() for h in run.hosts if not h.unreachable_reason}


def write_outputs(run: RunResult, output: Path, diff: Optional[RunDiff] = None) -> None:
    from .report.html import write_certification_page, write_index_page

    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(run.to_summary(), indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    write_overview(output / "overview.json", overviews_of(run))
    if diff is not None:
        (output / "diff.json").write_text(json.dumps(diff.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    write_certification_page(run, output / "certification.html")
    write_index_page(run, diff, output / "index.html")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not run.hosts:
        return
    tr = terminalreporter
    tr.section("vfio-certify verdict")
    for host in run.hosts:
        line = f"{host.host}: {host.verdict.value.replace('-', ' ').upper()}"
        if host.unreachable_reason:
            line += f" ({host.unreachable_reason})"
        blocking = [c.id for c in host.checks if c.blocks_certification]
        if blocking:
            line += f" - required checks failed: {', '.join(blocking)}"
        tr.write_line(line, red=bool(blocking or host.unreachable_reason), green=not (blocking or host.unreachable_reason))
        if host.fix_plan:
            tr.write_line(f"  fix plan ({plan_summary(host.fix_plan)}):")
            for number, step in enumerate(host.fix_plan, 1):
                tr.write_line(f"  {number}. " + "\n     ".join(step.step.splitlines()) + (" [reboot]" if step.reboot else ""))
                for command in step.commands:
                    tr.write_line(f"       $ {command}")
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.diff is not None:
        tr.section("vfio-certify diff against the baseline")
        for line in session.diff.text().splitlines():
            tr.write_line(line, red="REGRESSION" in line.split(": ")[1:2] or line == "regression")
    if session is not None and session.output is not None:
        tr.write_line(f"summary: {session.output / 'summary.json'}  pages: {session.output / 'index.html'}, "
                      f"{session.output / 'certification.html'}")


class _HtmlColumns:
    """pytest-html: host and severity columns, evidence and remediation beside each check."""

    def pytest_html_results_table_header(self, cells: list) -> None:
        cells.insert(1, "<th>Host</th>")
        cells.insert(2, '<th class="sortable" data-column-type="severity">Severity</th>')

    def pytest_html_results_table_row(self, report, cells: list) -> None:
        props = dict(getattr(report, "user_properties", []))
        from markupsafe import escape

        # pytest-html puts the raw test id (host names, snapshot paths: untrusted) into its cell, and
        # its app.js inserts cells with innerHTML: escape it.
        start, end = '<td class="col-testId">', "</td>"
        for index, cell in enumerate(cells):
            if isinstance(cell, str) and cell.startswith(start) and cell.endswith(end):
                cells[index] = f"{start}{escape(cell[len(start):-len(end)])}{end}"
        cells.insert(1, f"<td>{escape(props.get('host', ''))}</td>")
        cells.insert(2, f"<td>{escape(props.get('severity', ''))}</td>")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        result = result_of(report)
        if result is None:
            return
        from markupsafe import escape
        from pytest_html import extras

        def text(value: str) -> str:  # str(), not Markup: Markup + str would escape our own tags
            return str(escape(value))

        parts = [f"<p><b>{text(result.outcome.value)}</b> ({text(result.severity.value)}): {text(result.message)}</p>"]
        if result.evidence:
            parts.append("<p>Evidence:</p><pre>" + text("\n".join(result.evidence)) + "</pre>")
        if result.remediation:
            parts.append("<p>Fix:</p><pre>" + text(result.remediation) + "</pre>")
        report.extras = getattr(report, "extras", []) + [extras.html("".join(parts))]
