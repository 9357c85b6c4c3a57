"""One run owns its output folder: refused when it is not the run's to replace, replaced whole when it is,
never shared by two runs at once, and each run's exit status is its own verdict."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfio_certify.output_folder import MARKER, OutputFolder, OutputFolderError, check_output

REPO = Path(__file__).resolve().parent.parent
GOOD = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"  # certified with 07:00.1
BAD = REPO / "fixtures" / "hosts" / "rocky9-before-intel-iommu"  # not certified with 07:00.1


def certify(*args, cwd=REPO, **kw):
    return subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, **kw)


def one_line_usage_error(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("vfio-certify: --")
    return line


def test_a_file_as_output_is_one_line_exit_2_and_left_alone(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_line_usage_error(certify("--snapshot", GOOD, "--output", target))
    assert "a file, not a folder" in line and target.read_text() == "mine"


def test_an_output_inside_a_snapshot_or_holding_an_input_is_refused(tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(GOOD, snap, symlinks=True)
    before = sorted(p.relative_to(snap) for p in snap.rglob("*"))
    for output in (snap, snap / "reports"):
        line = one_line_usage_error(certify("--snapshot", snap, "--output", output))
        assert f"--snapshot {snap}: a run never writes into its input" in line
    assert sorted(p.relative_to(snap) for p in snap.rglob("*")) == before
    waivers = tmp_path / "out" / "waivers.toml"
    waivers.parent.mkdir()
    waivers.write_text("")
    line = one_line_usage_error(certify("--snapshot", GOOD, "--waivers", waivers, "--output", waivers.parent))
    assert "holds --waivers" in line and waivers.exists()


def test_an_output_inside_the_baseline_is_refused(tmp_path):
    assert certify("--snapshot", GOOD, "--device", "07:00.1", "--output", tmp_path / "night1").returncode == 0
    line = one_line_usage_error(certify("--snapshot", GOOD, "--baseline", tmp_path / "night1",
                                        "--output", tmp_path / "night1" / "night2"))
    assert "is inside --baseline" in line and not (tmp_path / "night1" / "night2").exists()


def test_a_folder_holding_anything_else_is_refused_never_emptied(tmp_path):
    for extra in ("thesis.tex", "summary.json"):  # a summary.json beside other files is no proof either
        folder = tmp_path / extra
        folder.mkdir()
        (folder / "thesis.tex").write_text("years of work")
        (folder / extra).write_text("{}") if extra != "thesis.tex" else None
        line = one_line_usage_error(certify("--snapshot", GOOD, "--output", folder))
        assert "'thesis.tex'" in line and "not an earlier vfio-certify run" in line
        assert (folder / "thesis.tex").read_text() == "years of work"


def test_an_earlier_run_is_replaced_whole_and_its_diff_does_not_survive(tmp_path):
    baseline, out = tmp_path / "yesterday", tmp_path / "tonight"
    assert certify("--snapshot", GOOD, "--device", "07:00.1", "--output", baseline).returncode == 0
    regressed = certify("--snapshot", BAD, "--device", "07:00.1", "--baseline", baseline, "--output", out)
    assert regressed.returncode == 1 and json.loads((out / "diff.json").read_text())["regression"] is True
    (out / "pytest-html-assets.css").write_text("a file the earlier run's tools left")
    again = certify("--snapshot", GOOD, "--device", "07:00.1", "--output", out)
    assert again.returncode == 0, again.stdout[-2000:]
    assert sorted(os.listdir(out)) == sorted([MARKER, "summary.json", "overview.json", "certification.html",
                                              "index.html", "report.html", "junit.xml"])
    assert json.loads((out / "summary.json").read_text())["hosts"][0]["verdict"] == "certified"
    assert sorted(os.listdir(tmp_path)) == ["tonight", "yesterday"]  # no staging folder, no lock left behind


def test_a_run_from_before_the_marker_is_recognised_by_its_files(tmp_path):
    out = tmp_path / "old-run"
    out.mkdir()
    for name in ("summary.json", "certification.html", "diff.json"):
        (out / name).write_text("{}")
    assert certify("--snapshot", GOOD, "--device", "07:00.1", "--output", out).returncode == 0
    assert not (out / "diff.json").exists() and (out / MARKER).is_file()


def test_the_second_of_two_runs_into_one_folder_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "shared"
    holder = OutputFolder(out)  # a first run, in the middle of writing
    staging = holder.open()
    try:
        line = one_line_usage_error(certify("--snapshot", GOOD, "--output", out))
        assert f"another vfio-certify run (pid {os.getpid()}) is writing it" in line
        plain = subprocess.run([sys.executable, "-m", "pytest", "checks", "-p", "no:cacheprovider",
                                f"--snapshot={GOOD}", f"--certify-output={out}"], capture_output=True, text=True,
                               cwd=REPO, timeout=120)
        assert plain.returncode == 4 and "another vfio-certify run" in plain.stderr
        assert not out.exists() and staging.is_dir()
    finally:
        holder.close()
    assert not staging.exists() and not (tmp_path / ".shared.lock").exists()


def test_two_runs_at_once_each_exit_with_their_own_verdict(tmp_path):
    """Started together into one folder: one writes it, the other is refused (exit 2), or waits its turn when
    started after the first is done; a not-certified host never exits 0 and a certified one never 1."""
    out = tmp_path / "night"
    runs = [subprocess.Popen([sys.executable, "-m", "vfio_certify.cli", "--snapshot", str(snap), "--device",
                              "07:00.1", "--output", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for snap in (GOOD, BAD, GOOD, BAD)]
    codes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for (code, stderr), expected in zip(codes, (0, 1, 0, 1)):
        assert code in (expected, 2), (code, stderr)
        if code == 2:
            assert "another vfio-certify run" in stderr
    verdict = json.loads((out / "summary.json").read_text())["hosts"][0]["verdict"]
    assert verdict in ("certified", "not-certified") and any(code != 2 for code, _ in codes)
    assert [p for p in os.listdir(tmp_path) if p != "night"] == []


def test_an_interrupted_run_leaves_the_earlier_run_as_it_was(tmp_path):
    out = tmp_path / "out"
    assert certify("--snapshot", GOOD, "--device", "07:00.1", "--output", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "ctrl_c.py").write_text("def pytest_runtest_call(item):\n"
                                        "    if 'iommu' in item.nodeid:\n"
                                        "        raise KeyboardInterrupt\n")
    proc = certify("--snapshot", BAD, "--device", "07:00.1", "--output", out, "--", "-p", "ctrl_c",
                   env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["ctrl_c.py", "out"]


def test_a_killed_run_leaves_a_staging_folder_the_next_run_removes(tmp_path):
    out = tmp_path / "out"
    killed = OutputFolder(out)
    staging = killed.open()
    (staging / "summary.json").write_text("half")
    os.close(killed._lock_fd)  # the process died: the kernel dropped its lock, its files stayed
    killed._lock_fd = None
    (tmp_path / "other.new-dir").mkdir()  # not ours: never touched
    assert certify("--snapshot", GOOD, "--device", "07:00.1", "--output", out).returncode == 0
    assert not staging.exists() and (tmp_path / "other.new-dir").is_dir()


def test_the_lock_is_refused_in_process_too(tmp_path):
    first, second = OutputFolder(tmp_path / "o"), OutputFolder(tmp_path / "o")
    first.open()
    try:
        with pytest.raises(OutputFolderError, match="another vfio-certify run"):
            second.open()
    finally:
        first.close()
    second.open()
    second.close()


def test_check_output_accepts_new_empty_and_earlier_runs(tmp_path):
    check_output(tmp_path / "new", [])
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", [])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / MARKER).write_text("")
    (tmp_path / "run" / "anything").write_text("")
    check_output(tmp_path / "run", [])
    (tmp_path / "link").symlink_to(tmp_path / "run")
    with pytest.raises(OutputFolderError, match="a link"):
        check_output(tmp_path / "link", [])


def test_the_readme_first_command_works_twice(tmp_path):
    """`vfio-certify --output reports/latest` from a checkout: beside reports/templates, run after run."""
    work = tmp_path / "checkout"
    shutil.copytree(REPO / "reports", work / "reports")
    args = ["--snapshot", GOOD, "--device", "07:00.1", "--output", "reports/latest"]
    assert certify(*args, cwd=work).returncode == 0
    assert certify(*args, cwd=work).returncode == 0
    assert sorted(os.listdir(work / "reports")) == ["latest", "templates"]
    assert sorted(os.listdir(work / "reports" / "templates")) == sorted(os.listdir(REPO / "reports" / "templates"))
    old = one_line_usage_error(certify("--snapshot", GOOD, "--output", "reports", cwd=work))
    assert "not an earlier vfio-certify run" in old  # the old first command: refused, the templates kept


def test_a_run_that_cannot_be_put_in_place_says_where_it_is(tmp_path, monkeypatch):
    """A mount point as --output, say (rename says EBUSY): one line naming the finished run's folder, kept."""
    import errno

    from vfio_certify import output_folder

    (tmp_path / "out").mkdir()
    folder = OutputFolder(tmp_path / "out")
    staging = folder.open()
    (staging / "summary.json").write_text("{}")

    def busy(src, dst):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(output_folder, "_exchange", lambda a, b: False)
    monkeypatch.setattr(output_folder.os, "rename", busy)
    try:
        with pytest.raises(OutputFolderError) as failed:
            folder.commit()
    finally:
        monkeypatch.undo()
        folder.close()
    assert str(failed.value) == (f"--output {tmp_path / 'out'}: this run could not be put in its place "
                                 f"(Device or resource busy); it is complete in {staging}")
    assert (staging / "summary.json").is_file() and (tmp_path / "out").is_dir()
