#!/usr/bin/env python3
"""Benchmark: judging many snapshots at once, and local certification beside virt-host-validate.

Generates N host snapshots from fixtures/hosts (each copied under its own hostname; every fifth one
loses a file, so incomplete and failing hosts are among them), judges them in one
`vfio-certify -j auto` run and reports, beside each goal of the speed issue:

  - wall time and peak RSS (the largest single process: controller or a worker) for each size;
  - linearity: wall(1,000) / wall(500) (goal <= 2.2) and RSS(1,000) / RSS(10) (goal <= 2);
  - the size of the output folder and of its largest page;
  - `vfio-certify diff` of the largest run against itself re-judged (goal <= 2 s);
  - local certification against `virt-host-validate qemu`, medians measured in the same run
    (goal <= 15x, aim 5x).

Usage: .venv/bin/python bench/snapshots_at_scale.py [--sizes 10,100,500,1000] [--runs 5]
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
FIXTURES = REPO / "fixtures" / "hosts"
# Files a fifth of the generated hosts lose: each makes some check not-collected or failed.
DROPPED = ["root/proc/interrupts", "commands/dmesg", "root/proc/cmdline", "commands/lspci_-nnk"]
GOALS = {"wall_1000_s": 60.0, "linear_1000_over_500": 2.2, "rss_1000_over_10": 2.0, "diff_s": 2.0,
         "ratio_vs_virt_host_validate": 15.0}


def fixture_hosts() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if (p / "meta.json").is_file())


def generate(count: int, into: Path) -> list[Path]:
    """count snapshot folders, cycling through the fixture hosts, each with its own hostname."""
    sources, made = fixture_hosts(), []
    for i in range(count):
        source, target = sources[i % len(sources)], into / f"host-{i:04d}"
        shutil.copytree(source, target, symlinks=True)
        meta = json.loads((target / "meta.json").read_text(encoding="utf-8"))
        meta["hostname"] = f"{meta.get('hostname', 'host')}-{i:04d}"
        (target / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if i % 5 == 4:
            dropped = target / DROPPED[(i // 5) % len(DROPPED)]
            if dropped.exists():
                dropped.unlink()
        made.append(target)
    return made


def timed(argv: list[str]) -> tuple[float, int, int]:
    """Wall seconds, exit status and peak RSS in KiB of the command and its descendants (largest one)."""
    begin = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child waits for its own children, so its RUSAGE_CHILDREN covers the whole tree
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        proc = subprocess.run(argv, cwd=REPO)
        import resource
        peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 0)
        with open(os.environ["BENCH_RSS_FILE"], "w") as out:
            out.write(str(peak))
        os._exit(proc.returncode)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - begin
    peak = int(Path(os.environ["BENCH_RSS_FILE"]).read_text() or 0)
    return seconds, os.waitstatus_to_exitcode(status), peak


def folder_size(path: Path) -> tuple[int, str, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size, default=None)
    return (sum(p.stat().st_size for p in files), largest.name if largest else "",
            largest.stat().st_size if largest else 0)


def judge(snapshots: list[Path], output: Path) -> dict:
    argv = [sys.executable, "-m", "vfio_certify.cli", "-j", "auto", "--output", str(output)]
    argv += [f"--snapshot={s}" for s in snapshots]
    seconds, code, rss_kib = timed(argv)
    total, largest, largest_size = folder_size(output) if output.exists() else (0, "", 0)
    return {"hosts": len(snapshots), "wall_s": round(seconds, 2), "exit": code, "peak_rss_mib": round(rss_kib / 1024, 1),
            "output_mib": round(total / 2**20, 1), "largest_file": largest, "largest_file_mib": round(largest_size / 2**20, 1)}


def median_wall(argv: list[str], runs: int) -> float:
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm caches
    walls = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - begin)
    return statistics.median(walls)


def local_vs_peer(runs: int, scratch: Path) -> dict:
    validator = shutil.which("virt-host-validate")
    if not validator:
        return {"skipped": "virt-host-validate not installed (scripts/apt-packages.txt lists libvirt-clients)"}
    ours, peer = [], []
    for i in range(runs):  # paired, A B A B, so a drift of the machine's speed cancels in the ratio
        out = scratch / f"local-{i}"
        ours.append(median_wall([sys.executable, "-m", "vfio_certify.cli", "--output", str(out)], 1))
        peer.append(median_wall([validator, "qemu"], 1))
    ratios = sorted(a / b for a, b in zip(ours, peer))
    return {"vfio_certify_s": round(statistics.median(ours), 3), "virt_host_validate_s": round(statistics.median(peer), 4),
            "ratio_median": round(statistics.median(ratios), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,500,1000")
    parser.add_argument("--runs", type=int, default=5, help="paired runs of local certification vs virt-host-validate")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "snapshots_at_scale.json")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "uname": os.uname().release},
                     "goals": GOALS, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        scratch = Path(tmp)
        os.environ["BENCH_RSS_FILE"] = str(scratch / "rss")
        snapshots = generate(max(sizes), scratch / "snapshots")
        for size in sizes:
            row = judge(snapshots[:size], scratch / f"out-{size}")
            results["runs"].append(row)
            print(f"{size:5d} hosts  {row['wall_s']:7.2f} s  peak RSS {row['peak_rss_mib']:6.1f} MiB  "
                  f"output {row['output_mib']:6.1f} MiB (largest {row['largest_file']} {row['largest_file_mib']} MiB)"
                  f"  exit {row['exit']}", flush=True)
        by_size = {r["hosts"]: r for r in results["runs"]}
        largest = max(sizes)
        again = judge(snapshots[:largest], scratch / f"out-{largest}-again")
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", str(scratch / f"out-{largest}"),
                        str(scratch / f"out-{largest}-again")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["diff_s"] = round(time.perf_counter() - begin, 2)
        results["diff_hosts"] = again["hosts"]
        results["local"] = local_vs_peer(args.runs, scratch)
    print()
    if 1000 in by_size:
        print(f"1,000 hosts            {by_size[1000]['wall_s']:.1f} s        goal <= {GOALS['wall_1000_s']:.0f} s")
    if 1000 in by_size and 500 in by_size:
        print(f"wall 1,000 / 500       {by_size[1000]['wall_s'] / by_size[500]['wall_s']:.2f}x       "
              f"goal <= {GOALS['linear_1000_over_500']}x")
    if 1000 in by_size and 10 in by_size:
        print(f"RSS 1,000 / 10         {by_size[1000]['peak_rss_mib'] / max(by_size[10]['peak_rss_mib'], 1):.2f}x       "
              f"goal <= {GOALS['rss_1000_over_10']}x")
    print(f"diff of {results['diff_hosts']} hosts      {results['diff_s']:.2f} s       goal <= {GOALS['diff_s']} s")
    local = results["local"]
    if "skipped" in local:
        print(f"local vs virt-host-validate: {local['skipped']}")
    else:
        print(f"local certification    {local['vfio_certify_s']:.3f} s vs virt-host-validate qemu "
              f"{local['virt_host_validate_s']:.4f} s: {local['ratio_median']}x   goal <= {GOALS['ratio_vs_virt_host_validate']:.0f}x (aim 5x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
