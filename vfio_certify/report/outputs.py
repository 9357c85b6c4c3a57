"""Writing a run's files: summary.json, overview.json, diff.json and the two pages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..diff import RunDiff, write_overview
from ..model import RunResult


def overviews_of(run: RunResult) -> dict[str, dict]:
    """What a later diff needs beyond summary.json: kernel, command line, groups and drivers per host."""
    return {h.host: h.overview.to_dict() for h in run.hosts if not h.unreachable_reason}


def write_outputs(run: RunResult, output: Path, diff: Optional[RunDiff] = None) -> None:
    from .html import write_certification_page, write_index_page

    output.mkdir(parents=True, exist_ok=True)
    with (output / "summary.json").open("w", encoding="utf-8") as out:  # streamed, as the pages are
        json.dump(run.to_summary(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    write_overview(output / "overview.json", overviews_of(run))
    if diff is not None:
        (output / "diff.json").write_text(json.dumps(diff.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    write_certification_page(run, output / "certification.html")
    write_index_page(run, diff, output / "index.html")
