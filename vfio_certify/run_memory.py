"""What a long run does not keep: memory stays flat from ten hosts to a thousand.

Every check's result travels in its pytest report (model.REPORT_PROPERTY) and is gathered into the
session as it arrives; after that the reports are only counted. So, once every plugin has read a
report (a wrapper around pytest_runtest_logreport runs after them all):
  - the result's payload is dropped from the report (and from its item, whose list it shares on the
    worker that ran it);
  - pytest-html, which keeps every report of every test to the end of the run although it has
    already turned a test's reports into its table row when the test's teardown arrives, lets go of
    them (its `_reports`, private: if it is not there, nothing is dropped);
  - pytest's terminal keeps every report of every phase (its `stats`) only to count them in its last
    line ("N failed, N passed") when the run prints no report's detail (--tb=no, -rN: the command's
    options): a check's report is replaced there by one shared stand-in that counts the same;
  - the items deselected at collection (device checks without a --device, e2e.* without --e2e) are only
    counted by the terminal, which kept each of them to the end;
  - pytest's terminal keeps the id of every test it has shown (its `_progress_nodeids_reported`, private:
    if it is not there, nothing changes) only to count them for its progress ([ 42%]): it counts them in
    ShownTests instead, which holds the ids of the tests that have not finished;
  - a host's facts are forgotten once the last of its checks has run (counted from the collection:
    under -j each host runs on one worker; with a distribution that splits a host, nothing is forgotten
    early, so a host is never collected twice).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from .model import REPORT_PROPERTY
from .session import CertifySession


class ForgetWhatWasReported:
    NAME = "vfio-certify-run-memory"

    def __init__(self, session: CertifySession, config: pytest.Config):
        self.session, self.config = session, config
        self.host_of: dict[str, str] = {}
        self.left: Counter[str] = Counter()

    @pytest.hookimpl(trylast=True)  # after the plugin has deselected what does not run
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            callspec = getattr(item, "callspec", None)
            target = callspec.params.get("certify_target") if callspec is not None else None
            if target is not None:
                self.host_of[item.nodeid] = target.name
                self.left[target.name] += 1

    @pytest.hookimpl(trylast=True)  # the terminal's own hook has made its set
    def pytest_sessionstart(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if isinstance(getattr(reporter, "_progress_nodeids_reported", None), set):
            reporter._progress_nodeids_reported = ShownTests(reporter._progress_nodeids_reported)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        shown = getattr(self.config.pluginmanager.get_plugin("terminalreporter"), "_progress_nodeids_reported", None)
        if isinstance(shown, ShownTests):
            shown.finished(nodeid)
        host = self.host_of.pop(nodeid, None)
        if host is not None:
            self.left[host] -= 1
            if self.left[host] <= 0:
                self.session.forget(host)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Any:
        result = yield
        if report.when == "teardown":
            kept = self._html_reports()
            for each in (kept.pop(report.nodeid, {}) if kept is not None else {}).values():
                for phase in each:
                    _drop_payload(phase)
                    phase.extras = []
        _drop_payload(report)
        if "check" in report.keywords and self._counts_only():
            for reports in self._terminal_stats().values():
                if reports and reports[-1] is report:
                    reports[-1] = COUNTED
                    break
        return result

    @pytest.hookimpl(trylast=True)  # after the terminal has added them to its statistics
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """The checks that do not run (no --device: the device checks' placeholders; e2e.* without --e2e): the
        terminal keeps each deselected item to the end only to count it, a third of the items a host collects."""
        if not self._counts_only():
            return
        kept = self._terminal_stats().get("deselected")
        if kept and len(kept) >= len(items) and kept[-1] is items[-1]:
            kept[-len(items):] = [COUNTED] * len(items)

    def _counts_only(self) -> bool:
        """The terminal shows no report's detail: no traceback, no short summary (warnings aside)."""
        if not hasattr(self, "_counting"):
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            self._counting = (reporter is not None and self.config.option.tbstyle == "no"
                              and set(getattr(reporter, "reportchars", "x")) <= {"w"})
        return self._counting

    def _terminal_stats(self) -> dict:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        return getattr(reporter, "stats", {})

    def _html_reports(self) -> Any:
        """pytest-html's reports by node id (its report object is registered without a name)."""
        if not hasattr(self, "_html"):
            from collections import defaultdict

            self._html = next((p._reports for p in self.config.pluginmanager.get_plugins()
                               if type(p).__module__.startswith("pytest_html.")
                               and isinstance(getattr(p, "_reports", None), defaultdict)), None)
        return self._html


class ShownTests:
    """The set of tests pytest's terminal has shown, as far as it uses it: add() and len(). A test is shown by its
    reports (a failed teardown after a failed call: twice), all before its end (pytest_runtest_logfinish): only
    the ids of the tests that have not ended are kept, to count each test once."""

    def __init__(self, shown: set):
        self.open = {str(nodeid) for nodeid in shown}
        self.count = len(self.open)

    def add(self, nodeid: Any) -> None:
        if str(nodeid) not in self.open:
            self.open.add(str(nodeid))
            self.count += 1

    def finished(self, nodeid: str) -> None:
        self.open.discard(nodeid)

    def __len__(self) -> int:
        return self.count


class _Counted:
    """A report pytest's terminal only counts: what its summary line reads of one."""

    __slots__ = ()
    count_towards_summary = True


COUNTED = _Counted()


def _drop_payload(report: Any) -> None:
    properties = getattr(report, "user_properties", None)
    if properties and any(name == REPORT_PROPERTY for name, _ in properties):
        properties[:] = [(name, value) for name, value in properties if name != REPORT_PROPERTY]
