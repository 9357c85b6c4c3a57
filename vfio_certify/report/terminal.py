"""The run's verdict in the terminal: one line per host, its fix plan, the diff against the baseline."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..model import RunResult, Verdict
from .fixplan import plan_summary

if TYPE_CHECKING:
    from ..diff import RunDiff


def write_verdicts(tr, run: RunResult, diff: Optional[RunDiff], output: Optional[Path]) -> None:
    """`tr` is pytest's terminal reporter (section, write_line with colours)."""
    tr.section("vfio-certify verdict")
    for host in run.hosts:
        line = f"{host.host}: {host.verdict.value.replace('-', ' ').upper()}"
        if host.unreachable_reason:
            line += f" ({host.unreachable_reason})"
        blocking = [c.id for c in host.checks if c.blocks_certification]
        if blocking:
            line += f" - required checks failed: {', '.join(blocking)}"
        finish = host.to_finish()
        if finish is not None:
            line += f" - {len(finish.checks)} required check(s) not judged; {finish.text()}"
        tr.write_line(line, red=bool(blocking or host.unreachable_reason), yellow=host.verdict is Verdict.INCOMPLETE,
                      green=host.verdict is Verdict.CERTIFIED)
        if host.fix_plan:
            tr.write_line(f"  fix plan ({plan_summary(host.fix_plan)}):")
            for number, step in enumerate(host.fix_plan, 1):
                tr.write_line(f"  {number}. " + "\n     ".join(step.step.splitlines()) + (" [reboot]" if step.reboot else ""))
                for command in step.commands:
                    tr.write_line(f"       $ {command}")
    if diff is not None:
        tr.section("vfio-certify diff against the baseline")
        for line in diff.text().splitlines():
            tr.write_line(line, red="REGRESSION" in line.split(": ")[1:2] or line == "regression")
    if output is not None:
        tr.write_line(f"summary: {output / 'summary.json'}  pages: {output / 'index.html'}, {output / 'certification.html'}")
