"""A long run keeps no report: results go to disk, the terminal only counts reports, judged facts go."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A plugin that looks, when the run ends, at what the run still holds.
PROBE = '''
import json, os
import pytest
from vfio_certify.plugin import RESULT_KEY, SESSION_KEY
from vfio_certify.model import REPORT_PROPERTY


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    reports = [r for kind, each in reporter.stats.items() if kind != "deselected" for r in each
               if hasattr(r, "user_properties")]
    counted = sum(type(r).__name__ == "_Counted" for each in reporter.stats.values() for r in each)
    html = [p for p in session.config.pluginmanager.get_plugins() if type(p).__module__.startswith("pytest_html.")
            and hasattr(p, "_reports")]
    certify = session.config.stash[SESSION_KEY]
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump({"reports": len(reports), "counted": counted,
                   "with_payload": sum(any(n == REPORT_PROPERTY for n, _ in r.user_properties) for r in reports),
                   "html_reports_kept": sum(len(p._reports) for p in html),
                   "facts_kept": len(certify._collected), "hosts": len(certify.hosts),
                   "deselected": len(reporter.stats.get("deselected", [])),
                   "deselected_items": sum(isinstance(d, pytest.Item) for d in reporter.stats.get("deselected", [])),
                   "results_on_items": sum(RESULT_KEY in item.stash for item in session.items),
                   "progress_ids_kept": len(getattr(reporter._progress_nodeids_reported, "open",
                                                    reporter._progress_nodeids_reported))}, out)
'''


@pytest.mark.parametrize("jobs", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
def test_what_a_run_still_holds_at_its_end(tmp_path, jobs):
    snapshots = []
    for i, name in enumerate(["rocky9-after-intel-iommu", "amd-g505s-no-ivrs", "rocky9-after-intel-iommu"]):
        snapshots.append(tmp_path / f"host-{i}")
        shutil.copytree(REPO / "fixtures" / "hosts" / name, snapshots[-1], symlinks=True)
    (tmp_path / "probe_plugin.py").write_text(PROBE)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(tmp_path), "PROBE_OUT": str(tmp_path / "probe.json"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--output", str(out), "--device", "07:00.1",
                           *[f"--snapshot={s}" for s in snapshots], "--", "-p", "probe_plugin", *jobs],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    held = json.loads((tmp_path / "probe.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert held["hosts"] == len(summary["hosts"]) == 3
    assert held["counted"] > 3 * 3 * 20  # every phase of every check is still counted by the terminal ...
    assert held["reports"] == held["with_payload"] == 0  # ... which keeps no report (the session has its result)
    outcomes = [c["outcome"] for h in summary["hosts"] for c in h["checks"]]
    failed, skipped = sum(o in ("failed", "error") for o in outcomes), outcomes.count("skipped")
    last = proc.stdout.strip().splitlines()[-1]  # pytest's one-line summary, from the counts
    assert f"{failed} failed, {len(outcomes) - failed - skipped} passed, {skipped} skipped" in last, last
    assert held["html_reports_kept"] == 0
    assert held["facts_kept"] == 0  # the controller never collected; one process forgets each host when judged
    assert held["results_on_items"] == 0  # each item let its result go once it was in the report
    assert held["progress_ids_kept"] == 0  # the terminal counts the tests it showed, it keeps no test's id
    assert held["deselected_items"] == 0  # e2e.* without --e2e: deselected as made, then only counted ...
    if not jobs:
        assert held["deselected"] > 0 and f"{held['deselected']} deselected" in last, last  # ... and still said
    assert all(len(h["checks"]) > 20 for h in summary["hosts"])
    report = (out / "report.html").read_text()  # written from the streamed results, evidence beside each failure
    assert '<td class="col-evidence"><pre>' in report and "&amp;lt;" not in report


# In each xdist worker: which hosts it was given to collect (its batch).
BATCH_PROBE = '''
import json, os


def pytest_configure(config):
    batch = getattr(config, "workerinput", {}).get("vfio_certify_share")
    if batch is not None:
        with open(os.path.join(os.environ["PROBE_DIR"], config.workerinput["workerid"]), "w") as out:
            json.dump(batch, out)
'''


def _without_times(summary: dict) -> dict:
    """summary.json less what differs from run to run: start, durations, a collection's seconds."""
    text = json.dumps({k: v for k, v in summary.items() if k not in ("started_at", "duration_s")})
    return json.loads(re.sub(r'"duration_s": [0-9.e-]+', '"duration_s": 0',
                             re.sub(r"collected in [0-9.]+ s", "collected in N s", text)))


def test_workers_judging_one_host_each_give_the_run_of_workers_judging_all_of_them(tmp_path):
    """--hosts-per-worker 1: a fresh worker process per host, every worker's memory that of one host; the run's
    files and verdict are those of two workers judging every host (and of a single process)."""
    fixtures = ["rocky9-after-intel-iommu", "amd-g505s-no-ivrs", "missing-config", "kunpeng920-smmu-off",
                "rocky9-after-intel-iommu"]
    snapshots = []
    for i, name in enumerate(fixtures):
        snapshots.append(tmp_path / f"host-{i}")
        shutil.copytree(REPO / "fixtures" / "hosts" / name, snapshots[-1], symlinks=True)
    (tmp_path / "batch_probe.py").write_text(BATCH_PROBE)
    runs = {}
    for label, options in (("one process", []), ("a batch each", ["-j", "2"]),
                           ("a host each", ["-j", "2", "--hosts-per-worker", "1"])):
        probes = tmp_path / f"probe-{len(runs)}"
        probes.mkdir()
        env = {"PYTHONPATH": str(tmp_path), "PROBE_DIR": str(probes), "PATH": "/usr/bin:/bin"}
        out = tmp_path / f"out-{len(runs)}"
        proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--output", str(out), *options,
                               *[f"--snapshot={s}" for s in snapshots], "--", "-p", "batch_probe"],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        batches = sorted(json.loads(p.read_text()) for p in probes.iterdir())
        runs[label] = proc, json.loads((out / "summary.json").read_text()), batches, out
    proc, summary, batches, out = runs["a host each"]
    assert batches == [[i, i + 1] for i in range(5)]  # five workers, one after another, one host each
    for label in ("one process", "a batch each"):
        assert proc.returncode == runs[label][0].returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert _without_times(summary) == _without_times(runs[label][1]), label
        assert sorted(p.name for p in (out / "hosts").iterdir()) == \
            sorted(p.name for p in (runs[label][3] / "hosts").iterdir())
    assert runs["a batch each"][2] == [[0, 2], [2, 5]]  # by default: every host in the first two workers
    progress = [int(p) for p in re.findall(r"\[ *(\d+)%\]", proc.stdout)]  # the terminal's progress is the run's
    assert progress and progress[-1] == 100 and max(progress) == 100, proc.stdout[-2000:]
