"""pytest glue: targets, the facts fixture, recording results, writing the reports.

Loaded by the repository's conftest.py. It does nothing for test modules that do not
use the `host_facts`/`certify` fixtures, so the project's own tests are unaffected.

Targets come from testinfra's --hosts (comma separated) and our --snapshot (repeatable);
with neither, the local host is certified. Each target is collected once per session
(one remote command), then every check judges the same HostFacts.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import pytest

from .collect import CollectError, Target, collect_snapshot
from .devices import DeviceSpec, DeviceSpecError, parse_devices
from .facts import HostFacts, read_host_facts
from .model import CheckResult, HostResult, Outcome, RunResult, Severity
from .report.overview import overview_from_facts
from .snapshot import BundleError, Snapshot, SnapshotError, unpack_bundle

RESULT_KEY = pytest.StashKey[CheckResult]()
TARGET_KEY = pytest.StashKey[str]()


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
        return Collected(facts=facts, seconds=time.monotonic() - begin)

    def host_result(self, target: CertifyTarget) -> HostResult:
        if target.name not in self.hosts:
            self.hosts[target.name] = HostResult(host=target.name, source=target.source)
        return self.hosts[target.name]

    def run_result(self) -> RunResult:
        run = RunResult(started_at=self.started_at, duration_s=time.monotonic() - self.started)
        for target in self.targets:
            host = self.host_result(target)
            collected = self._collected.get(target.name)
            if collected is not None and collected.facts is not None:
                host.overview = overview_from_facts(collected.facts, self.devices, target.source)
            elif collected is not None:
                host.unreachable_reason = collected.error
            run.hosts.append(host)
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
    group.addoption("--connect-timeout", type=int, default=10, metavar="S",
                    help="seconds to wait for an SSH connection to a host (default 10)")


def _targets(config: pytest.Config) -> list[CertifyTarget]:
    opt = config.option
    targets: list[CertifyTarget] = []
    hosts = [h.strip() for h in (getattr(opt, "hosts", None) or "").split(",") if h.strip()]
    for name in hosts:
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
    for path in opt.snapshot:
        targets.append(CertifyTarget(path, "snapshot", snapshot_path=path))
    if not targets:
        targets.append(CertifyTarget("local://", "local", spec=Target("local://")))
    return targets


def pytest_configure(config: pytest.Config) -> None:
    try:
        devices = parse_devices(config.option.device)
    except DeviceSpecError as exc:
        raise pytest.UsageError(str(exc)) from None
    output = Path(config.option.certify_output) if config.option.certify_output else None
    config.stash[SESSION_KEY] = CertifySession(targets=_targets(config), devices=devices, output=output)
    config.addinivalue_line("markers", "check(id): the check id a test in checks/ reports under")
    config.addinivalue_line("markers", "device_kind(kind): only devices of this kind (pci, usb) parametrize the test")
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlColumns(), "vfio-certify-html-columns")


def _session(config: pytest.Config) -> CertifySession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_area_rank)  # stable: file order within an area
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "device" in callspec.params and callspec.params["device"] is None:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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

    def judge(result: CheckResult) -> CheckResult:
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
    result = item.stash.get(RESULT_KEY, None)
    if result is None or call.when != "call":
        if call.when == "call" and report.failed and item.stash.get(TARGET_KEY, None) is None:
            _record_crash(item, report)
        return
    result.duration_s = report.duration
    target_name = item.stash[TARGET_KEY]
    session = _session(item.config)
    target = next(t for t in session.targets if t.name == target_name)
    session.host_result(target).checks.append(result)
    report.user_properties += [("host", target_name), ("check_id", result.id),
                               ("severity", result.severity.value), ("certify_outcome", result.outcome.value)]
    report.certify_result = result  # type: ignore[attr-defined]


def _record_crash(item: pytest.Item, report: pytest.TestReport) -> None:
    """A check that raised instead of judging: an `error` with the exception, never lost."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("certify_target") if callspec else None
    marker = item.get_closest_marker("check")
    if target is None or marker is None:
        return
    param = callspec.id.split("-", 1)[1] if callspec and "-" in callspec.id else ""
    check_id = marker.args[0] + (f"[{param}]" if "[" not in marker.args[0] and param and param != target.name else "")
    message = str(report.longrepr).strip().splitlines()[-1][:300] if report.longrepr else "the check raised"
    from .rules.catalog import severity_of

    result = CheckResult(check_id, Outcome.ERROR, severity_of(marker.args[0]), f"the check itself failed: {message}",
                         duration_s=report.duration)
    _session(item.config).host_result(target).checks.append(result)


def pytest_sessionfinish(session: pytest.Session, exitstatus: Union[int, pytest.ExitCode]) -> None:
    certify = session.config.stash.get(SESSION_KEY, None)
    if certify is None or not any(certify._collected.values()) and not certify.hosts:
        return
    run = certify.run_result()
    session.config.stash[RUN_KEY] = run
    if certify.output is not None:
        write_outputs(run, certify.output)
    certify.close()


RUN_KEY = pytest.StashKey[RunResult]()


def write_outputs(run: RunResult, output: Path) -> None:
    from .report.html import write_certification_page

    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(run.to_summary(), indent=2, ensure_ascii=False) + "\n")
    write_certification_page(run, output / "certification.html")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
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
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.output is not None:
        tr.write_line(f"summary: {session.output / 'summary.json'}  page: {session.output / 'certification.html'}")


class _HtmlColumns:
    """pytest-html: host and severity columns, evidence and remediation beside each check."""

    def pytest_html_results_table_header(self, cells: list) -> None:
        cells.insert(1, "<th>Host</th>")
        cells.insert(2, '<th class="sortable" data-column-type="severity">Severity</th>')

    def pytest_html_results_table_row(self, report, cells: list) -> None:
        props = dict(getattr(report, "user_properties", []))
        from markupsafe import escape

        cells.insert(1, f"<td>{escape(props.get('host', ''))}</td>")
        cells.insert(2, f"<td>{escape(props.get('severity', ''))}</td>")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        result = getattr(report, "certify_result", None)
        if result is None:
            return
        from markupsafe import escape
        from pytest_html import extras

        parts = [f"<p><b>{escape(result.outcome.value)}</b> ({escape(result.severity.value)}): {escape(result.message)}</p>"]
        if result.evidence:
            parts.append("<p>Evidence:</p><pre>" + escape("\n".join(result.evidence)) + "</pre>")
        if result.remediation:
            parts.append("<p>Fix:</p><pre>" + escape(result.remediation) + "</pre>")
        report.extras = getattr(report, "extras", []) + [extras.html("".join(parts))]
