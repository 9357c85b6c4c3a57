"""One certification run without pytest: its targets (targets.py), the collection cache and the results it
gathers. Each target is collected once per run (one remote command), then every check judges the same
HostFacts. plugin.py binds this to pytest (fixtures, hooks); tests use it directly.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .collect import CollectError, collect_snapshot
from .collect.runner import discard_early, start_ahead
from .devices import DeviceSpec
from .facts import HostFacts, read_host_facts
from .model import CheckResult, Outcome, RunResult, area_rank
from .report.fixplan import fix_plan
from .result_stream import ResultStream
from .snapshot import BundleError, Snapshot, SnapshotError, unpack_bundle
from .targets import CertifyTarget

if TYPE_CHECKING:  # a run with a baseline imports the diff (finish)
    from .diff import RunDiff, RunRecord
    from .waivers import Waiver


def crash_result(base_id: str, params: list[Any], message: str) -> CheckResult:
    """A check that raised instead of judging: an `error` under its own id naming the exception."""
    from .rules.catalog import severity_of

    check_id = base_id + (f"[{'-'.join(str(p) for p in params)}]" if params else "")
    return CheckResult(check_id, Outcome.ERROR, severity_of(base_id), f"the check itself failed: {message[:300]}",
                       remediation="A bug in vfio-certify: please report it with the pytest output above.")


# Live hosts whose collection starts while an earlier one is judged: a host's answer takes longer than
# judging it (the connection, the host's script: mostly waiting on this side), so a process judging many
# hosts waits on none but the first. Each is one ssh process and one session, as when it is collected in turn.
COLLECT_AHEAD = 3


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
    _stream: Optional[ResultStream] = None  # each check's result, on disk as it arrives (result_stream.py)
    _collected: dict[str, Collected] = field(default_factory=dict)
    _made: int = 0  # folders made in the workdir, one per bundle unpacked
    _workdir: Optional[tempfile.TemporaryDirectory] = None
    _judged_here: list[CertifyTarget] = field(default_factory=list)  # this process's targets, in order (judge_here)

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="vfio-certify-")
        return Path(self._workdir.name)

    def judge_here(self, targets: list[CertifyTarget]) -> None:
        """The targets this process judges, in the order it judges them (under -j, a worker's share): while one
        is collected and judged, the next COLLECT_AHEAD live hosts' collections already run."""
        self._judged_here = list(targets)

    def collected(self, target: CertifyTarget) -> Collected:
        if target.name not in self._collected:
            self._start_ahead_of(target)
            self._collected[target.name] = self._collect(target)
        return self._collected[target.name]

    def _start_ahead_of(self, target: CertifyTarget) -> None:
        names = [t.name for t in self._judged_here]
        if target.name not in names:
            return
        after = names.index(target.name) + 1
        for ahead in self._judged_here[after:after + COLLECT_AHEAD]:
            if ahead.spec is not None and ahead.name not in self._collected:
                start_ahead(ahead.spec)

    def forget(self, name: str) -> None:
        """A target whose checks have all run: its facts are not kept to the end of a long run."""
        self._collected.pop(name, None)

    def _collect(self, target: CertifyTarget) -> Collected:
        begin = time.monotonic()
        try:
            if target.spec is not None:
                snap = collect_snapshot(target.spec)  # in memory: read once, judged, let go
            elif target.snapshot_path and Path(target.snapshot_path).is_file():
                dest, self._made = self.workdir() / f"target-{self._made}", self._made + 1
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

    @property
    def hosts(self) -> ResultStream:
        """The hosts whose results arrived (their names, in order of arrival; the results on disk)."""
        if self._stream is None:
            self._stream = ResultStream(self.workdir() / "results")
        return self._stream

    def host_names(self) -> list[str]:
        """The hosts that reported, in command-line order (a host none of whose checks ran is left out)."""
        return [t.name for t in self.targets if t.name in self.hosts]

    def report_payload(self, target: CertifyTarget, result: CheckResult, collected: Optional[Collected] = None) -> dict:
        """One check's result as it travels to add_from_report; with the target's collection (host.reachable's),
        also the host's overview or why it could not be collected."""
        payload: dict = {"host": target.name, "source": target.source, "result": result.to_payload()}
        if collected is not None and collected.facts is not None:
            from .report.overview import overview_from_facts

            payload["overview"] = overview_from_facts(collected.facts, self.devices, target.source).to_dict()
        elif collected is not None:
            payload["unreachable"] = collected.error
        return payload

    def add_from_report(self, payload: dict, nodeid: str = "", when: str = "call") -> None:
        """One check's result as the plugin sends it from wherever it ran (an xdist worker too), with its test's
        id and the phase it came from (for junit.xml)."""
        self.hosts.add(payload, nodeid, when)

    def run_header(self) -> RunResult:
        """The run's start and duration so far, no host yet."""
        return RunResult(started_at=self.started_at, duration_s=time.monotonic() - self.started)

    def run_result(self) -> RunResult:
        """Every host's whole results in memory (a small run's API; a command run writes host by host:
        report/outputs.py). Hosts in command-line order; a host none of whose checks ran is left out."""
        run = self.run_header()
        run.hosts = [self.hosts.read(name)[0] for name in self.host_names()]
        for host in run.hosts:  # checklist order, whatever order parallel workers reported in
            host.checks.sort(key=lambda c: (area_rank(c.area), c.id))
            host.fix_plan = fix_plan(host)
        return run

    def finish(self) -> RunResult:
        """The run's result, and its diff against the baseline when one was given (in self.diff)."""
        run = self.run_result()
        if self.baseline is not None:
            from .diff import RunRecord, diff_runs
            from .report.outputs import overviews_of

            current = RunRecord(str(self.output or "this run"), run.to_summary(), overviews_of(run))
            self.diff = diff_runs(self.baseline, current)
        return run

    def close(self) -> None:
        discard_early()  # collections started ahead of hosts this run did not get to
        if self._stream is not None:
            self._stream.close()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
