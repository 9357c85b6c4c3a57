"""Shared by the lab tests: one booted lab guest for the whole session."""
from __future__ import annotations

import pytest

from lab_helpers import _lab_processes_snapshot, _pids_alive, _skip_unless_lab
from vfio_certify.lab.guest import Lab


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
