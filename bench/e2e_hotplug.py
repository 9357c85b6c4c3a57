#!/usr/bin/env python3
"""Benchmark: the end-to-end hot-plug of a PCI NIC and a USB disk, in the nested lab.

For each device (L1's e1000e as <hostdev> PCI, its USB disk as <hostdev> USB, into L2) and each
round, two ways, alternating:

- raw: the libvirt call and the least guest detection that proves the device (one SSH command
  polling sysfs every 50 ms): attachDeviceFlags -> visible in L2, detachDeviceFlags -> removed
  from the live XML -> gone in L2;
- suite: vfio-certify's flow (vfio_certify/e2e/flow.run_device, what `--e2e` runs), timed as a
  whole and by step.

Reports per device the medians of attach->visible and detach->gone (raw and suite), and the
suite's overhead over raw on the same work (attach->visible + detach->gone; goal <= 10 %), and on
its whole flow (adding what raw does not do: preflight, journal, proving the device absent
before, the read-only checksum, re-collecting the host to prove the driver restored).

Usage: .venv/bin/python bench/e2e_hotplug.py [--rounds 3] [--json bench/out/e2e_hotplug.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vfio_certify.collect import Target, collect_snapshot  # noqa: E402
from vfio_certify.devices import parse_devices  # noqa: E402
from vfio_certify.e2e.flow import E2EOptions, run_device  # noqa: E402
from vfio_certify.e2e.guest import DomainGuest  # noqa: E402
from vfio_certify.e2e.hostdev import hostdev_xml, alias_for  # noqa: E402
from vfio_certify.e2e.journal import ChangeJournal  # noqa: E402
from vfio_certify.facts import read_host_facts  # noqa: E402
from vfio_certify.lab.nested import NestedLab  # noqa: E402

# The least proof, in the guest: the function with its driver and a netdev; a USB block device.
PRESENT = {
    "nic": 'for d in /sys/bus/pci/devices/*; do read -r v < $d/vendor; read -r p < $d/device; '
           '[ "$v:$p" = 0x8086:0x10d3 ] && [ -d $d/driver ] && [ -d $d/net ] && exit 0; done; exit 1',
    "usb": 'for b in /sys/block/sd*; do [ -e $b ] && readlink -f $b/device | grep -q /usb && exit 0; done; exit 1',
}
POLL = "i=0; until ( {cond} ); do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done"


def raw_cycle(guest: DomainGuest, xml: str, alias: str, present: str) -> dict:
    import libvirt

    dom = guest.dom
    began = time.monotonic()
    dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    guest.run(POLL.format(cond=present), timeout=90)
    visible = time.monotonic()
    dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    while alias in dom.XMLDesc(0):
        if time.monotonic() - visible > 60:
            raise RuntimeError(f"{alias} still in the live XML 60 s after the detach")
        time.sleep(0.05)
    guest.run(POLL.format(cond=f"! ( {present} )"), timeout=90)
    gone = time.monotonic()
    return {"attach_visible": visible - began, "detach_gone": gone - visible}


def suite_cycle(guest: DomainGuest, lab: NestedLab, target: Target, key: str, journal: Path) -> dict:
    def recollect():
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
            return read_host_facts(collect_snapshot(target, Path(tmp) / "s"))

    facts = recollect()  # the static run's facts, collected before the flow (not timed: the CLI has them)
    specs = parse_devices([lab.nic_address, lab.usb_vendor_product])
    spec = next(s for s in specs if s.key == key)
    options = E2EOptions(known_file=lab.disk_known_file, known_sha256=lab.disk_sha256)
    began = time.monotonic()
    result = run_device(guest, facts, spec, specs, ChangeJournal(journal), lab.libvirt_uri, recollect, options)
    total = time.monotonic() - began
    if result.outcome.value != "passed":
        raise RuntimeError(f"{result.check_id}: {result.message}\n" + "\n".join(result.evidence))
    steps = {}
    for line in result.evidence:
        parts = line.split()
        if len(parts) >= 2 and parts[1].endswith("s") and parts[0] in (
                "attach->visible", "detach->gone-in-guest"):
            steps[parts[0]] = float(parts[1][:-1])
    # both measured as raw measures them: from the libvirt call to seen (gone) in the guest
    return {"attach_visible": steps["attach->visible"], "detach_gone": steps["detach->gone-in-guest"], "total": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    began = time.monotonic()
    with NestedLab() as lab, tempfile.TemporaryDirectory() as tmp:
        up = time.monotonic() - began
        guest = DomainGuest(lab.l1_conn, lab.l1_conn.lookupByName(lab.domain), lab.l2_ssh_url, str(lab.ssh_config))
        target = Target(spec=lab.l1_ssh_url, ssh_config=str(lab.ssh_config))
        devices = {"nic": lab.nic_address, "usb": lab.usb_vendor_product}
        results: dict = {kind: {"raw": [], "suite": []} for kind in devices}
        for round_ in range(args.rounds):
            for kind, key in devices.items():
                spec = parse_devices([key])[0]
                xml, alias = hostdev_xml(spec), alias_for(spec)
                results[kind]["raw"].append(raw_cycle(guest, xml, alias, PRESENT[kind]))
                results[kind]["suite"].append(suite_cycle(guest, lab, target, spec.key, Path(tmp) / "journal.jsonl"))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    report = {"lab_up_seconds": round(up, 1), "rounds": args.rounds, "devices": {}}
    print(f"nested lab up in {up:.1f} s; medians of {args.rounds} rounds")
    print(f"{'device':6} {'attach->visible raw/suite':>27} {'detach->gone raw/suite':>25} {'overhead':>9} "
          f"{'whole flow':>11} {'flow/raw':>9}")
    for kind, runs in results.items():
        med = {way: {k: statistics.median(r[k] for r in runs[way]) for k in runs[way][0]} for way in runs}
        raw_work = med["raw"]["attach_visible"] + med["raw"]["detach_gone"]
        suite_work = med["suite"]["attach_visible"] + med["suite"]["detach_gone"]
        overhead = (suite_work - raw_work) / raw_work
        flow_ratio = med["suite"]["total"] / raw_work
        report["devices"][kind] = {"medians": med, "overhead_same_work": round(overhead, 3),
                                   "whole_flow_over_raw": round(flow_ratio, 2), "runs": runs}
        print(f"{kind:6} {med['raw']['attach_visible']:12.2f} / {med['suite']['attach_visible']:5.2f} s "
              f"{med['raw']['detach_gone']:12.2f} / {med['suite']['detach_gone']:5.2f} s {overhead:8.0%} "
              f"{med['suite']['total']:9.2f} s {flow_ratio:8.1f}x")
    print("goal: overhead <= 10 % on the same work (attach->visible + detach->gone)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
