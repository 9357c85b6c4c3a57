#!/usr/bin/env python3
"""Benchmark of the static certification (issue: collect once, judge, report).

Measures, on this machine:
  1. remote commands per host over SSH (goal: 1), against a real sshd on loopback
     (tests/support/sshd.py; needs root and openssh-server);
  2. local certification wall time as a ratio to an empty pytest run in the same
     venv (goal: <= 1.5x), medians of --runs runs;
  3. `virt-host-validate qemu` on the same machine, side by side, when installed.

Usage: .venv/bin/python bench/static_certification.py [--runs 5] [--json bench/out/static.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def wall(cmd: list[str], cwd: Path = REPO) -> tuple[float, int]:
    begin = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - begin, proc.returncode


def median_wall(cmd: list[str], runs: int, cwd: Path = REPO) -> float:
    wall(cmd, cwd)  # warm the page cache and .pyc files
    return statistics.median(wall(cmd, cwd)[0] for _ in range(runs))


def remote_commands_per_host() -> dict:
    from support.sshd import LoopbackSshd

    reason = LoopbackSshd.unavailable_reason()
    if reason:
        return {"skipped": reason}
    with LoopbackSshd() as sshd, tempfile.TemporaryDirectory() as out:
        sshd.reset_log()
        seconds, rc = wall([sys.executable, "-m", "vfio_certify.cli", "--host", sshd.url,
                            "--ssh-config", str(sshd.ssh_config), "--output", out])
        return {"remote_commands": len(sshd.remote_commands()), "seconds": round(seconds, 3), "exit": rc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "static.json")
    args = parser.parse_args()

    results: dict = {"machine": {"cores": __import__("os").cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as out:
        pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", empty]
        empty_s = median_wall(pytest_cmd, args.runs, Path(empty))
        # The same empty run with the plugins and assertion mode the CLI itself uses: the stricter baseline.
        empty_same_flags_s = median_wall(pytest_cmd + ["-p", "no:hypothesispytest", "--assert=plain"], args.runs, Path(empty))
        certify_s = median_wall([sys.executable, "-m", "vfio_certify.cli", "--output", out], args.runs)
    results["local"] = {"certify_s": round(certify_s, 3), "empty_pytest_s": round(empty_s, 3),
                        "ratio": round(certify_s / empty_s, 2),
                        "empty_pytest_same_flags_s": round(empty_same_flags_s, 3),
                        "ratio_same_flags": round(certify_s / empty_same_flags_s, 2), "goal_ratio": 1.5}
    results["ssh"] = remote_commands_per_host()
    validator = shutil.which("virt-host-validate")
    if validator:
        results["virt_host_validate_qemu_s"] = round(median_wall([validator, "qemu"], args.runs), 3)
    else:
        results["virt_host_validate_qemu_s"] = "not installed (apt-get install libvirt-clients)"

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    local, ssh = results["local"], results["ssh"]
    print(f"local certification     {local['certify_s']:.3f} s  (median of {args.runs})")
    print(f"empty pytest run        {local['empty_pytest_s']:.3f} s")
    print(f"ratio                   {local['ratio']:.2f}x   (goal <= {local['goal_ratio']}x)")
    print(f"empty pytest, CLI flags {local['empty_pytest_same_flags_s']:.3f} s  -> ratio {local['ratio_same_flags']:.2f}x")
    print(f"virt-host-validate qemu {results['virt_host_validate_qemu_s']}")
    print(f"remote commands/host    {ssh.get('remote_commands', ssh.get('skipped'))}   (goal 1)")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
