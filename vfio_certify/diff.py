"""Nightly regression: what changed between two runs, per host.

A run's output folder holds summary.json (the contract, specs/summary.md) and
overview.json (each host's kernel, command line and IOMMU groups with their devices and
drivers). The diff reads both: checks newly failing, newly passing or no longer checked, hosts
that became unreachable or reachable again, kernel and command-line changes, and every device
whose IOMMU group membership or driver changed. A regression (exit non-zero) is a host whose
verdict got worse (certified -> incomplete -> not-certified -> unreachable), a check that newly fails,
or a host of the baseline missing from the run. A check judged in the baseline and skipped as
not-collected tonight is "no longer collected", never "newly passing"; an incomplete host says what to
collect. Summaries written before skip_reason existed load too: their skipped checks are left as they were.
Checks are compared only when both runs judged the host (an unreachable host records only
host.reachable); a run whose overview.json is missing or unreadable says what was not compared.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .model import OVERVIEW_FORMAT, CheckResult, to_finish
_GOOD = {"passed", "skipped", "waived", "warning"}
_BAD = {"failed", "error"}
_VERDICT_RANK = {"certified": 0, "incomplete": 1, "not-certified": 2, "unreachable": 3}
NOT_COLLECTED = "skipped (not collected)"  # a check's state in the diff when it lacked evidence


def _state(check: dict) -> str:
    """The check's outcome; a skip for lack of evidence is a state of its own (an old summary's skip stays "skipped")."""
    if check.get("outcome") == "skipped" and check.get("skip_reason") == "not-collected":
        return NOT_COLLECTED
    return check.get("outcome", "absent")


class DiffInputError(Exception):
    """A run output that cannot be read; str() is one line."""


@dataclass
class RunRecord:
    source: str
    summary: dict
    overviews: dict[str, dict]  # host -> HostOverview as a dict
    overview_problem: str = ""  # why overviews is empty when it should not be: "<path>: missing"

    def hosts(self) -> dict[str, dict]:
        return {h["host"]: h for h in self.summary.get("hosts", [])}


def load_run(path: str | Path) -> RunRecord:
    """A run output folder, or a summary.json (with overview.json beside it when there is one)."""
    path = Path(path)
    summary_path = path / "summary.json" if path.is_dir() else path
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DiffInputError(f"{summary_path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DiffInputError(f"{summary_path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or summary.get("format") != "certify-summary/1":
        raise DiffInputError(f"{summary_path}: not a certify-summary/1 file")
    overviews: dict[str, dict] = {}
    overview_path, problem = summary_path.parent / "overview.json", ""
    try:
        data = json.loads(overview_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = f"{overview_path}: missing"
    except OSError as exc:
        problem = f"{overview_path}: cannot read ({exc.strerror or exc})"
    except ValueError:
        problem = f"{overview_path}: not valid JSON"
    else:
        if isinstance(data, dict) and data.get("format") == OVERVIEW_FORMAT and isinstance(data.get("hosts"), dict):
            overviews = data["hosts"]
        else:
            problem = f"{overview_path}: not a {OVERVIEW_FORMAT} file"
    return RunRecord(str(path), summary, overviews, problem)


def write_overview(path: Path, overviews: dict[str, dict]) -> None:
    path.write_text(json.dumps({"format": OVERVIEW_FORMAT, "hosts": overviews}, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")


@dataclass
class CheckChange:
    id: str
    old: str  # outcome, or "absent"
    new: str
    message: str


@dataclass
class HostDiff:
    host: str
    old_verdict: str
    new_verdict: str
    newly_failing: list[CheckChange] = field(default_factory=list)
    newly_passing: list[CheckChange] = field(default_factory=list)
    no_longer_checked: list[CheckChange] = field(default_factory=list)
    no_longer_collected: list[CheckChange] = field(default_factory=list)  # judged in the baseline, evidence missing now
    to_finish: str = ""  # a host that lacks evidence for a required check: what to collect, and how
    reachable_again: bool = False  # unreachable in the baseline: its checks have nothing to be compared with
    failing_now: list[str] = field(default_factory=list)  # with reachable_again: tonight's failing check ids
    kernel: Optional[tuple[str, str]] = None
    cmdline_added: list[str] = field(default_factory=list)
    cmdline_removed: list[str] = field(default_factory=list)
    group_changes: list[str] = field(default_factory=list)
    driver_changes: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        worse = _VERDICT_RANK.get(self.new_verdict, 0) > _VERDICT_RANK.get(self.old_verdict, 0)
        return worse or bool(self.newly_failing)

    @property
    def changed(self) -> bool:
        return bool(self.old_verdict != self.new_verdict or self.newly_failing or self.newly_passing or self.kernel
                    or self.no_longer_checked or self.no_longer_collected or self.reachable_again or self.cmdline_added or self.cmdline_removed
                    or self.group_changes or self.driver_changes)

    def lines(self) -> list[str]:
        out = []
        if self.old_verdict != self.new_verdict:
            out.append(f"verdict: {self.old_verdict} -> {self.new_verdict}")
        out += [f"newly failing: {c.id} ({c.old} -> {c.new}): {c.message}" for c in self.newly_failing]
        out += [f"newly passing: {c.id} ({c.old} -> {c.new})" for c in self.newly_passing]
        out += [f"no longer checked: {c.id} (was {c.old})" for c in self.no_longer_checked]
        out += [f"no longer collected: {c.id} (was {c.old}): {c.message}" for c in self.no_longer_collected]
        if self.to_finish:
            out.append(self.to_finish)
        if self.reachable_again:
            failing = f"; failing now: {', '.join(self.failing_now)}" if self.failing_now else ""
            out.append(f"reachable again (unreachable in the baseline): checks not compared{failing}")
        if self.kernel:
            out.append(f"kernel: {self.kernel[0]} -> {self.kernel[1]}")
        if self.cmdline_added:
            out.append(f"command line gained: {' '.join(self.cmdline_added)}")
        if self.cmdline_removed:
            out.append(f"command line lost: {' '.join(self.cmdline_removed)}")
        out += [f"IOMMU group: {g}" for g in self.group_changes]
        out += [f"driver: {d}" for d in self.driver_changes]
        return out

    def to_dict(self) -> dict:
        return {"host": self.host, "old_verdict": self.old_verdict, "new_verdict": self.new_verdict,
                "regression": self.regression, "changes": self.lines()}


@dataclass
class RunDiff:
    old: str
    new: str
    hosts: list[HostDiff] = field(default_factory=list)
    added_hosts: list[str] = field(default_factory=list)
    removed_hosts: list[str] = field(default_factory=list)  # a regression: not collected tonight
    not_compared: str = ""  # why kernels, command lines and IOMMU groups were not compared

    @property
    def regression(self) -> bool:
        return any(h.regression for h in self.hosts) or bool(self.removed_hosts)

    def to_dict(self) -> dict:
        return {"old": self.old, "new": self.new, "regression": self.regression,
                "hosts": [h.to_dict() for h in self.hosts if h.changed],
                "added_hosts": self.added_hosts, "removed_hosts": self.removed_hosts,
                "not_compared": self.not_compared or None}

    def text(self) -> str:
        lines = [f"vfio-certify diff: {self.old} -> {self.new}"]
        for host in self.hosts:
            if host.changed:
                tag = "REGRESSION" if host.regression else "changed"
                lines.append(f"{host.host}: {tag}")
                lines += [f"  {line}" for line in host.lines()]
        lines += [f"{h}: new host" for h in self.added_hosts]
        lines += [f"{h}: REGRESSION: no longer in the run (in the baseline; not expanded from the inventory, "
                  "or its bundle missing?)" for h in self.removed_hosts]
        if len(lines) == 1:
            lines.append("no change in verdicts or checks" if self.not_compared else "no change")
        if self.not_compared:
            lines.append(f"kernel, command line and IOMMU groups not compared: {self.not_compared}")
        lines.append("regression" if self.regression else "no regression")
        return "\n".join(lines)


def _cmdline_tokens(overview: dict) -> list[str]:
    return (overview.get("cmdline") or "").split()


def _device_map(overview: dict) -> dict[str, tuple[int, str, tuple[str, ...]]]:
    """address -> (group, driver, every member of the group, itself included: one tuple shared by the group,
    so that a group of hundreds of devices costs no more than its size)."""
    devices = {}
    for group in overview.get("groups", []):
        members = tuple(sorted(d["address"] for d in group.get("devices", [])))
        for device in group.get("devices", []):
            devices[device["address"]] = (group.get("number"), device.get("driver", ""), members)
    return devices


def _group_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
    before, after = _device_map(old), _device_map(new)
    groups, drivers = [], []
    for address in sorted(set(before) | set(after)):
        if address not in after:
            groups.append(f"{address} is no longer in any group (was group {before[address][0]})")
            continue
        if address not in before:
            groups.append(f"{address} appeared in group {after[address][0]}")
            continue
        (g0, d0, o0), (g1, d1, o1) = before[address], after[address]
        if o0 != o1:  # both hold the address itself: the other members differ
            joined, left = sorted(set(o1) - set(o0)), sorted(set(o0) - set(o1))
            parts = [f"{address}: group {g0} -> {g1}"]
            if joined:
                parts.append(f"now shares it with {', '.join(joined)}")
            if left:
                parts.append(f"no longer with {', '.join(left)}")
            groups.append("; ".join(parts))
        if d0 != d1:
            drivers.append(f"{address}: {d0 or 'none'} -> {d1 or 'none'}")
    return groups, drivers


def _results(checks: list[dict]) -> list[CheckResult]:
    """The checks of a summary that can be read (a hand-edited one may hold anything)."""
    out = []
    for check in checks:
        try:
            out.append(CheckResult.from_summary(check))
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
    return out


def diff_host(name: str, old: dict, new: dict, old_overview: Optional[dict], new_overview: Optional[dict]) -> HostDiff:
    result = HostDiff(name, old.get("verdict", ""), new.get("verdict", ""))
    old_checks = {c["id"]: c for c in old.get("checks", [])}
    new_checks = {c["id"]: c for c in new.get("checks", [])}
    reachable_both = "unreachable" not in (result.old_verdict, result.new_verdict)
    if result.old_verdict == "unreachable" and result.new_verdict != "unreachable":
        result.reachable_again = True
        result.failing_now = [i for i, c in new_checks.items() if c["outcome"] in _BAD]
        new_checks = {}
    for check_id, check in new_checks.items():
        before = _state(old_checks[check_id]) if check_id in old_checks else "absent"
        after = _state(check)
        if after in _BAD and before not in _BAD:
            result.newly_failing.append(CheckChange(check_id, before, after, check.get("message", "")))
        elif after == NOT_COLLECTED and before not in (NOT_COLLECTED, "skipped", "absent") and reachable_both:
            result.no_longer_collected.append(CheckChange(check_id, before, after, check.get("message", "")))
        elif after in _GOOD and before in _BAD and reachable_both:
            result.newly_passing.append(CheckChange(check_id, before, after, check.get("message", "")))
    if reachable_both:
        result.no_longer_checked = [CheckChange(i, _state(c), "absent", c.get("message", ""))
                                    for i, c in old_checks.items() if i not in new_checks]
    if result.new_verdict in ("incomplete", "not-certified"):
        finish = to_finish(name, new.get("source", ""), _results(new.get("checks", [])))
        result.to_finish = finish.text() if finish is not None else ""
    if old_overview and new_overview:
        if old_overview.get("kernel_release") != new_overview.get("kernel_release"):
            result.kernel = (old_overview.get("kernel_release", ""), new_overview.get("kernel_release", ""))
        before, after = _cmdline_tokens(old_overview), _cmdline_tokens(new_overview)
        result.cmdline_added = [t for t in after if t not in before and not t.startswith("BOOT_IMAGE=")]
        result.cmdline_removed = [t for t in before if t not in after and not t.startswith("BOOT_IMAGE=")]
        collected = [old_overview.get("groups_collected", True), new_overview.get("groups_collected", True)]
        if all(collected):
            result.group_changes, result.driver_changes = _group_changes(old_overview, new_overview)
        else:
            night = "in the baseline" if not collected[0] else "in this run"
            result.group_changes = [f"not compared: /sys/kernel/iommu_groups was not collected {night}"]
    return result


def diff_runs(old: RunRecord, new: RunRecord) -> RunDiff:
    old_hosts, new_hosts = old.hosts(), new.hosts()
    run = RunDiff(old.source, new.source)
    for name, host in new_hosts.items():
        if name in old_hosts:
            run.hosts.append(diff_host(name, old_hosts[name], host, old.overviews.get(name), new.overviews.get(name)))
    run.added_hosts = [h for h in new_hosts if h not in old_hosts]
    run.removed_hosts = [h for h in old_hosts if h not in new_hosts]
    run.not_compared = "; ".join(p for p in (old.overview_problem, new.overview_problem) if p)
    return run
