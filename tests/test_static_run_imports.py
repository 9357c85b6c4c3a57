"""A run without --e2e never imports the end-to-end flow or the nested lab: start-up time is the command's cost."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROGRAM = """
import sys
from vfio_certify.cli import main
code = main(sys.argv[1:])
print(sorted(m for m in sys.modules if m.startswith(("vfio_certify.e2e.", "vfio_certify.lab"))
             and m != "vfio_certify.e2e.nested_lab_target"))
"""


def test_judging_a_snapshot_imports_neither_the_flow_nor_the_lab(tmp_path):
    snapshot = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    proc = subprocess.run([sys.executable, "-c", PROGRAM, "--snapshot", str(snapshot), "--device", "07:00.1",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert (tmp_path / "out" / "summary.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]


def test_a_bad_usb_file_is_still_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--usb-file", "../etc/passwd",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("vfio-certify: --usb-file"), proc.stderr


PLUGINS_PROGRAM = """
import sys
from vfio_certify.cli import main
code = main(sys.argv[1:])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("hypothesis", "_hypothesis_pytestplugin", "pytest_html",
                                                             "xdist", "execnet", "pdb")
             or m in ("_pytest.unittest", "_pytest.pastebin", "tomllib")))
"""


def test_a_run_loads_only_the_plugins_it_uses(tmp_path):
    """Installed plugins no check uses (hypothesis) and pytest's own that `import pytest` does not bring (unittest,
    pastebin, the debugger's pdb) stay unimported, pytest-html too (the command writes report.html from the
    results), and xdist without -j. No config file is read (tomllib stays unimported): pyproject.toml holds the
    project's tests' settings, and the plugin registers its `check` marker itself (an unknown mark is an error here)."""
    snapshot = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    proc = subprocess.run([sys.executable, "-c", PLUGINS_PROGRAM, "--snapshot", str(snapshot), "--output", str(tmp_path / "out"),
                           "--", "-W", "error::pytest.PytestUnknownMarkWarning"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "<th>Host</th>" in (tmp_path / "out" / "report.html").read_text(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]


def test_pytests_own_junit_and_xdist_are_there_when_asked_for(tmp_path):
    """`-- --junitxml=FILE` gets pytest's JUnit file (with each host's verdict, as junit.xml has it) and `-- -n 2`
    runs on two xdist workers, though neither plugin is loaded for a run that does not ask."""
    snapshot = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    theirs = tmp_path / "pytest-junit.xml"
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot", str(snapshot), "--output",
                           str(tmp_path / "out"), "--", f"--junitxml={theirs}", "-n", "2"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]  # the host is certified
    assert "bringing up nodes" in proc.stdout and "CERTIFIED" in proc.stdout, proc.stdout[-2000:]
    text = theirs.read_text()
    assert 'testsuite name="vfio-certify"' in text and 'property name="verdict ' in text, text[:2000]


def test_jobs_never_start_more_workers_than_hosts_and_none_for_one(tmp_path):
    """-j auto on one host judges it in this process (a worker would cost a Python start and pytest's import for
    nothing); with two hosts and -j 8, two workers. The verdicts are the same either way."""
    from vfio_certify.cli import _certify_parser, workers

    one = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    other = REPO / "fixtures" / "hosts" / "rocky9-before-intel-iommu"
    assert workers(_certify_parser().parse_args(["-j", "8", "--snapshot", str(one), "--snapshot", str(other)])) == 2
    assert workers(_certify_parser().parse_args(["-j", "1", "--snapshot", str(one), "--snapshot", str(other)])) == 1
    assert workers(_certify_parser().parse_args(["-j", "auto", "--host", "ansible://web"])) == -1  # as given
    runs = {}
    for label, args in (("alone", ["--snapshot", str(one)]), ("-j auto", ["-j", "auto", "--snapshot", str(one)]),
                        ("two, -j 8", ["-j", "8", "--snapshot", str(one), "--snapshot", str(other)])):
        proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", *args, "--output", str(tmp_path / label)],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        runs[label] = (proc.returncode, "bringing up nodes" in proc.stdout)
    assert runs == {"alone": (0, False), "-j auto": (0, False), "two, -j 8": (1, True)}


DIFF_PROGRAM = """
import sys
from vfio_certify.cli import main
code = main(sys.argv[1:])
print("vfio_certify.diff" in sys.modules)
"""


def test_only_a_run_given_a_baseline_imports_the_diff(tmp_path):
    """The diff against an earlier run (and its module) is for a run given --baseline; one without does not
    import it, and still writes overview.json, which a later run's diff reads."""
    snapshot = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    imported = {}
    for label, extra in (("first", []), ("second", ["--baseline", str(tmp_path / "first")])):
        proc = subprocess.run([sys.executable, "-c", DIFF_PROGRAM, "--snapshot", str(snapshot), *extra,
                               "--output", str(tmp_path / label)], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert (tmp_path / label / "overview.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
        imported[label] = proc.stdout.strip().splitlines()[-1]
    assert imported == {"first": "False", "second": "True"}
    assert (tmp_path / "second" / "diff.json").is_file() and not (tmp_path / "first" / "diff.json").exists()
