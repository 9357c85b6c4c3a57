"""Shared by the lab tests: one booted lab guest, and one nested lab, for the whole session."""
from __future__ import annotations

import pytest

import time

from lab_helpers import _lab_processes_snapshot, _nested_processes_snapshot, _pids_alive, _skip_unless_lab
from vfio_certify.lab.guest import Lab
from vfio_certify.lab.nested import NestedLab


@pytest.fixture(scope="session")
def lab():
    """One booted lab guest for the whole session (torn down at the end,
    asserting that nothing of it survives)."""
    _skip_unless_lab()
    lab = Lab()
    lab.start()
    procs = _lab_processes_snapshot(lab)
    print(f"\n[lab] image {'cached' if lab.image.cached else 'built'} in "
          f"{lab.timings['image_seconds']:.2f}s, daemons up in "
          f"{lab.timings['daemons_seconds']:.2f}s, boot->SSH "
          f"{lab.timings['boot_to_ssh_seconds']:.2f}s; processes {procs}")
    try:
        yield lab
    finally:
        lab.close()
        left = _pids_alive(procs)
        assert not left, f"lab processes survived teardown: {left}\n{lab.journal.text()}"
        assert not lab.teardown_errors, lab.teardown_errors


@pytest.fixture(scope="session")
def nested_lab():
    """The nested lab (L1: a VT-d host with its own libvirtd; L2: its running guest),
    booted once for the session and torn down at the end, asserting nothing survives."""
    _skip_unless_lab()
    lab = NestedLab()
    began = time.monotonic()
    lab.start()
    procs = _nested_processes_snapshot(lab)
    print(f"\n[nested] up in {time.monotonic() - began:.1f}s: "
          + ", ".join(f"{k}={v:.2f}" for k, v in lab.timings.items())
          + f"; L2 type {lab.l2_virt_type}; L0 processes {procs}")
    try:
        yield lab
    finally:
        lab.close()
        left = _pids_alive(procs)
        assert not left, f"nested lab processes survived teardown: {left}"
        assert not lab.teardown_errors, lab.teardown_errors
        assert not lab.leftover_processes, lab.leftover_processes


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes (the lab under CPU load); CI runs it once, like every test")
