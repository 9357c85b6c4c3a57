"""The certification page and the fleet index: self-contained HTML files rendered from a RunResult.

certification.html has one section per host (anchors host-1, host-2, ... in run order);
index.html is the fleet view: one row per host, one cell per check area, regressions
against a baseline (a RunDiff) first.

Templates live in <repo root>/reports/templates/. Every value from a host (hostname,
dmesg lines, the kernel command line) is untrusted, so autoescaping is always on,
whatever the template's file extension.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import jinja2

from vfio_certify.report import groups_picture
from vfio_certify.report.fixplan import fix_plan, plan_summary, root_causes
from vfio_certify.report.template_cache import bytecode_cache
from vfio_certify.model import AREA_ORDER, CheckResult, HostResult, Outcome, RunResult, Severity, Verdict

if TYPE_CHECKING:  # a run with a baseline imports the diff
    from vfio_certify.diff import HostDiff, RunDiff

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATE_DIR = REPO_ROOT / "reports" / "templates"
CERTIFICATION_TEMPLATE = "certification.html.j2"
INDEX_TEMPLATE = "index.html.j2"

# Within an area: what blocks certification first, then other failures, ... passed last.
_RANK = {
    Outcome.FAILED: 1,
    Outcome.ERROR: 1,
    Outcome.WARNING: 2,
    Outcome.WAIVED: 3,
    Outcome.SKIPPED: 4,
    Outcome.PASSED: 5,
}


def failures_first(checks: list[CheckResult]) -> list[CheckResult]:
    """Stable sort: blocking failures, other failures, warnings, waived, skipped, passed."""
    return sorted(checks, key=lambda c: 0 if c.blocks_certification else _RANK.get(c.outcome, 9))


@functools.lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        bytecode_cache=bytecode_cache(),  # compiled once, not on every run
        autoescape=True,  # not select_autoescape(): it would leave *.j2 unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["failures_first"] = failures_first
    env.globals.update(Outcome=Outcome, Severity=Severity, Verdict=Verdict, root_causes=root_causes,
                       plan_summary=plan_summary, groups_picture=groups_picture.picture,
                       group_table_order=groups_picture.table_order,
                       geom={"box_width": groups_picture.BOX_WIDTH, "row": groups_picture.ROW,
                             "driver_x": groups_picture.DRIVER_X})
    return env


def get_template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


def _with_plans(run: RunResult) -> RunResult:
    """A run built by hand (not by the plugin) gets each host's fix plan here: it is derived data."""
    for host in run.hosts:
        host.fix_plan = host.fix_plan or fix_plan(host)
    return run


def render_certification_page(run: RunResult) -> str:
    run = _with_plans(run)
    return _environment().get_template(CERTIFICATION_TEMPLATE).render(run=run)


def write_certification_page(run: RunResult, path: Union[str, Path], fleet: Optional[str] = None) -> Path:
    """The page of the run's hosts (a command run with several hosts writes one per host, `fleet` linking
    back to the fleet page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # streamed to the file: a page is never one string in memory
    _environment().get_template(CERTIFICATION_TEMPLATE).stream(run=_with_plans(run), fleet=fleet).dump(
        str(path), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# The fleet index page (index.html)

# Checklist order (model.AREA_ORDER); areas not listed come after, by name.
# A cell shows the worst of its checks: the first of these that occurs.
WORST_FIRST = (Outcome.FAILED, Outcome.ERROR, Outcome.WARNING, Outcome.WAIVED, Outcome.PASSED, Outcome.SKIPPED)
# How many change lines a matrix row shows (besides the verdict change) before pointing to the changes section.
ROW_CHANGE_LINES = 2

_CHANGE_KINDS = (  # HostDiff.lines() prefix -> kind (a CSS class)
    ("verdict:", "verdict"), ("newly failing:", "failing"), ("newly passing:", "passing"), ("reachable again", "passing"),
    ("kernel:", "kernel"), ("command line", "cmdline"), ("IOMMU group:", "group"), ("driver:", "driver"),
    ("no longer collected:", "lacking"), ("to finish, collect:", "lacking"),
)


def natural_key(name: str) -> list:
    """kvm5 before kvm10; case-insensitive."""
    return [int(part) if part.isdecimal() else part.casefold() for part in re.split(r"(\d+)", name)]


@dataclass
class AreaCell:
    """One host's checks in one area, as a matrix cell."""

    area: str
    worst: Optional[Outcome] = None  # None: no check of this area ran on the host
    counts: list[tuple[Outcome, int]] = field(default_factory=list)  # in WORST_FIRST order, non-zero only
    blocking: int = 0  # required checks failed or errored: they block certification
    lacking: int = 0  # required checks skipped for lack of evidence: they leave the host incomplete


