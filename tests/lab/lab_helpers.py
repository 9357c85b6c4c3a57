"""Helpers shared by the lab tests (the fixture lives in conftest.py)."""
from __future__ import annotations

import os

import pytest

from vfio_certify.lab import tools
from vfio_certify.lab.guest import Lab


def _skip_unless_lab() -> None:
    if os.environ.get("VFIO_CERTIFY_SKIP_LAB") == "1":
        pytest.skip("VFIO_CERTIFY_SKIP_LAB=1")
    reason = tools.unavailable_reason()
    if reason:
        pytest.skip(reason)


def _pids_alive(pids) -> dict:
    alive = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            alive[pid] = stat.split("(", 1)[1].rsplit(")", 1)[0]
    return alive


def _lab_processes_snapshot(lab: Lab) -> dict:
    """{pid: comm} of the lab: everything in its mount namespace (nsholder,
    virtlogd, libvirtd, QEMU) plus the ssh ControlMaster."""
    procs = dict(lab.daemons.processes())
    ctl = lab.guest.control_path if lab.guest else None
    if ctl and os.path.exists(ctl):
        import subprocess

        out = subprocess.run(["ssh", "-F", str(lab.guest.ssh_config), "-O", "check",
                              lab.guest.HOST], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True).stdout
        if "pid=" in out:
            procs[int(out.split("pid=")[1].split(")")[0])] = "ssh"
    return procs
