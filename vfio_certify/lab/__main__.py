"""``python -m vfio_certify.lab``: boot the lab guest, run the emulated
hot-plug flows (e1000e NIC, USB disk), print the timed steps, tear down.

Exit status 0 if every flow passed, 1 if one failed, 77 if the lab cannot run
here (the reason names the missing package)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import tools


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vfio_certify.lab")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, console)")
    ap.add_argument("--ssh-timeout", type=float, default=120.0)
    args = ap.parse_args(argv)

    reason = tools.unavailable_reason()
    if reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 77

    from .guest import Lab
    from .hotplug import LabHotplugger

    results = []
    with Lab(ssh_timeout=args.ssh_timeout, keep_workdir=args.keep or None) as lab:
        hp = LabHotplugger(lab.guest)
        try:
            results.append(hp.nic())
            results.append(hp.usb_disk(lab.disk))
        finally:
            hp.close()
        timings = dict(lab.timings)
        workdir = str(lab.workdir)
    ok = all(r.ok for r in results) and not lab.teardown_errors \
        and not lab.leftover_processes
    if args.json:
        print(json.dumps({
            "ok": ok, "timings": timings, "workdir": workdir,
            "results": [dict(dataclasses.asdict(r), ok=r.ok) for r in results],
            "journal": [dataclasses.asdict(e) for e in lab.journal.entries],
            "teardown_errors": lab.teardown_errors,
            "leftover_processes": lab.leftover_processes,
        }, indent=2))
    else:
        print(f"boot->SSH {timings.get('boot_to_ssh_seconds', 0):.2f}s "
              f"(image {timings.get('image_seconds', 0):.2f}s, daemons "
              f"{timings.get('daemons_seconds', 0):.2f}s)")
        for r in results:
            print(r.summary())
        print("teardown:", "clean" if not (lab.teardown_errors or lab.leftover_processes)
              else f"errors={lab.teardown_errors} leftovers={lab.leftover_processes}")
        print("journal:\n" + lab.journal.text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
