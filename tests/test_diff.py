"""Nightly regression: the diff between two runs, per host, from summary.json + overview.json."""
import json
import subprocess
import sys
from pathlib import Path

from vfio_certify.diff import RunRecord, diff_runs, load_run, write_overview

REPO = Path(__file__).resolve().parent.parent


def check(check_id, outcome, message="m"):
    return {"id": check_id, "outcome": outcome, "severity": "required", "message": message, "evidence": [],
            "remediation": "", "duration_s": 0.001}


def host(name, verdict, *checks):
    return {"host": name, "source": "ssh", "verdict": verdict, "checks": list(checks)}


def overview(kernel, cmdline, groups):
    return {"kernel_release": kernel, "cmdline": cmdline, "groups": [
        {"number": n, "viable": None, "devices": [{"address": a, "driver": d} for a, d in devices]}
        for n, devices in groups.items()]}


def summary(*hosts):
    return {"format": "certify-summary/1", "started_at": "2026-11-24T02:00:00Z", "duration_s": 1.0, "hosts": list(hosts)}


OK = check("iommu.enabled", "passed")
GROUPS_NIGHT_1 = {47: [("0000:07:00.0", "igb")], 48: [("0000:07:00.1", "igb")]}

NIGHT_1 = RunRecord("night-1", summary(
    host("kvm1", "certified", OK), host("kvm2", "certified", OK), host("kvm3", "certified", OK),
    host("kvm4", "certified", OK), host("kvm5", "not-certified", check("iommu.enabled", "failed")),
), {
    "kvm1": overview("5.14.0-162.el9", "ro intel_iommu=on", GROUPS_NIGHT_1),
    "kvm2": overview("5.14.0-162.el9", "ro intel_iommu=on", GROUPS_NIGHT_1),
    "kvm3": overview("5.14.0-162.el9", "ro intel_iommu=on", GROUPS_NIGHT_1),
    "kvm4": overview("5.14.0-162.el9", "ro intel_iommu=on", GROUPS_NIGHT_1),
    "kvm5": overview("5.14.0-162.el9", "ro", {}),
})
NIGHT_2 = RunRecord("night-2", summary(
    host("kvm1", "not-certified", check("iommu.enabled", "failed", "IOMMU not enabled")),
    host("kvm2", "certified", OK),
    host("kvm3", "certified", OK),
    host("kvm4", "unreachable", check("host.reachable", "failed", "Connection timed out")),
    host("kvm5", "certified", OK),
), {
    "kvm1": overview("5.14.0-284.el9", "ro", {}),  # a kernel update dropped intel_iommu=on
    "kvm2": overview("5.14.0-162.el9", "ro intel_iommu=on", {47: [("0000:07:00.0", "igb"), ("0000:07:00.1", "igb")]}),
    "kvm3": overview("5.14.0-162.el9", "ro intel_iommu=on", {47: [("0000:07:00.0", "igb")], 48: [("0000:07:00.1", "vfio-pci")]}),
    "kvm5": overview("5.14.0-162.el9", "ro intel_iommu=on", GROUPS_NIGHT_1),
})


def by_host(diff):
    return {h.host: h for h in diff.hosts}


def test_kernel_update_that_turned_the_iommu_off():
    kvm1 = by_host(diff_runs(NIGHT_1, NIGHT_2))["kvm1"]
    assert kvm1.regression and kvm1.kernel == ("5.14.0-162.el9", "5.14.0-284.el9")
    assert kvm1.cmdline_removed == ["intel_iommu=on"]
    assert [c.id for c in kvm1.newly_failing] == ["iommu.enabled"]
    assert "0000:07:00.1 is no longer in any group (was group 48)" in kvm1.group_changes


def test_firmware_update_that_merged_groups_is_shown():
    kvm2 = by_host(diff_runs(NIGHT_1, NIGHT_2))["kvm2"]
    assert "0000:07:00.1: group 48 -> 47; now shares it with 0000:07:00.0" in kvm2.group_changes
    assert not kvm2.regression  # no check failed: a change to look at, not a regression by itself


def test_nic_moved_to_another_driver():
    kvm3 = by_host(diff_runs(NIGHT_1, NIGHT_2))["kvm3"]
    assert kvm3.driver_changes == ["0000:07:00.1: igb -> vfio-pci"] and not kvm3.group_changes


def test_unreachable_host_is_a_regression_and_fixed_host_is_newly_passing():
    hosts = by_host(diff_runs(NIGHT_1, NIGHT_2))
    assert hosts["kvm4"].regression and hosts["kvm4"].new_verdict == "unreachable"
    assert [c.id for c in hosts["kvm5"].newly_passing] == ["iommu.enabled"] and not hosts["kvm5"].regression
    assert hosts["kvm5"].cmdline_added == ["intel_iommu=on"]


