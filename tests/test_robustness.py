"""A bug or a crash inside vfio-certify costs a fact, never a host: the host is still in every report,
not certified, with the error named. The bugs are injected (a parser or the collection raising), since
the real parsers are fuzzed not to raise (tests/test_fuzz_parsers.py)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from support.summary_spec import assert_valid_summary

REPO = Path(__file__).resolve().parent.parent
GOOD_HOST = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"


def certify_with(inject: str, *args) -> tuple[subprocess.CompletedProcess, dict]:
    """vfio-certify in a fresh interpreter after running `inject` (the fault), then its summary.json."""
    out = Path(args[args.index("--output") + 1])
    code = f"{inject}\nfrom vfio_certify.cli import main\nraise SystemExit(main({[str(a) for a in args]!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert_valid_summary(summary)
    return proc, summary


def test_a_parser_that_raises_costs_its_facts_and_fails_host_reachable(tmp_path):
    inject = ("import vfio_certify.facts.readers.identity as h\n"
              "def boom(text): raise ValueError('injected parser bug')\n"
              "h.parse_cpuinfo = boom")
    proc, summary = certify_with(inject, "--snapshot", GOOD_HOST, "--device", "07:00.1", "--output", tmp_path)
    [host] = summary["hosts"]
    checks = {c["id"]: c for c in host["checks"]}
    assert proc.returncode == 1 and host["verdict"] == "not-certified", proc.stdout[-2000:]
    reachable = checks["host.reachable"]
    assert reachable["outcome"] == "error" and "read_identity: ValueError: injected parser bug" in reachable["message"]
    assert "\n" not in reachable["message"]
    assert checks["cpu.virtualization"]["outcome"] == "skipped"  # its source was not read
    assert checks["iommu.enabled"]["outcome"] == "passed"  # the rest was judged
    assert "Traceback" not in proc.stderr


def test_a_crash_before_any_check_runs_still_reports_the_host_with_its_check_ids(tmp_path):
    """Every check's set-up raises (the collection itself crashed): each check is an `error` under its own
    id -- also for a host whose name has dashes in it -- and the host is in summary.json, not certified."""
    snap = tmp_path / "kvm-lab-1"
    shutil.copytree(GOOD_HOST, snap, symlinks=True)
    inject = ("import vfio_certify.session as s\n"
              "def boom(self, target): raise RuntimeError('injected crash')\n"
              "s.CertifySession.collected = boom")
    proc, summary = certify_with(inject, "--snapshot", snap, "--device", "07:00.1", "--output", tmp_path / "out")
    [host] = summary["hosts"]
    assert host["host"] == str(snap) and host["verdict"] == "not-certified", proc.stdout[-2000:]
    assert proc.returncode == 1
    ids = {c["id"] for c in host["checks"]}
    assert {"host.reachable", "kernel.config[CONFIG_VFIO]", "iommu.group_isolated[0000:07:00.1]",
            "vfio.module[vfio_pci]"} <= ids, sorted(ids)
    assert all(c["outcome"] == "error" and "injected crash" in c["message"] for c in host["checks"])


def test_a_host_is_named_as_given_on_the_command_line(tmp_path):
    """`--host root@127.0.0.1:1` (no scheme) is an SSH host, and summary.json names it as typed: waivers'
    host globs and the nightly diff match what the user wrote."""
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--host", "root@127.0.0.1:1",
                           "--output", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    [host] = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["hosts"]
    assert proc.returncode == 3 and host["host"] == "root@127.0.0.1:1" and host["source"] == "ssh"
    assert host["verdict"] == "unreachable" and "Connection refused" in host["checks"][0]["message"]


def test_a_run_that_judges_nothing_still_writes_its_summary(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot", str(GOOD_HOST),
                           "--output", str(tmp_path), "--", "-k", "no_check_is_called_this"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert_valid_summary(summary)
    assert summary["hosts"] == [] and proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "vfio-certify: no check ran (see the pytest output above)"