@dataclass
class ChangeLine:
    kind: str  # verdict, failing, passing, kernel, cmdline, group, driver, lacking, other
    text: str


@dataclass
class IndexRow:
    """One host of the run, as a matrix row."""

    position: int  # 1-based position in run.hosts: certification.html#host-<position>, or the host's page
    host: HostResult
    cells: list[AreaCell]
    since: str  # "regression", "changed", "new", "unchanged"; "" when there is no baseline
    changes: list[ChangeLine] = field(default_factory=list)
    diff: Optional[HostDiff] = None

    @property
    def group(self) -> int:
        """Sort group: regressions, not certified, incomplete, unreachable, certified."""
        if self.since == "regression":
            return 0
        return {Verdict.NOT_CERTIFIED: 1, Verdict.INCOMPLETE: 2, Verdict.UNREACHABLE: 3}.get(self.host.verdict, 4)


def run_areas(run: RunResult) -> list[str]:
    """The areas any host's checks belong to, in checklist order."""
    seen = {c.area for h in run.hosts for c in h.checks}
    known = [a for a in AREA_ORDER if a in seen]
    return known + sorted(seen - set(AREA_ORDER))


def area_cell(area: str, checks: list[CheckResult]) -> AreaCell:
    cell = AreaCell(area)
    for outcome in WORST_FIRST:
        n = sum(1 for c in checks if c.outcome is outcome)
        if n:
            cell.counts.append((outcome, n))
            if cell.worst is None:
                cell.worst = outcome
    cell.blocking = sum(1 for c in checks if c.blocks_certification)
    cell.lacking = sum(1 for c in checks if c.leaves_incomplete)
    if cell.lacking and cell.worst in (Outcome.PASSED, Outcome.WAIVED):
        cell.worst = Outcome.SKIPPED  # a required check not judged: the area is not "passed"
    return cell


def change_lines(host_diff: HostDiff) -> list[ChangeLine]:
    out = []
    for line in host_diff.lines():
        kind = next((k for prefix, k in _CHANGE_KINDS if line.startswith(prefix)), "other")
        out.append(ChangeLine(kind, line))
    return out


def index_rows(run: RunResult, diff: Optional[RunDiff] = None, areas: Optional[list[str]] = None,
               cells: Optional[dict[int, dict[str, AreaCell]]] = None) -> list[IndexRow]:
    """The matrix rows: regressions first, then not certified, incomplete, unreachable, certified; by host name
    (natural order). `cells` (by position, then area), when given, were taken from each host's whole list of
    checks while it was written (report/outputs.py keeps only a digest of each host)."""
    areas = run_areas(run) if areas is None else areas
    diffs = {d.host: d for d in diff.hosts} if diff is not None else {}
    added = set(diff.added_hosts) if diff is not None else set()
    rows = []
    for position, host in enumerate(run.hosts, 1):
        if cells is not None:
            row_cells = [cells[position].get(area) or AreaCell(area) for area in areas]
        else:
            by_area = host.checks_by_area()
            row_cells = [area_cell(area, by_area.get(area, [])) for area in areas]
        host_diff = diffs.get(host.host)
        if diff is None:
            since = ""
        elif host_diff is not None and host_diff.regression:
            since = "regression"
        elif host_diff is not None and host_diff.changed:
            since = "changed"
        elif host.host in added:
            since = "new"
        else:
            since = "unchanged"
        changes = change_lines(host_diff) if since in ("regression", "changed") else []
        rows.append(IndexRow(position, host, row_cells, since, changes, host_diff))
    rows.sort(key=lambda r: (r.group, natural_key(r.host.host), r.host.host, r.position))
    return rows


def _area_failing(rows: list[IndexRow]) -> dict[str, int]:
    """area -> how many reachable hosts fail (or error) in it."""
    counts: dict[str, int] = {}
    for row in rows:
        for cell in row.cells:
            bad = cell.worst in (Outcome.FAILED, Outcome.ERROR) and row.host.verdict is not Verdict.UNREACHABLE
            counts[cell.area] = counts.get(cell.area, 0) + int(bad)
    return counts


