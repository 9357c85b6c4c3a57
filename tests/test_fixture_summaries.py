"""Every fixture host's summary.json is the recorded one (tests/golden/fixture-summaries).

A structure-only change must leave them alone; a change in behaviour rewrites them with
`scripts/fixture_summaries.py --write`, so that what changed for users is in the commit's diff.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fixture_summaries_match_the_golden_record():
    run = subprocess.run([sys.executable, "scripts/fixture_summaries.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "11 of 11 fixture hosts match" in run.stdout
