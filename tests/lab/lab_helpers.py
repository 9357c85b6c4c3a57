"""Helpers shared by the lab tests (the fixture lives in conftest.py)."""
from __future__ import annotations

import os
import subprocess
from typing import Optional

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


def _ssh_master_pid(ssh_config, host: str) -> Optional[int]:
    out = subprocess.run(["ssh", "-F", str(ssh_config), "-O", "check", host], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True).stdout
    return int(out.split("pid=")[1].split(")")[0]) if "pid=" in out else None


def _lab_processes_snapshot(lab: Lab) -> dict:
    """{pid: comm} of the lab: everything in its mount namespace (nsholder,
    virtlogd, libvirtd, QEMU) plus the ssh ControlMaster."""
    procs = dict(lab.daemons.processes())
    if lab.guest and os.path.exists(lab.guest.control_path):
        pid = _ssh_master_pid(lab.guest.ssh_config, lab.guest.HOST)
        if pid:
            procs[pid] = "ssh"
    return procs


def _nested_processes_snapshot(lab) -> dict:
    """{pid: comm} of the nested lab on L0: its mount namespace (holder, virtlogd,
    libvirtd, L1's QEMU) and the ssh ControlMasters to L1 and L2."""
    procs = dict(lab.daemons.processes())
    for guest in (lab.l1, lab.l2):
        if guest is not None and os.path.exists(guest.control_path):
            pid = _ssh_master_pid(lab.ssh_config, guest.HOST)
            if pid:
                procs[pid] = f"ssh ({guest.HOST})"
    return procs
