"""report.html of a certification run: every check as a table row, written host by host (a jinja2 template).

Why not pytest-html, which wrote it before: it keeps every test's reports and table row in memory
to the end of the run and writes them as one page (26 MB and ~0.2 MiB of the controller's memory
per host for a thousand hosts, measured with bench/snapshots_at_scale.py), and its JavaScript
inserts each cell with innerHTML, so every host-supplied value had to be escaped by hand. This
table has the same columns (result, host, severity, test id, duration, message, evidence, fix),
rendered with autoescape, one host's rows at a time. With one host it lists every check; with
several, the checks that need attention (failed, error, warning, waived, not collected), each
host's name linking to its page, which has every check. Plain `pytest --html` keeps pytest-html.
"""
from __future__ import annotations

from pathlib import Path

from ..model import HostResult, Outcome, RunResult, SkipReason
from ..result_stream import StreamedCheck

TEMPLATE = "report.html.j2"


def needs_attention(check: StreamedCheck) -> bool:
    result = check.result
    if result.outcome is Outcome.PASSED:
        return False
    return not (result.outcome is Outcome.SKIPPED and result.skip_reason is SkipReason.NOT_APPLICABLE)


class ReportTable:
    def __init__(self, path: Path, run: RunResult, n_hosts: int, attention_only: bool):
        from .html import get_template

        self.template = get_template(TEMPLATE)
        self.attention_only = attention_only
        self.rows = 0
        self.out = path.open("w", encoding="utf-8")
        self.out.write(self.template.render(part="head", n_hosts=n_hosts, started_at=run.started_at,
                                            attention_only=attention_only))

    def add_host(self, host: HostResult, checks: list[StreamedCheck], page: str = "") -> None:
        rows = [c for c in checks if not self.attention_only or needs_attention(c)]
        self.rows += len(rows)
        if rows:
            self.out.write(self.template.render(part="rows", rows=rows, host=host, page=page))

    def close(self) -> None:
        self.out.write(self.template.render(part="end", n_rows=self.rows))
        self.out.close()
