#!/usr/bin/env python3
"""Benchmark: the collection script's links, made by GNU tar (one per link glob) or by ln (one per link).

A bundle keeps sysfs's links (a PCI function's driver and IOMMU group, SR-IOV's physfn and virtfn, a NIC's device),
each with a short target. On a host whose tar is GNU tar the script copies them with a few tar processes; elsewhere
(busybox) it runs one ln per link. This times the script's own vc_links, both passes, under dash, over a sysfs-like
tree of links (tests/support/script_parts.py) for hosts of 10 to 500 PCI functions (fixtures/hosts: 8 to 80 links;
a server with SR-IOV: hundreds), each way, alternated, medians of --runs: wall time and CPU time (the shell and every
process it starts). The ln way is forced by a PATH whose tar is busybox's (it has no --transform), with this
machine's GNU ln, as a distribution's host without GNU tar would run it.

Usage: .venv/bin/python bench/collection_links.py [--functions 10,40,150,500] [--runs 7] [--json FILE]
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

from bench.fleet import children_cpu  # noqa: E402
from support.script_parts import links_body, sysfs_links  # noqa: E402


def timed(body: str, path: str) -> tuple[float, float]:
    began, cpu = time.perf_counter(), children_cpu()
    subprocess.run(["dash", "-c", body], check=True, env={"PATH": path, "LC_ALL": "C"})
    return time.perf_counter() - began, children_cpu() - cpu


def measure(functions: int, runs: int, scratch: Path, busybox_tar: Path) -> dict:
    src = scratch / f"src-{functions}"
    links = len(sysfs_links(src, functions))
    ways = {"tar": "/usr/bin:/bin", "ln": f"{busybox_tar}:/usr/bin:/bin"}
    samples: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for run in range(runs + 1):  # the first round warms the page cache
        for way, path in ways.items():
            out, work = scratch / f"out-{functions}-{way}-{run}", scratch / f"work-{functions}-{way}-{run}"
            work.mkdir()
            sample = timed(links_body(src, out, work), path)
            if run:
                samples[way].append(sample)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work)
    row = {"functions": functions, "links": links}
    for way, values in samples.items():
        row[f"{way}_wall_s"] = round(statistics.median(v[0] for v in values), 4)
        row[f"{way}_cpu_s"] = round(statistics.median(v[1] for v in values), 4)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", default="10,40,150,500", help="PCI functions of the hosts measured")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", default=str(REPO / "bench" / "out" / "collection_links.json"))
    args = parser.parse_args()
    busybox, tar = shutil.which("busybox"), Path("/usr/bin/tar")
    if not busybox or not shutil.which("dash") or not tar.exists():
        print("needs dash, busybox and GNU tar (/usr/bin/tar)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vfio-certify-bench-links-") as tmp:
        scratch = Path(tmp)
        (scratch / "bin").mkdir()
        os.symlink(busybox, scratch / "bin" / "tar")
        rows = [measure(int(n), args.runs, scratch, scratch / "bin") for n in args.functions.split(",")]
    print(f"{'PCI functions':>13} {'links':>6} {'ln: wall':>9} {'CPU':>7} {'tar: wall':>10} {'CPU':>7} {'wall saved':>11}"
          f"   (medians of {args.runs}, dash)")
    for r in rows:
        print(f"{r['functions']:>13} {r['links']:>6} {r['ln_wall_s']:>8.3f}s {r['ln_cpu_s']:>6.3f}s {r['tar_wall_s']:>9.3f}s "
              f"{r['tar_cpu_s']:>6.3f}s {r['ln_wall_s'] - r['tar_wall_s']:>10.3f}s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"cores": os.cpu_count(), "runs": args.runs, "rows": rows}, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