def test_same_run_twice_is_no_change():
    diff = diff_runs(NIGHT_1, NIGHT_1)
    assert not diff.regression and "no change" in diff.text()


def _write(folder: Path, record: RunRecord):
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(record.summary))
    write_overview(folder / "overview.json", record.overviews)
    return folder


def test_cli_diff_exits_1_on_regression_and_reads_folders_or_summary_files(tmp_path):
    old, new = _write(tmp_path / "n1", NIGHT_1), _write(tmp_path / "n2", NIGHT_2)
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", old, new / "summary.json"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "kvm1: REGRESSION" in proc.stdout and "kernel: 5.14.0-162.el9 -> 5.14.0-284.el9" in proc.stdout
    assert "kvm2: changed" in proc.stdout and proc.stdout.rstrip().endswith("regression")
    same = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", old, old], capture_output=True, text=True, cwd=REPO)
    assert same.returncode == 0 and "no regression" in same.stdout
    (tmp_path / "junk.json").write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", old, tmp_path / "junk.json"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not a certify-summary/1 file" in bad.stderr and "Traceback" not in bad.stderr


def test_load_run_without_overview_still_diffs_checks(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(NIGHT_2.summary))
    record = load_run(tmp_path)
    assert record.overviews == {}
    kvm1 = by_host(diff_runs(NIGHT_1, record))["kvm1"]
    assert kvm1.regression and kvm1.kernel is None


def test_a_host_missing_from_tonights_run_is_a_regression(tmp_path):
    """A failed inventory expansion or a missing bundle looks exactly like this: never a quiet exit 0."""
    tonight = RunRecord("night-2", summary(*[h for h in NIGHT_1.summary["hosts"] if h["host"] != "kvm3"]),
                        NIGHT_1.overviews)
    diff = diff_runs(NIGHT_1, tonight)
    assert diff.removed_hosts == ["kvm3"] and diff.regression and diff.to_dict()["regression"]
    assert "kvm3: REGRESSION: no longer in the run" in diff.text()
    old, new = _write(tmp_path / "n1", NIGHT_1), _write(tmp_path / "n2", tonight)
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", old, new], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 1 and "kvm3: REGRESSION" in proc.stdout


def test_a_baseline_without_a_usable_overview_says_what_was_not_compared(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps(NIGHT_1.summary))
    for content, why in ((None, "missing"), ("{not json", "not valid JSON"), ('{"format": "x"}', "not a certify-overview/1")):
        if content is not None:
            (old / "overview.json").write_text(content)
        diff = diff_runs(load_run(old), NIGHT_1)
        assert f"{old / 'overview.json'}: {why}" in diff.not_compared and not diff.regression
        assert f"kernel, command line and IOMMU groups not compared: {old / 'overview.json'}: {why}" in diff.text()
        assert "no change" not in diff.text().splitlines()
        assert diff.to_dict()["not_compared"] == diff.not_compared
    assert diff_runs(NIGHT_1, NIGHT_1).to_dict()["not_compared"] is None


def test_a_host_reachable_again_is_not_a_regression_of_its_checks():
    for old_checks in ([check("host.reachable", "failed", "timed out")],
                       [check("host.reachable", "failed", "timed out"), check("iommu.enabled", "skipped")]):
        old = RunRecord("n1", summary(host("kvm1", "unreachable", *old_checks)), {})
        new = RunRecord("n2", summary(host("kvm1", "not-certified", check("host.reachable", "passed"),
                                           check("iommu.enabled", "failed"), check("kvm.device", "passed"))),
                        {"kvm1": overview("6.1", "ro", {})})
        kvm1 = by_host(diff_runs(old, new))["kvm1"]
        assert kvm1.changed and not kvm1.regression and not kvm1.newly_failing and not kvm1.newly_passing
        assert kvm1.lines() == ["verdict: unreachable -> not-certified",
                                "reachable again (unreachable in the baseline): checks not compared; failing now: iommu.enabled"]
        assert not diff_runs(old, new).regression


def test_checks_that_disappear_are_listed_as_no_longer_checked():
    device = check("device.present[0000:07:00.1]", "failed")
    old = RunRecord("n1", summary(host("kvm1", "not-certified", OK, device), host("kvm2", "certified", OK, device)), {})
    new = RunRecord("n2", summary(host("kvm1", "certified", OK),
                                  host("kvm2", "unreachable", check("host.reachable", "failed", "timed out"))), {})
    hosts = by_host(diff_runs(old, new))
    assert hosts["kvm1"].changed and not hosts["kvm1"].regression
    assert hosts["kvm1"].lines() == ["verdict: not-certified -> certified",
                                     "no longer checked: device.present[0000:07:00.1] (was failed)"]
    assert not any(line.startswith("no longer checked") for line in hosts["kvm2"].lines())  # not judged: not "gone"
