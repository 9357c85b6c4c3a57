"""The certification page: one self-contained HTML file rendered from a RunResult.

Templates live in <repo root>/reports/templates/. Every value from a host (hostname,
dmesg lines, the kernel command line) is untrusted, so autoescaping is always on,
whatever the template's file extension.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Union

import jinja2

from vfio_certify.model import CheckResult, Outcome, RunResult, Severity, Verdict

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATE_DIR = REPO_ROOT / "reports" / "templates"
CERTIFICATION_TEMPLATE = "certification.html.j2"

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
        autoescape=True,  # not select_autoescape(): it would leave *.j2 unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["failures_first"] = failures_first
    env.globals.update(Outcome=Outcome, Severity=Severity, Verdict=Verdict)
    return env


def render_certification_page(run: RunResult) -> str:
    return _environment().get_template(CERTIFICATION_TEMPLATE).render(run=run)


def write_certification_page(run: RunResult, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_certification_page(run), encoding="utf-8")
    return path
