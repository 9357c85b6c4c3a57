#!/usr/bin/env python3
"""The summary.json of every fixture host, kept as a golden record of behaviour.

    .venv/bin/python scripts/fixture_summaries.py          # compare with tests/golden/ (exit 1 on a difference)
    .venv/bin/python scripts/fixture_summaries.py --write  # record the current behaviour

A commit that only changes structure leaves these files as they are (tests/test_fixture_summaries.py
checks it); a commit that changes a verdict, a message or a fix rewrites them with --write, so the
change in behaviour is in the diff for a reviewer to read. Timings are left out.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / "fixtures" / "hosts"
GOLDEN = ROOT / "tests" / "golden" / "fixture-summaries"

# Each fixture host with the devices its README names (passing and failing ones).
DEVICES = {
    "amd-epyc-default-on": ["0000:41:00.0", "0000:41:00.1", "0000:01:00.0"],
    "amd-g505s-no-ivrs": ["0000:02:00.0", "0000:01:00.0"],
    "ampere-altra-smmuv3": ["0005:01:00.1", "0005:02:00.0", "0005:01:00.0"],
    "builtin-vfio": ["0000:18:00.0", "0000:18:00.1", "0000:3d:00.0"],
    "cezanne-nonviable-group": ["0000:04:00.0", "0000:01:00.0"],
    "hostile-input": ["0000:01:00.0", "1337:0001", "001.002"],
    "kunpeng920-smmu-off": ["0000:14:00.0", "0000:7d:00.1"],
    "rk3588-devicetree-no-pcie-iommu": ["0004:41:00.0"],
    "missing-config": ["0000:03:00.0"],
    "proxmox-dmar-kernel-6.8": ["0000:02:00.0", "0000:00:02.0", "0000:01:00.0"],
    "rocky9-after-intel-iommu": ["0000:07:00.1", "0000:07:00.0", "004.002", "0000:00:19.0"],
    "rocky9-before-intel-iommu": ["0000:07:00.1", "004.002"],
    "strix-halo-simpledrm-boot-gpu": ["0000:c3:00.0", "0000:c1:00.0"],
    "ryzen-vfio-bound-gpu": ["0000:2d:00.0", "0000:2d:00.1", "0000:24:00.0"],
}
_SECONDS = re.compile(r"\b\d+\.\d+ s\b")


def normalized(summary: dict) -> dict:
    """Without what changes from run to run: timings, the run's start."""
    for key in ("started_at", "duration_s"):
        summary.pop(key, None)
    for host in summary.get("hosts", []):
        for check in host.get("checks", []):
            check.pop("duration_s", None)
            check["message"] = _SECONDS.sub("N s", check.get("message", ""))
    return summary


def current(host: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fixture-summary-") as tmp:
        argv = [sys.executable, "-m", "vfio_certify.cli", "--snapshot", f"fixtures/hosts/{host}",
                "--output", f"{tmp}/out"] + [f"--device={d}" for d in DEVICES[host]]
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return normalized(json.loads(Path(f"{tmp}/out/summary.json").read_text(encoding="utf-8")))


def text(summary: dict) -> str:
    return json.dumps(summary, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the current behaviour as the golden")
    args = parser.parse_args()
    missing = sorted(set(p.name for p in HOSTS.iterdir() if (p / "meta.json").exists()) - set(DEVICES))
    if missing:
        print(f"fixture hosts without a device list here: {', '.join(missing)}", file=sys.stderr)
        return 1
    differ = 0
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for host in sorted(DEVICES):
        now, path = text(current(host)), GOLDEN / f"{host}.json"
        if args.write:
            path.write_text(now, encoding="utf-8")
            continue
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        if now != before:
            differ += 1
            sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), now.splitlines(True),
                                                       f"golden/{host}.json", f"now/{host}.json", n=2))
    if not args.write:
        print(f"{len(DEVICES) - differ} of {len(DEVICES)} fixture hosts match the golden summaries")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
