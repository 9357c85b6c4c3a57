"""pytest glue: options, parametrization, fixtures, recording results, the terminal verdict.

Loaded by the repository's conftest.py. It does nothing for test modules that do not
use the `host_facts`/`certify` fixtures, so the project's own tests are unaffected.

The work is elsewhere: the options and their validation in options.py; the targets (testinfra's
--hosts, comma separated, and --snapshot, repeatable), the collection cache and the gathered
results in session.py; the files a run writes in report/outputs.py; pytest-html's columns in
report/pytest_html_columns.py; the xdist scheduler in xdist_by_host.py.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional, Union

import pytest

from . import options
from .devices import DeviceSpec
from .facts import HostFacts
from .model import REPORT_PROPERTY, CheckResult, Outcome, RunResult, area_rank, describe
from .output_plugin import OwnedOutput
from .report.outputs import write_outputs
from .report.terminal import write_verdicts
from .run_memory import ForgetWhatWasReported
from .session import CertifySession, Collected, crash_result
from .targets import CertifyTarget, targets_from
from .waivers import apply_waivers
from .xdist_by_host import DISTRIBUTIONS, HostBatches, share_of

RESULT_KEY = pytest.StashKey[CheckResult]()


class CertifyWarning(UserWarning):
    """A check passed with a concern (outcome 'warning')."""


SESSION_KEY = pytest.StashKey[CertifySession]()
SPLIT_KEY = pytest.StashKey[bool]()  # -j: each worker collects a batch of the hosts (xdist_by_host.HostBatches)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to_pytest(parser)


def _targets(config: pytest.Config) -> list[CertifyTarget]:
    hosts = [h.strip() for h in (getattr(config.option, "hosts", None) or "").split(",") if h.strip()]
    return targets_from(hosts, config.option.snapshot, config.option)


@pytest.hookimpl(tryfirst=True)  # before JUnit's and pytest-html's: they write into the folder this run owns
def pytest_configure(config: pytest.Config) -> None:
    targets = _targets(config)
    try:  # the same validation as the command's (which has already run it when it started pytest)
        valid = options.validate(config.option, [t.name for t in targets if t.spec is not None])
    except options.OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    output = Path(config.option.certify_output) if config.option.certify_output else None
    certify_session = CertifySession(targets=targets, devices=valid.devices, output=output, waivers=valid.waivers,
                                     baseline=valid.baseline)
    if output is not None and not hasattr(config, "workerinput"):  # the controller writes the reports
        config.pluginmanager.register(OwnedOutput.take(config, output), OwnedOutput.NAME)
    if getattr(config.option, "dist", "no") in DISTRIBUTIONS and getattr(config.option, "tx", None) \
            and not hasattr(config, "workerinput"):  # -j: each worker collects a batch of the hosts, then exits
        config.pluginmanager.register(HostBatches(config, len(targets), config.option.hosts_per_worker),
                                      HostBatches.NAME)
        config.stash[SPLIT_KEY] = True
    config.stash[SESSION_KEY] = certify_session
    if not hasattr(config, "workerinput"):  # results are gathered where reports arrive: the controller under xdist
        config.pluginmanager.register(_ResultGatherer(certify_session), "vfio-certify-results")
    config.pluginmanager.register(ForgetWhatWasReported(certify_session, config), ForgetWhatWasReported.NAME)
    config.addinivalue_line("markers", "check(id): the check id a test in checks/ reports under")
    config.addinivalue_line("markers", "device_kind(kind): only devices of this kind (pci, usb) parametrize the test")
    config.addinivalue_line("markers", "e2e: an end-to-end test (runs with --e2e)")
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None):
        from .report.pytest_html_columns import HtmlColumns

        config.pluginmanager.register(HtmlColumns(), "vfio-certify-html-columns")


def _session(config: pytest.Config) -> CertifySession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("check") is None:
        return  # only the checklist (checks/) is parametrized by host and device
    session = _session(metafunc.config)
    if "certify_target" in metafunc.fixturenames:  # under -j, this worker's batch of the targets
        targets = share_of(session.targets, getattr(metafunc.config, "workerinput", None))
        session.judge_here(targets)  # its collections start ahead of their checks
        # No target in this worker's batch: one placeholder, deselected below.
        metafunc.parametrize("certify_target", targets or [None], ids=[t.name for t in targets] or ["no-host"],
                             scope="session")
    if "device" in metafunc.fixturenames:
        kinds = {m.args[0] for m in metafunc.definition.iter_markers("device_kind")}
        devices = [d for d in session.devices if not kinds or d.kind in kinds]
        # No device named: one placeholder, deselected below, instead of pytest's noisy empty-set skip.
        metafunc.parametrize("device", devices or [None], ids=[d.key for d in devices] or ["no-device"])


def _area_rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker("check")
    return area_rank(marker.args[0].split(".", 1)[0] if marker else "")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With pytest-xdist (-j), a host's checks all go to one worker: one collection per host."""
    from .xdist_by_host import by_host_scheduler

    split = config.stash.get(SPLIT_KEY, False)
    return by_host_scheduler(config, log, [t.name for t in _session(config).targets], split=split,
                             batches=config.pluginmanager.get_plugin(HostBatches.NAME) if split else None)


