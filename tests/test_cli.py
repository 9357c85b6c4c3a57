"""The vfio-certify command end to end: this machine, snapshots, bundles, and a real sshd."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support.summary_spec import assert_valid_summary

REPO = Path(__file__).resolve().parent.parent


def certify(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300)
    return proc


def summary_of(output: Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    assert_valid_summary(summary)
    return summary


def outcomes(host: dict) -> dict:
    return {c["id"]: c["outcome"] for c in host["checks"]}


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle") / "this-host.tar.gz"
    proc = certify("collect", "--output", bundle)
    assert proc.returncode == 0, proc.stderr
    return bundle


def test_certify_this_machine_writes_every_report(tmp_path):
    proc = certify("--output", tmp_path)
    summary = summary_of(tmp_path)
    [host] = summary["hosts"]
    assert host["host"] == "local://" and host["source"] == "local"
    assert proc.returncode == {"certified": 0, "not-certified": 1, "incomplete": 1}[host["verdict"]]
    ids = set(outcomes(host))
    for expected in ("host.reachable", "cpu.virtualization", "kvm.device", "kernel.config[CONFIG_VFIO]",
                     "firmware.iommu_table", "iommu.enabled", "kernel.cmdline", "iommu.irq_remapping",
                     "iommu.groups", "vfio.module[vfio_pci]", "vfio.device_node"):
        assert expected in ids
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) >= len(host["checks"]) and all("local://" in c.get("name") for c in cases)
    assert "certification.html#host-1" in (tmp_path / "index.html").read_text()
    page = (tmp_path / "certification.html").read_text()
    assert host["verdict"].replace("-", " ").upper() in page
    report = (tmp_path / "report.html").read_text()
    assert "<th>Host</th><th>Severity</th><th>Check (pytest id)</th>" in report  # every check: its host, severity, id
    assert report.count('<tr class="row-') == len(host["checks"])
    assert '<td class="col-evidence"><pre>' in report and "&amp;lt;" not in report  # evidence, escaped once
    assert "vfio-certify verdict" in proc.stdout


def test_snapshot_folder_and_bundle_are_judged_like_the_live_host(tmp_path, local_bundle):
    live = certify("--output", tmp_path / "live")
    from_bundle = certify("--snapshot", local_bundle, "--output", tmp_path / "bundle")
    [live_host], [bundle_host] = summary_of(tmp_path / "live")["hosts"], summary_of(tmp_path / "bundle")["hosts"]
    assert bundle_host["source"] == "snapshot" and bundle_host["host"] == str(local_bundle)
    assert outcomes(bundle_host) == outcomes(live_host)
    assert from_bundle.returncode == live.returncode
    folder = tmp_path / "folder"
    assert certify("collect", "--output", folder).returncode == 0
    assert (folder / "meta.json").is_file() and (folder / "root" / "proc" / "cmdline").is_file()
    certify("--snapshot", folder, "--output", tmp_path / "folder-out")
    assert outcomes(summary_of(tmp_path / "folder-out")["hosts"][0]) == outcomes(live_host)


def test_over_ssh_one_remote_command_per_host(tmp_path, loopback_sshd):
    loopback_sshd.reset_log()
    proc = certify("--host", loopback_sshd.url, "--ssh-config", loopback_sshd.ssh_config, "--output", tmp_path / "ssh")
    [host] = summary_of(tmp_path / "ssh")["hosts"]
    assert host["source"] == "ssh" and host["verdict"] != "unreachable", proc.stdout[-2000:]
    assert len(loopback_sshd.remote_commands()) == 1
    certify("--output", tmp_path / "local")
    assert outcomes(host) == outcomes(summary_of(tmp_path / "local")["hosts"][0])


def test_an_unreachable_host_does_not_stop_the_others(tmp_path, loopback_sshd):
    dead = "ssh://root@127.0.0.1:9"
    proc = certify("--host", dead, "--host", loopback_sshd.url, "--ssh-config", loopback_sshd.ssh_config,
                   "--connect-timeout", "3", "--output", tmp_path)
    assert proc.returncode == 3
    hosts = {h["host"]: h for h in summary_of(tmp_path)["hosts"]}
    assert hosts[dead]["verdict"] == "unreachable"
    [reach] = hosts[dead]["checks"]
    assert reach["id"] == "host.reachable" and "Connection refused" in reach["message"]
    assert hosts[loopback_sshd.url]["verdict"] in ("certified", "not-certified", "incomplete")
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--device", "zz:99"], "--device 'zz:99': not a PCI address"),
    (["--snapshot", "/nonexistent/snap"], "--snapshot /nonexistent/snap: no such folder or file"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, args, needle):
    proc = certify(*args, "--output", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"vfio-certify: {needle}" or needle in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_a_hostile_bundle_is_refused_and_nothing_is_written_outside(tmp_path):
    import io
    import tarfile

    bundle = tmp_path / "evil.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        info = tarfile.TarInfo("snap/../../escaped-by-bundle")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pwned"))
    proc = certify("--snapshot", bundle, "--output", tmp_path / "out")
    assert proc.returncode == 3
    [host] = summary_of(tmp_path / "out")["hosts"]
    assert host["verdict"] == "unreachable" and "refused" in host["checks"][0]["message"]
    assert not (tmp_path.parent / "escaped-by-bundle").exists() and not (tmp_path / "escaped-by-bundle").exists()


def test_collect_from_an_unreachable_host_is_one_line_exit_3(tmp_path):
    proc = certify("collect", "--host", "ssh://root@127.0.0.1:9", "--connect-timeout", "3", "--output", tmp_path / "s")
    assert proc.returncode == 3 and "unreachable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_hostile_host_text_stays_inert_in_both_reports(tmp_path):
    evil = "<script>alert(1)</script>"
    snap = tmp_path / "snap"
    files = {
        "meta.json": json.dumps({"format": "host-snapshot/1", "hostname": evil, "kernel_release": "6.1.0-9-amd64"}).encode(),
        "root/proc/cmdline": f"ro quiet intel_iommu=on x={evil}\r\n".encode(),
        "root/proc/cpuinfo": f"vendor_id\t: GenuineIntel\nmodel name\t: {evil}\nflags\t: vmx\n".encode(),
        # a whole boot log (banner to init), so its missing VT-d init line fails iommu.enabled: not certified
        "commands/dmesg": b"[    0.000000] Linux version 6.1.0-9-amd64 (" + evil.encode() + b")\n"
                          b"[    0.0] ACPI: DMAR 0x0 \xff\xfe" + evil.encode() + b"\x00\n[    0.1] DMAR: IOMMU enabled\n"
                          b"[    1.0] Run /init as init process\n",
        "root/sys/bus/pci/devices/0000:07:00.1/vendor": b"0x8086\n",
        "root/sys/bus/pci/devices/0000:07:00.1/device": b"0x1521\n",
        "root/sys/bus/pci/devices/0000:07:00.1/class": b"0x020000\n",
        "commands/lspci_-nnk": f"07:00.1 Ethernet controller [0200]: {evil} [8086:1521]\n".encode(),
    }
    for rel, data in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes(data)
    proc = certify("--snapshot", snap, "--device", "07:00.1", "--output", tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILURES" not in proc.stdout  # pytest's quadratic summary of failures is off: the verdict says it
    page = (tmp_path / "out" / "certification.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and evil not in page and "<script" not in page
    report = (tmp_path / "out" / "report.html").read_text()
    assert evil not in report  # pytest-html keeps its own scripts, but host text is escaped
    summary = summary_of(tmp_path / "out")
    present = next(c for c in summary["hosts"][0]["checks"] if c["id"] == "device.present[0000:07:00.1]")
    assert present["outcome"] == "passed" and evil in present["message"]  # JSON carries it as data, unchanged


def _shells():
    import shutil

    found = {"sh": shutil.which("sh"), "dash": shutil.which("dash"), "busybox": shutil.which("busybox")}
    return [pytest.param(name, id=name, marks=pytest.mark.skipif(not path, reason=f"no {name} here"))
            for name, path in found.items()]


@pytest.mark.parametrize("shell", _shells())
def test_the_script_alone_writes_meta_json_with_the_absence_convention(tmp_path, shell):
    """`vfio-certify script` + `sh collect.sh FILE` (the Ansible path): no controller completes the
    bundle, so the script's own meta.json must carry the format, the convention and the host's clock."""
    import os
    import re

    from vfio_certify.snapshot import Snapshot, unpack_bundle
    from vfio_certify.snapshot.reader import PathState

    script = tmp_path / "collect.sh"
    script.write_text(certify("script").stdout)
    argv = ["busybox", "sh"] if shell == "busybox" else [shell]
    proc = subprocess.run([*argv, str(script), str(tmp_path / "b.tar.gz")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    snap = Snapshot(unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "out"))
    meta = json.loads((snap.path / "meta.json").read_text())
    assert meta["format"] == "host-snapshot/1" and meta["absence"] == "parent-folder"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["collected_at"]), meta
    assert set(meta) <= {"format", "absence", "collected_at", "hostname", "kernel_release"}
    assert meta.get("kernel_release", os.uname().release) == os.uname().release
    assert snap.meta_problem is None and snap.kernel_release == os.uname().release
    assert snap.state("/dev/vfio-certify-no-such-node") is PathState.ABSENT  # /dev was probed
    assert snap.state("/no-such-folder/x") is PathState.NOT_COLLECTED


def test_the_controller_merges_into_the_scripts_meta_json(tmp_path):
    from vfio_certify.collect.runner import _complete_meta
    from vfio_certify.snapshot.tree import DiskTree

    evil = '<b>"kvm"\\</b>'
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "uname_-n").write_text(evil + "\n")
    (tmp_path / "commands" / "uname_-r").write_text("6.1.0-9-amd64\n")
    (tmp_path / "notes").write_text("unreadable: /etc/modprobe.d/x.conf\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "target").write_text("host file")
    (tmp_path / "meta.json").symlink_to("root/target")  # a link the host sent is replaced, not written through
    _complete_meta(DiskTree(tmp_path))
    assert (tmp_path / "root" / "target").read_text() == "host file"
    # this side sent the script, so its convention holds even when the host's meta.json was lost or forged
    assert json.loads((tmp_path / "meta.json").read_text())["absence"] == "parent-folder"
    (tmp_path / "meta.json").write_text(json.dumps(
        {"format": "host-snapshot/1", "absence": "parent-folder", "collected_at": "2001-02-03T04:05:06Z"}))
    (tmp_path / "notes").write_text("unreadable: /etc/modprobe.d/x.conf\n")
    _complete_meta(DiskTree(tmp_path))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta == {"format": "host-snapshot/1", "absence": "parent-folder", "collected_at": "2001-02-03T04:05:06Z",
                    "hostname": evil, "kernel_release": "6.1.0-9-amd64",
                    "collector_notes": ["unreadable: /etc/modprobe.d/x.conf"]}
    assert not (tmp_path / "notes").exists()


def test_with_jobs_a_non_ascii_host_stays_on_one_worker(tmp_path):
    """pytest escapes non-ASCII in node ids (kvm-\\xfc): the scheduler must still see one host, one scope."""
    import shutil
    from types import SimpleNamespace

    from vfio_certify.plugin import SESSION_KEY, pytest_xdist_make_scheduler
    from vfio_certify.session import CertifySession
    from vfio_certify.targets import CertifyTarget

    names = [str(tmp_path / "kvm-ü"), str(tmp_path / "kvm-u")]
    for name in names:
        shutil.copytree(REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu", name, symlinks=True)
    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "checks"), "--collect-only", "-q",
                           "-p", "no:cacheprovider", *[f"--snapshot={n}" for n in names], "--device=07:00.1"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    nodeids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert any("kvm-\\xfc" in n for n in nodeids), proc.stdout[-2000:]
    session = CertifySession([CertifyTarget(n, "snapshot", snapshot_path=n) for n in names], [], None)
    config = SimpleNamespace(option=SimpleNamespace(dist="load"), stash={SESSION_KEY: session},
                             getvalue=lambda name: ["2*popen"])
    scheduler = pytest_xdist_make_scheduler(config, None)
    assert {scheduler._split_scope(n) for n in nodeids} == set(names)


@pytest.mark.parametrize("same", [lambda out: out, lambda out: out / "summary.json"])
def test_baseline_and_output_in_the_same_folder_is_refused_and_the_baseline_kept(tmp_path, same):
    out = tmp_path / "night"
    out.mkdir()
    summary = {"format": "certify-summary/1", "started_at": "t", "duration_s": 1.0, "hosts": []}
    (out / "summary.json").write_text(json.dumps(summary))
    proc = certify("--baseline", same(out), "--output", out)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "same folder" in proc.stderr and json.loads((out / "summary.json").read_text()) == summary


def test_a_target_given_twice_is_a_usage_error(tmp_path):
    snap = REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    proc = certify("--snapshot", snap, "--snapshot", snap, "--output", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == f"vfio-certify: --snapshot {snap}: given twice"
