#!/usr/bin/env python3
"""Benchmark: judging many snapshots at once, and local certification beside virt-host-validate.

Generates N host snapshots from fixtures/hosts (each copied under its own hostname; every fifth one
loses a file, so incomplete and failing hosts are among them), judges them in one
`vfio-certify -j auto` run and reports, beside each goal of the speed issue:

  - wall time and peak RSS (the largest single process: controller or a worker) for each size;
  - linearity: wall(1,000) / wall(500) (goal <= 2.2), the median over --pairs pairs of runs, each a 500-host
    run then a 1,000-host one (the sweep's own pair first), and RSS(1,000) / RSS(10) (goal <= 2);
  - the size of the output folder and of its largest page;
  - the fleet page (index.html) of the largest run in headless Chromium: the time to a screenshot, less that of
    an empty page, alternated (goal <= 1 s);
  - `vfio-certify diff` of the largest run against itself re-judged (goal <= 2 s);
  - local certification against `virt-host-validate qemu`, medians measured in the same run
    (goal <= 15x, aim 5x).

With --against DIR (another checkout of vfio-certify, e.g. `git archive main | tar -x -C DIR`), every
measurement is taken for both, alternately (DIR first), with this .venv's Python: a before/after
pair measured in the same minute, so that a busy machine slows both alike.

Usage: .venv/bin/python bench/snapshots_at_scale.py [--sizes 10,100,500,1000] [--runs 5] [--pairs 3] [--against DIR]
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
         "ratio_vs_virt_host_validate": 15.0, "fleet_page_s": 1.0}


def fixture_hosts() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if (p / "meta.json").is_file())


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def generate(count: int, into: Path) -> list[Path]:
    """count snapshot folders, cycling through the fixture hosts, each with its own hostname. Their files are hard
    links to the fixtures' where the file system allows (the judging only reads them): copies were 1.5 GB for 1,000
    hosts, whose write-back to disk slowed the runs measured after it. meta.json is each one's own file."""
    sources, made = fixture_hosts(), []
    for i in range(count):
        source, target = sources[i % len(sources)], into / f"host-{i:04d}"
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        meta = json.loads((target / "meta.json").read_text(encoding="utf-8"))
        meta["hostname"] = f"{meta.get('hostname', 'host')}-{i:04d}"
        (target / "meta.json").unlink()  # a link to the fixture's: never written through
        (target / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if i % 5 == 4:
            dropped = target / DROPPED[(i // 5) % len(DROPPED)]
            if dropped.exists():
                dropped.unlink()
        made.append(target)
    return made


def timed(argv: list[str], tree: Path = REPO) -> tuple[float, int, int, float]:
    """Wall seconds, exit status, peak RSS in KiB of the command and its descendants (largest one), and their
    CPU seconds (user + system: less sensitive than wall time to other work on a busy machine)."""
    begin = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child waits for its own children, so its RUSAGE_CHILDREN covers the whole tree
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        proc = subprocess.run(argv, cwd=tree)  # `-m vfio_certify.cli` imports the tree's own package
        import resource
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.environ["BENCH_RSS_FILE"], "w") as out:
            out.write(f"{max(usage.ru_maxrss, 0)} {usage.ru_utime + usage.ru_stime}")
        os._exit(proc.returncode)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - begin
    peak, cpu = (Path(os.environ["BENCH_RSS_FILE"]).read_text() or "0 0").split()
    return seconds, os.waitstatus_to_exitcode(status), int(peak), float(cpu)


def folder_size(path: Path) -> tuple[int, str, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size, default=None)
    return (sum(p.stat().st_size for p in files), largest.name if largest else "",
            largest.stat().st_size if largest else 0)


def judge(snapshots: list[Path], output: Path, tree: Path = REPO) -> dict:
    argv = [sys.executable, "-m", "vfio_certify.cli", "-j", "auto", "--output", str(output)]
    argv += [f"--snapshot={s}" for s in snapshots]
    seconds, code, rss_kib, cpu = timed(argv, tree)
    total, largest, largest_size = folder_size(output) if output.exists() else (0, "", 0)
    return {"hosts": len(snapshots), "wall_s": round(seconds, 2), "cpu_s": round(cpu, 2), "exit": code, "peak_rss_mib": round(rss_kib / 1024, 1),
            "output_mib": round(total / 2**20, 1), "largest_file": largest, "largest_file_mib": round(largest_size / 2**20, 1)}


def local_vs_peer(runs: int, scratch: Path, trees: dict[str, Path]) -> dict:
    """Local certification by each tree beside virt-host-validate qemu, alternated run by run (after one
    warm-up each): median wall and CPU seconds, their ratios, peak RSS."""
    validator = shutil.which("virt-host-validate")
    if not validator:
        return {"skipped": "virt-host-validate not installed (scripts/apt-packages.txt lists libvirt-clients)"}
    commands = {label: [sys.executable, "-m", "vfio_certify.cli", "--output"] for label in trees}
    measured: dict[str, list[tuple]] = {label: [] for label in [*trees, "peer"]}
    for i in range(runs + 1):  # paired, A B A B, so a drift of the machine's speed cancels in the ratio
        for label, tree in trees.items():
            measured[label].append(timed(commands[label] + [str(scratch / f"local-{label}-{i}")], tree))
        measured["peer"].append(timed([validator, "qemu"]))
    measured = {label: runs_[1:] for label, runs_ in measured.items()}  # the first round warmed the caches
    peer = measured["peer"]
    result = {"virt_host_validate_s": round(statistics.median(m[0] for m in peer), 4),
              "virt_host_validate_cpu_s": round(statistics.median(m[3] for m in peer), 4),
              "virt_host_validate_rss_mib": round(max(m[2] for m in peer) / 1024, 1)}
    for label in trees:
        ours = measured[label]
        result[label] = {"vfio_certify_s": round(statistics.median(m[0] for m in ours), 3),
                         "vfio_certify_cpu_s": round(statistics.median(m[3] for m in ours), 3),
                         "ratio_median": round(statistics.median(a[0] / b[0] for a, b in zip(ours, peer)), 1),
                         "cpu_ratio_median": round(statistics.median(a[3] / max(b[3], 1e-3) for a, b in zip(ours, peer)), 1),
                         "peak_rss_mib": round(max(m[2] for m in ours) / 1024, 1)}
    return result


def fleet_page_seconds(pages: dict[str, Path], runs: int, scratch: Path) -> dict:
    """Each fleet page's time to a screenshot in headless Chromium (1400x1000, as a person's window), less an empty
    page's, alternated with it run by run after one warm-up round: the median of the differences."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.chromium import CHROMIUM, screenshot

    if not os.access(CHROMIUM, os.X_OK):
        return {"skipped": "Chromium not installed (scripts/setup.sh installs it)"}
    empty = scratch / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body><p>-</p></body></html>")
    shots: dict[str, list[float]] = {label: [] for label in ["empty", *pages]}
    for i in range(runs + 1):
        for label in shots:
            page = empty if label == "empty" else pages[label]
            begin = time.perf_counter()
            screenshot(page, scratch / "shot.png", scratch, window="1400,1000")
            if i:
                shots[label].append(time.perf_counter() - begin)
    return {label: round(statistics.median(a - b for a, b in zip(shots[label], shots["empty"])), 2) for label in pages}


def diff_seconds(old: Path, new: Path, tree: Path) -> float:
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", str(old), str(new)], cwd=tree,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - begin, 2)


def _row_text(row: dict) -> str:
    return (f"{row['wall_s']:7.2f} s (CPU {row['cpu_s']:7.2f} s)  peak RSS {row['peak_rss_mib']:6.1f} MiB  output {row['output_mib']:6.1f} MiB "
            f"(largest {row['largest_file']} {row['largest_file_mib']} MiB)  exit {row['exit']}")


def linear_ratios(pairs: list[tuple[dict, dict]]) -> dict:
    """1,000 hosts over 500, wall and CPU, for each (500, 1,000) pair of runs taken one after the other, and their
    medians: one pair alone swings with the machine's drift (2.13x and 1.90x a few minutes apart here)."""
    walls = [round(big["wall_s"] / small["wall_s"], 2) for small, big in pairs]
    cpus = [round(big["cpu_s"] / max(small["cpu_s"], 0.01), 2) for small, big in pairs]
    return {"wall": walls, "cpu": cpus, "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus)}


def _goal_lines(label: str, by_size: dict[int, dict], diff_s: float, diff_hosts: int, local: dict,
                page: dict, linear: dict | None = None) -> list[str]:
    lines = [f"[{label}]"]
    if 1000 in by_size:
        lines.append(f"1,000 hosts            {by_size[1000]['wall_s']:.1f} s        goal <= {GOALS['wall_1000_s']:.0f} s")
    if linear:
        each = ", ".join(f"{w:.2f}" for w in linear["wall"])
        lines.append(f"wall 1,000 / 500       {linear['wall_median']:.2f}x       goal <= {GOALS['linear_1000_over_500']}x"
                     f"   (median of {len(linear['wall'])} pairs: {each})")
        lines.append(f"CPU 1,000 / 500        {linear['cpu_median']:.2f}x       (the same goal, in CPU seconds; pairs: "
                     + ", ".join(f"{c:.2f}" for c in linear["cpu"]) + ")")
    if 1000 in by_size and 10 in by_size:
        lines.append(f"RSS 1,000 / 10         {by_size[1000]['peak_rss_mib'] / max(by_size[10]['peak_rss_mib'], 1):.2f}x"
                     f"       goal <= {GOALS['rss_1000_over_10']}x")
    lines.append(f"diff of {diff_hosts} hosts      {diff_s:.2f} s       goal <= {GOALS['diff_s']} s")
    if "skipped" in page:
        lines.append(f"fleet page: {page['skipped']}")
    else:
        lines.append(f"fleet page, {diff_hosts} hosts  {page[label]:.2f} s of its own in Chromium   "
                     f"goal <= {GOALS['fleet_page_s']:.0f} s")
    if "skipped" in local:
        lines.append(f"local vs virt-host-validate: {local['skipped']}")
    else:
        mine = local[label]
        lines.append(f"local certification    {mine['vfio_certify_s']:.3f} s, {mine['peak_rss_mib']} MiB vs "
                     f"virt-host-validate qemu {local['virt_host_validate_s']:.4f} s, {local['virt_host_validate_rss_mib']}"
                     f" MiB: {mine['ratio_median']}x   goal <= {GOALS['ratio_vs_virt_host_validate']:.0f}x (aim 5x)")
        lines.append(f"  in CPU seconds        {mine['vfio_certify_cpu_s']:.3f} s vs {local['virt_host_validate_cpu_s']:.4f} s: "
                     f"{mine['cpu_ratio_median']}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,500,1000")
    parser.add_argument("--runs", type=int, default=5, help="paired runs of local certification vs virt-host-validate")
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately with this one (before/after)")
    parser.add_argument("--pairs", type=int, default=3, help="(500, 1,000) pairs of runs for the linearity goal, the "
                                                              "sweep's own pair among them (500 and 1,000 in --sizes)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "snapshots_at_scale.json")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    trees = {"before": args.against.resolve(), "this": REPO} if args.against else {"this": REPO}
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "uname": os.uname().release,
                                 "loadavg_at_start": os.getloadavg()},
                     "goals": GOALS, "runs": {label: [] for label in trees}}
    largest = max(sizes)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        scratch = Path(tmp)
        os.environ["BENCH_RSS_FILE"] = str(scratch / "rss")
        snapshots = generate(largest, scratch / "snapshots")
        for label, tree in trees.items():  # once unmeasured: compiled modules and templates are there before size 10
            judge(snapshots[:2], scratch / f"warm-{label}", tree)
        for size in sizes:
            for label, tree in trees.items():
                row = judge(snapshots[:size], scratch / f"out-{label}-{size}", tree)
                results["runs"][label].append(row)
                print(f"{size:5d} hosts  {label:6s} {_row_text(row)}", flush=True)
                if size != largest:
                    shutil.rmtree(scratch / f"out-{label}-{size}", ignore_errors=True)
        # more (500, 1,000) pairs, each taken one run after the other: the linearity goal's figure is their median
        results["linear"] = {}
        if 500 in sizes and 1000 in sizes:
            for label, tree in trees.items():
                pairs = [tuple(next(r for r in results["runs"][label] if r["hosts"] == n) for n in (500, 1000))]
                for n in range(args.pairs - 1):
                    pair = tuple(judge(snapshots[:size], scratch / f"pair-{label}-{size}-{n}", tree) for size in (500, 1000))
                    for size in (500, 1000):
                        shutil.rmtree(scratch / f"pair-{label}-{size}-{n}", ignore_errors=True)
                    print(f"  pair {n + 2}  {label:6s} 500 hosts {pair[0]['wall_s']:.2f} s, 1,000 hosts {pair[1]['wall_s']:.2f} s",
                          flush=True)
                    pairs.append(pair)
                results["linear"][label] = linear_ratios(pairs)
        # the diff: this tree's largest run against itself re-judged, read by each tree's `diff`
        judge(snapshots[:largest], scratch / f"out-{largest}-again")
        results["diff_s"] = {label: diff_seconds(scratch / f"out-this-{largest}", scratch / f"out-{largest}-again", tree)
                             for label, tree in trees.items()}
        results["diff_hosts"] = largest
        results["fleet_page_s"] = fleet_page_seconds({label: scratch / f"out-{label}-{largest}" / "index.html"
                                                      for label in trees}, args.runs, scratch)
        results["local"] = local_vs_peer(args.runs, scratch, trees)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    print()
    for label in trees:
        by_size = {r["hosts"]: r for r in results["runs"][label]}
        print("\n".join(_goal_lines(label, by_size, results["diff_s"][label], largest, results["local"],
                                     results["fleet_page_s"], results["linear"].get(label))))
    print(f"load average at start {results['machine']['loadavg_at_start'][0]:.1f}, "
          f"at end {results['machine']['loadavg_at_end'][0]:.1f} ({os.cpu_count()} cores)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