def _runs(item: pytest.Item, e2e: bool) -> bool:
    """Not a placeholder (no --device, no host in this worker's share), not an e2e.* check without --e2e."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(name in callspec.params and callspec.params[name] is None
                                    for name in ("device", "certify_target")):
        return False
    return item.get_closest_marker("e2e") is None or e2e


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object):
    """Deselected as each check's items are made, not after every item of every host is: a check that does not
    run for any host (the device checks without --device) never holds its items to the end of collection."""
    made = yield
    if not isinstance(made, list) or not made or not all(isinstance(i, pytest.Function) for i in made):
        return made
    e2e = collector.config.option.e2e
    keep: list[pytest.Function] = []
    drop: list[pytest.Function] = []
    for item in made:
        (keep if _runs(item, e2e) else drop).append(item)
    if drop:
        collector.config.hook.pytest_deselected(items=drop)
    return keep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_area_rank)  # stable: file order within an area


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
        text = describe(result)
        if result.outcome in (Outcome.FAILED, Outcome.ERROR):
            pytest.fail(text, pytrace=False)
        if result.outcome is Outcome.SKIPPED:  # JUnit and pytest say why: [not-collected] or [not-applicable]
            pytest.skip(f"[{result.to_summary()['skip_reason']}] {result.message}")
        if result.outcome is Outcome.WARNING:
            warnings.warn(CertifyWarning(f"{result.id}: {result.message}"), stacklevel=2)
        return result

    return judge


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
    if result is not None:
        del item.stash[RESULT_KEY]  # it travels in the report: the item, kept to the end of the run, lets it go
    if result is None:
        if not report.failed or item.get_closest_marker("check") is None:
            return
        result = _crash_result(item, report, call)
    result.duration_s = report.duration
    # host.reachable also carries what the host's collection gave: its overview, or why it failed
    reachability = item.get_closest_marker("check").args[0] == "host.reachable"
    collected = item.funcargs.get("collected") if reachability else None  # type: ignore[attr-defined]
    payload = _session(item.config).report_payload(target, result, collected)
    report.user_properties += [("host", target.name), ("check_id", result.id), ("severity", result.severity.value),
                               ("certify_outcome", result.outcome.value), (REPORT_PROPERTY, json.dumps(payload))]


def _crash_result(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo) -> CheckResult:
    """A check that raised instead of judging: an `error` naming the exception, never lost."""
    params = [getattr(v, "key", v) for k, v in item.callspec.params.items()  # type: ignore[attr-defined]
              if k != "certify_target"]
    if call.excinfo is not None:
        detail = " ".join(str(call.excinfo.value).split())
        message = f"{call.excinfo.typename}{': ' + detail if detail else ''}"
    else:
        lines = str(report.longrepr).strip().splitlines() if report.longrepr else []
        message = lines[-1] if lines else "the check raised"
    return crash_result(item.get_closest_marker("check").args[0], params, message)


class _ResultGatherer:
    """Reads every report where reports arrive (the controller under xdist): results are gathered here only."""

    def __init__(self, session: CertifySession):
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == REPORT_PROPERTY:
                self.session.add_from_report(json.loads(value), report.nodeid, report.when)
                return


RUN_KEY = pytest.StashKey[RunResult]()


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the hosts' verdicts go into it
def pytest_sessionfinish(session: pytest.Session, exitstatus: Union[int, pytest.ExitCode]) -> None:
    certify = session.config.stash.get(SESSION_KEY, None)
    if certify is None or hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        if certify is not None:
            certify.close()
        return
    if not certify.hosts and certify.output is None:  # not a certification run (the project's own tests)
        certify.close()
        return
    # Written host by host from the results streamed to disk; no host judged (-k deselected every check): an
    # empty summary, still written. Without an output folder the files go to the run's scratch folder (the
    # verdicts and the diff against a baseline come from the same writing).
    run = certify.run_header()
    owned: Optional[OwnedOutput] = session.config.pluginmanager.get_plugin(OwnedOutput.NAME)
    staging = owned.folder.staging if owned is not None else None
    certify.diff = write_outputs(certify.hosts, certify.host_names(), run, staging or certify.workdir() / "reports",
                                 certify.baseline, str(certify.output or "this run"))
    session.config.stash[RUN_KEY] = run  # each host's digest: its verdict, fix plan and what did not pass
    _verdicts_into_junit(session.config, run)
    certify.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not run.hosts:
        return
    session = config.stash.get(SESSION_KEY, None)
    write_verdicts(terminalreporter, run, session.diff if session else None, session.output if session else None)


def _verdicts_into_junit(config: pytest.Config, run: RunResult) -> None:
    """junit.xml's suite properties carry each host's verdict (an incomplete host, with what to collect)."""
    from _pytest.junitxml import xml_key

    from .report.junit import host_verdict_property

    xml = config.stash.get(xml_key, None)
    for host in run.hosts if xml is not None else []:
        xml.add_global_property(*host_verdict_property(host))
