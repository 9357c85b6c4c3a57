#!/usr/bin/env python3
"""Benchmark of the static certification of this machine (collect once, judge, report), and its floor.

Measures, on this machine, alternated run by run after one warm-up round (a busy machine slows each alike):
  1. local certification (`vfio-certify --output DIR`: collection, judging, every report) beside
     `virt-host-validate qemu`, the C tool it replaces: wall and CPU seconds of the whole process tree, peak
     RSS, the median of the per-round ratios (goal <= 15x, aim 5x);
  2. the floor a pytest-run certification cannot go under: Python's start (`python -c pass`),
     `import pytest`, and an empty pytest run with the plugins and flags the command gives pytest; and this
     machine's snapshot judged with every report but not collected (`--snapshot`, collected once beforehand):
     what a local certification would take if its collection cost nothing;
  3. remote commands per host over SSH (goal: 1), against a real sshd on loopback
     (tests/support/sshd.py; needs root and openssh-server).

Children run without PYTHONDONTWRITEBYTECODE: an installed vfio-certify has its compiled modules.

Usage: .venv/bin/python bench/static_certification.py [--runs 7] [--json bench/out/static.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench.snapshots_at_scale import timed  # noqa: E402  (wall, exit, peak RSS KiB, CPU s of a process tree)
from vfio_certify.cli import plugin_args  # noqa: E402

GOAL_RATIO, AIM_RATIO = 15.0, 5.0


def remote_commands_per_host() -> dict:
    from support.sshd import LoopbackSshd

    reason = LoopbackSshd.unavailable_reason()
    if reason:
        return {"skipped": reason}
    with LoopbackSshd() as sshd, tempfile.TemporaryDirectory() as out:
        sshd.reset_log()
        begin = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--host", sshd.url,
                               "--ssh-config", str(sshd.ssh_config), "--output", out],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"remote_commands": len(sshd.remote_commands()), "seconds": round(time.perf_counter() - begin, 3),
                "exit": proc.returncode}


def commands(scratch: Path) -> dict[str, list[str]]:
    empty = scratch / "empty"
    empty.mkdir()
    measured = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import pytest'": [sys.executable, "-c", "import pytest"],
        "empty pytest run, the command's plugins": [sys.executable, "-m", "pytest", "-q", *plugin_args(),
                                                    "--assert=plain", str(empty)],
        "local certification": [sys.executable, "-m", "vfio_certify.cli", "--output"],  # + a new folder each run
    }
    snapshot = scratch / "this-machine"
    if subprocess.run([sys.executable, "-m", "vfio_certify.cli", "collect", "--output", str(snapshot)], cwd=REPO,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
        measured["its snapshot judged, not collected"] = [sys.executable, "-m", "vfio_certify.cli", "--snapshot",
                                                          str(snapshot), "--output"]
    validator = shutil.which("virt-host-validate")
    if validator:
        measured["virt-host-validate qemu"] = [validator, "qemu"]
    return measured


def measure(runs: int, scratch: Path) -> dict:
    argvs = commands(scratch)
    samples: dict[str, list[tuple]] = {label: [] for label in argvs}
    for i in range(runs + 1):  # the first round warms the page cache and compiled modules
        for label, argv in argvs.items():
            if argv[-1] == "--output":  # a new folder each run
                argv = argv + [str(scratch / f"out-{len(samples[label])}-{label.split()[0]}")]
            samples[label].append(timed(argv))
    results = {}
    for label, rounds in samples.items():
        rounds = rounds[1:]
        results[label] = {"wall_s": round(statistics.median(r[0] for r in rounds), 4),
                          "cpu_s": round(statistics.median(r[3] for r in rounds), 4),
                          "peak_rss_mib": round(max(r[2] for r in rounds) / 1024, 1)}
    peer = samples.get("virt-host-validate qemu")
    if peer:
        for label, rounds in samples.items():
            results[label]["x_virt_host_validate"] = round(
                statistics.median(a[0] / b[0] for a, b in zip(rounds[1:], peer[1:])), 1)
            results[label]["cpu_x_virt_host_validate"] = round(
                statistics.median(a[3] / max(b[3], 1e-3) for a, b in zip(rounds[1:], peer[1:])), 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "static.json")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    # The interpreter counts: a distribution's Python (Debian 12's, which the README's set-up gives a fresh Debian
    # machine) starts faster than one built by hand (pyenv's); run this bench with the .venv of each to compare.
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                                 "interpreter": os.path.realpath(sys.executable),
                                 "uname": os.uname().release, "loadavg_at_start": os.getloadavg()},
                     "goal_x_virt_host_validate": GOAL_RATIO, "aim_x_virt_host_validate": AIM_RATIO}
    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmp:
        os.environ["BENCH_RSS_FILE"] = str(Path(tmp) / "rss")
        results["local"] = measure(args.runs, Path(tmp))
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["ssh"] = remote_commands_per_host()

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Python {results['machine']['python']} ({results['machine']['interpreter']})")
    print(f"{'':42s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS':>9s} {'x vhv':>6s} {'CPU x vhv':>9s}   (medians of {args.runs})")
    for label, row in results["local"].items():
        print(f"{label:42s} {row['wall_s']:8.3f} {row['cpu_s']:8.3f} {row['peak_rss_mib']:6.1f} MiB"
              f" {row.get('x_virt_host_validate', float('nan')):6.1f} {row.get('cpu_x_virt_host_validate', float('nan')):9.1f}")
    if "virt-host-validate qemu" not in results["local"]:
        print("virt-host-validate not installed (scripts/apt-packages.txt lists libvirt-clients): no ratio")
    else:
        print(f"goal: local certification <= {GOAL_RATIO:.0f}x virt-host-validate qemu (aim {AIM_RATIO:.0f}x)")
    ssh = results["ssh"]
    print(f"remote commands/host over SSH: {ssh.get('remote_commands', ssh.get('skipped'))}   (goal 1)")
    load = results["machine"]
    print(f"load average at start {load['loadavg_at_start'][0]:.1f}, at end {load['loadavg_at_end'][0]:.1f} "
          f"({os.cpu_count()} cores)")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