@dataclass
class CommonCause:
    """A root cause the fleet shares: what to roll out first."""

    label: str  # the root check's message without a closing host-specific detail in parentheses, or its description
    check: str  # its id, parameters left out
    hosts: list[tuple[str, int]] = field(default_factory=list)  # (host, position in run.hosts)
    varied: bool = False  # the hosts fail it for different reasons: the label is the check's description


def without_detail(message: str) -> str:
    """The message without a closing parenthesis of the host's own detail, nested ones included ("... by default
    (kernel 5.14 (VT-d off by default before 6.8))"); a parenthesis inside the sentence stays."""
    depth = 0
    for i in range(len(message) - 1, -1, -1) if message.endswith(")") else ():
        depth += {")": 1, "(": -1}.get(message[i], 0)
        if depth == 0:
            return message[:i].rstrip() if message[:i].endswith(" ") else message
    return message


def common_root_causes(run: RunResult, most: int = 3) -> list[CommonCause]:
    """The root causes most hosts share, most hosts first; a cause of one host only when nothing is shared.
    A cause is a check: hosts failing it for different reasons (no DMAR table, no SMMU in the IORT) share it."""
    from vfio_certify.rules.catalog import registered

    causes: dict[str, CommonCause] = {}
    for position, host in enumerate(run.hosts, 1):
        for root in root_causes(host):
            check = root.check.id.split("[", 1)[0]
            label = without_detail(root.check.message)
            cause = causes.setdefault(check, CommonCause(label, check))
            if label != cause.label and not cause.varied:
                known = registered().get(check)
                cause.label, cause.varied = (known.description if known else check), True
            if not cause.hosts or cause.hosts[-1][0] != host.host:
                cause.hosts.append((host.host, position))
    ranked = sorted(causes.values(), key=lambda c: (-len(c.hosts), c.check))
    shared = [c for c in ranked if len(c.hosts) > 1]
    return (shared or ranked[:1])[:most]


def _index_page(run: RunResult, diff: Optional[RunDiff] = None, areas: Optional[list[str]] = None,
                cells: Optional[dict[int, dict[str, AreaCell]]] = None,
                pages: Optional[dict[int, str]] = None) -> tuple[jinja2.Template, dict]:
    """index.html's template and what it is rendered from."""
    run = _with_plans(run)
    areas = run_areas(run) if areas is None else areas
    rows = index_rows(run, diff, areas, cells)
    positions = {h.host: i for i, h in reversed(list(enumerate(run.hosts, 1)))}
    changed = []  # (HostDiff, its change lines, its position in run.hosts or None): regressions first, by name
    if diff is not None:
        for host_diff in sorted((d for d in diff.hosts if d.changed),
                                key=lambda d: (not d.regression, natural_key(d.host), d.host)):
            changed.append((host_diff, change_lines(host_diff), positions.get(host_diff.host)))
    return _environment().get_template(INDEX_TEMPLATE), dict(
        run=run, diff=diff, areas=areas, rows=rows, host_pages=pages is not None,
        href=(lambda position: pages[position]) if pages is not None else (lambda position: f"certification.html#host-{position}"), changed=changed, positions=positions,
        area_failing=_area_failing(rows),
        # a host of the baseline missing from this run is a regression too (not collected tonight)
        regressed=sum(1 for d in diff.hosts if d.regression) + len(diff.removed_hosts) if diff is not None else 0,
        more_changed=sum(1 for d in diff.hosts if d.changed and not d.regression) if diff is not None else 0,
        row_change_lines=ROW_CHANGE_LINES, common_causes=common_root_causes(run),
    )


def render_index_page(run: RunResult, diff: Optional[RunDiff] = None, areas: Optional[list[str]] = None,
                      cells: Optional[dict[int, dict[str, AreaCell]]] = None,
                      pages: Optional[dict[int, str]] = None) -> str:
    """index.html: the fleet at a glance, one row per host, linking into certification.html or, with `pages`
    (position -> the host's page), to each host's page."""
    template, context = _index_page(run, diff, areas, cells, pages)
    return template.render(**context)


def write_index_page(run: RunResult, diff: Optional[RunDiff], path: Union[str, Path], areas: Optional[list[str]] = None,
                     cells: Optional[dict[int, dict[str, AreaCell]]] = None,
                     pages: Optional[dict[int, str]] = None) -> Path:
    """render_index_page() streamed to the file: the page of a thousand hosts is never one string in memory
    (nor the list of every piece of it that jinja2 joins into one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    template, context = _index_page(run, diff, areas, cells, pages)
    template.stream(**context).dump(str(path), encoding="utf-8")
    return path
