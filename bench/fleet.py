#!/usr/bin/env python3
"""Benchmark: certify a fleet of loopback hosts over real SSH (tests/support/fleet).

Reports, for 1, 10, 25 and 50 hosts (each a fake KVM host confined to a root built from a
snapshot fixture, cycling through fixtures/hosts): wall time of one `vfio-certify -j auto`
run, its ratio to one host (goal: 50 hosts <= 5x one host on this 2-core machine), the CPU time
the certifying side spends (vfio-certify, its workers, the ssh clients: not the loopback hosts'
sshd and collection script, which on a real fleet run on the hosts), the CPU time those loopback hosts
spend, the floor (all of it spread over this machine's cores: no scheduling can finish sooner here), and SSH
handshakes and remote commands per host (goal: 1). Each size runs --runs times, sizes alternated (a busy machine slows
each alike); a row is the median run by wall time (one slow start of the one-host run would skew every ratio).

The loopback hosts' tar is GNU tar, as a distribution's host has it (--tar busybox: busybox's applet, with which the
collection script makes one ln per link).

Usage: .venv/bin/python bench/fleet.py [--sizes 1,10,25,50] [--runs 3] [--tar gnu|busybox] [--json bench/out/fleet.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
sys.path.insert(0, str(REPO / "tests"))

from support.fleet import FleetHost, LoopbackFleet  # noqa: E402


def fixtures() -> list[Path]:
    hosts = sorted(p for p in (REPO / "fixtures" / "hosts").iterdir() if (p / "meta.json").is_file())
    return [p for p in hosts if p.name != "hostile-input"]


def run(size: int, jobs: str, tar: str = "gnu") -> dict:
    snaps = fixtures()
    hosts = [FleetHost(f"kvm-{i:03d}", snaps[i % len(snaps)], tar=tar) for i in range(size)]
    with LoopbackFleet(hosts) as fleet, tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "vfio_certify.cli", "-j", jobs, "--ssh-config", str(fleet.ssh_config),
                "--output", out]
        for name in fleet.names:
            args += ["--host", f"ssh://{name}"]
        began, cpu_before = time.perf_counter(), children_cpu()
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - began
        cpu_after = children_cpu()
        client_cpu = cpu_after - cpu_before  # vfio-certify, its workers and ssh clients; not the sshds
        handshakes = [fleet.handshakes(n) for n in fleet.names]
        commands = [len(fleet.remote_commands(n)) for n in fleet.names]
        hosts_judged = len(json.loads((Path(out) / "summary.json").read_text())["hosts"])
    # The loopback hosts' side (each sshd with its sessions and collection scripts) is counted once the fleet's
    # sshds are reaped: it includes each sshd's own start, a few ms per host.
    hosts_cpu = children_cpu() - cpu_after
    return {"hosts": size, "seconds": round(seconds, 2), "client_cpu_seconds": round(client_cpu, 2),
            "hosts_cpu_seconds": round(hosts_cpu, 2),
            "floor_seconds": round((client_cpu + hosts_cpu) / CORES, 2),
            "exit": proc.returncode, "judged": hosts_judged,
            "handshakes_per_host": max(handshakes), "commands_per_host": max(commands)}


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,25,50")
    parser.add_argument("--jobs", default="auto")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tar", choices=["gnu", "busybox"], default="gnu",
                        help="the loopback hosts' tar: GNU tar, as a distribution's host has it (the script makes its "
                             "links with it), or busybox's (one ln per link)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "fleet.json")
    args = parser.parse_args()
    reason = LoopbackFleet.unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    sizes = [int(size) for size in args.sizes.split(",")]
    runs: dict[int, list[dict]] = {size: [] for size in sizes}
    for _ in range(max(args.runs, 1)):
        for size in sizes:
            runs[size].append(run(size, args.jobs, args.tar))
    rows = [sorted(runs[size], key=lambda r: r["seconds"])[(len(runs[size]) - 1) // 2] for size in sizes]
    for row in rows:
        row["runs_seconds"] = [r["seconds"] for r in runs[row["hosts"]]]
    base = rows[0]["seconds"]
    print(f"{'hosts':>5} {'wall s':>7} {'x one':>6} {'s/host':>7} {'client cpu s':>13} {'x one':>6} "
          f"{'hosts cpu s':>12} {'floor s':>8} {'x one':>6} {'handshakes/host':>16} {'commands/host':>14} judged")
    for row in rows:
        row["ratio_to_first"] = round(row["seconds"] / base, 2)
        row["client_cpu_ratio_to_first"] = round(row["client_cpu_seconds"] / rows[0]["client_cpu_seconds"], 2)
        row["floor_ratio_to_first"] = round(row["floor_seconds"] / base, 2)
        print(f"{row['hosts']:>5} {row['seconds']:>7.2f} {row['ratio_to_first']:>6.2f} "
              f"{row['seconds'] / row['hosts']:>7.2f} {row['client_cpu_seconds']:>13.2f} "
              f"{row['client_cpu_ratio_to_first']:>6.2f} {row['hosts_cpu_seconds']:>12.2f} {row['floor_seconds']:>8.2f} "
              f"{row['floor_ratio_to_first']:>6.2f} {row['handshakes_per_host']:>16} {row['commands_per_host']:>14} "
              f"{row['judged']}")
    print(f"goal: {rows[-1]['hosts']} hosts <= 5x one host; handshakes and commands per host = 1")
    print("the hosts' side (sshd, the collection script) shares this machine's cores here; on a real fleet it runs "
          "on the hosts: 'client cpu s' is what this machine spends (vfio-certify, its workers, the ssh clients), "
          "'hosts cpu s' what the loopback hosts spend")
    print(f"floor: all of a run's CPU seconds (client and hosts) spread over this machine's {CORES} cores without a "
          "moment lost, the least wall time any scheduling could reach here; 'x one' beside it: that least time "
          "against the one-host run's wall time")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"jobs": args.jobs, "runs": args.runs, "tar": args.tar, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
