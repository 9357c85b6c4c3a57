"""Writing a run's files host by host: summary.json, overview.json, junit.xml, report.html, the pages.

The results were streamed to disk as they arrived (result_stream.py). Each host is read back,
judged into a HostResult (checklist order, its fix plan), written into every file, and let go: the
run holds one host's results at a time, plus a digest of each host for the fleet page and the
terminal (its verdict, fix plan and the checks that did not pass, without their evidence).

With one host, certification.html is the host's page, as it always was. With several, each host
has its own page, hosts/<its name made safe>.html, which loads alone; index.html (the fleet page,
failing hosts first) links to them, and certification.html is the same fleet page: one page of a
thousand hosts' sections would be tens of megabytes. report.html (report_table.py) lists every check
of one host, or, for several, the checks that need attention.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..model import (AREA_ORDER, OVERVIEW_FORMAT, HostOverview, HostResult, Outcome, RunResult, SkipReason,
                     area_rank)
from ..result_stream import ResultStream
from .fixplan import fix_plan
from .junit import JunitWriter
from .report_table import ReportTable

if TYPE_CHECKING:  # a run with a baseline imports the diff
    from ..diff import RunDiff, RunRecord

HOST_PAGES = "hosts"


def overviews_of(run: RunResult) -> dict[str, dict]:
    """What a later diff needs beyond summary.json: kernel, command line, groups and drivers per host."""
    return {h.host: h.overview.to_dict() for h in run.hosts if not h.unreachable_reason}


def page_names(names: list[str]) -> dict[str, str]:
    """Each host's page file name: host names and snapshot paths are untrusted, so only letters, digits,
    '.', '_' and '-' remain; never hidden, never the same as another host's (whatever the file system's case)."""
    pages, taken = {}, set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:80] or "host"
        page, n = base, 1
        while page.casefold() in taken:
            n += 1
            page = f"{base}-{n}"
        taken.add(page.casefold())
        pages[name] = f"{page}.html"
    return pages


class _JsonStream:
    """A JSON object written as json.dump(..., indent=2) writes it, its last member (a list or an object) one
    item at a time."""

    def __init__(self, path: Path, head: dict, member: str, as_object: bool):
        self.out = path.open("w", encoding="utf-8")
        text = json.dumps(head, indent=2, ensure_ascii=False)
        self.out.write((text[:-2] + ",\n" if head else "{\n") + f"  {json.dumps(member)}: ")
        self.close_with = "}" if as_object else "]"
        self.out.write("{" if as_object else "[")
        self.count = 0

    def add(self, value, key: Optional[str] = None) -> None:
        text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n    ")
        self.out.write(("\n" if not self.count else ",\n") + "    " + (f"{json.dumps(key, ensure_ascii=False)}: " if key is not None else "") + text)
        self.count += 1

    def close(self) -> None:
        self.out.write(("\n  " if self.count else "") + self.close_with + "\n}\n")
        self.out.close()


def _digest(host: HostResult) -> HostResult:
    """What the fleet page and the terminal need of a host once its files are written."""
    kept = [dataclasses.replace(c, evidence=[], remediation="", fix=None) for c in host.checks
            if c.outcome is not Outcome.PASSED
            and not (c.outcome is Outcome.SKIPPED and c.skip_reason is SkipReason.NOT_APPLICABLE)]
    return HostResult(host.host, host.source, kept, HostOverview(), host.unreachable_reason, host.fix_plan)


def write_outputs(stream: ResultStream, names: list[str], run: RunResult, output: Path,
                  baseline: Optional[RunRecord] = None, baseline_source: str = "this run") -> Optional[RunDiff]:
    """Every file of the run into `output`; `run` (its start and duration) gets each host's digest, in `names`'
    order. Returns the diff against the baseline, when one is given."""
    from .html import AreaCell, area_cell, write_certification_page, write_index_page

    output.mkdir(parents=True, exist_ok=True)
    many = len(names) > 1
    pages = page_names(names) if many else {}
    summary = _JsonStream(output / "summary.json", {"format": "certify-summary/1", "started_at": run.started_at,
                                                    "duration_s": round(run.duration_s, 3)}, "hosts", as_object=False)
    overviews = _JsonStream(output / "overview.json", {"format": OVERVIEW_FORMAT}, "hosts", as_object=True)
    junit = JunitWriter(output / "junit.xml")
    table = ReportTable(output / "report.html", run, len(names), attention_only=many)
    cells: dict[int, dict[str, AreaCell]] = {}
    areas: set[str] = set()
    try:
        for position, name in enumerate(names, 1):
            host, checks = stream.read(name)
            checks.sort(key=lambda c: (area_rank(c.result.area), c.result.id))
            host.checks = [c.result for c in checks]
            host.fix_plan = fix_plan(host)
            summary.add(host.to_summary())
            if not host.unreachable_reason:
                overviews.add(host.overview.to_dict(), key=host.host)
            junit.add_host(host, checks)
            page = f"{HOST_PAGES}/{pages[name]}" if many else ""
            table.add_host(host, checks, page)
            if many:
                one = RunResult(run.started_at, run.duration_s, [host])
                write_certification_page(one, output / page, fleet="../index.html")
            by_area = host.checks_by_area()
            areas.update(by_area)
            cells[position] = {area: area_cell(area, checks_of) for area, checks_of in by_area.items()}
            run.hosts.append(_digest(host) if many else host)
    except BaseException:
        junit.abandon()
        raise
    finally:
        summary.close()
        overviews.close()
        table.close()
    junit.close(run)
    diff = None
    if baseline is not None:
        from ..diff import RunRecord, diff_runs

        current = json.loads((output / "summary.json").read_text(encoding="utf-8"))
        hosts = json.loads((output / "overview.json").read_text(encoding="utf-8"))["hosts"]
        diff = diff_runs(baseline, RunRecord(baseline_source, current, hosts))
        (output / "diff.json").write_text(json.dumps(diff.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")

    ordered = [a for a in AREA_ORDER if a in areas] + sorted(areas - set(AREA_ORDER))
    write_index_page(run, diff, output / "index.html", ordered, cells,
                     {i: f"{HOST_PAGES}/{pages[n]}" for i, n in enumerate(names, 1)} if many else None)
    if many:
        shutil.copyfile(output / "index.html", output / "certification.html")
    else:
        write_certification_page(run, output / "certification.html")
    return diff
