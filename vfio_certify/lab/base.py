"""What both labs (guest.Lab and nested.NestedLab) share: a work dir, L0's private daemons, and a
teardown that runs every undo journal in order, also after a failure or Ctrl-C.

The work dir is removed after a clean run and kept after a failed one (or with
VFIO_CERTIFY_LAB_KEEP=1), with journal.txt: every step and undo, timed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..e2e.undo import UndoJournal
from .daemons import LabDaemons
from .initramfs import default_cache_root


class LabError(RuntimeError):
    pass


def close_quietly(conn) -> None:
    """Close a libvirt connection that may already be gone."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


class LabBase:
    """A context manager; :meth:`close` is always safe to call."""

    WORKDIR_PREFIX = "vfio-certify-lab-"

    def __init__(self, cache_root: Optional[os.PathLike] = None, workdir: Optional[os.PathLike] = None,
                 keep_workdir: Optional[bool] = None):
        self.cache_root = Path(cache_root) if cache_root else default_cache_root()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=self.WORKDIR_PREFIX))
        self.keep_workdir = (os.environ.get("VFIO_CERTIFY_LAB_KEEP") == "1"
                             if keep_workdir is None else keep_workdir)
        self.journal = UndoJournal()      # L0: the private daemons
        self.daemons: Optional[LabDaemons] = None
        self.timings: Dict[str, float] = {}
        self.teardown_errors: List[str] = []
        self.leftover_processes: Dict[int, str] = {}
        self.failed = False

    def journals(self) -> List[UndoJournal]:
        """Every undo journal of the lab, in teardown order: the innermost guest's first, L0's last."""
        return [self.journal]

    def _start(self) -> None:
        raise NotImplementedError

    def start(self):
        """Bring the lab up; when that fails, tear down what is up and raise."""
        try:
            self._start()
        except BaseException:
            self.failed = True
            self.close()
            raise
        return self

    def _start_daemons(self, timing: str) -> LabDaemons:
        t = time.monotonic()
        self.daemons = LabDaemons(self.workdir / "libvirt", cache_dir=self.cache_root / "libvirt-cache")
        self.journal.push_undo("daemons", "stop L0's virtlogd/libvirtd", self._stop_daemons)
        self.daemons.start()
        self.timings[timing] = time.monotonic() - t
        self.journal.record("daemons", f"{self.daemons.pids} {self.daemons.uri}")
        return self.daemons

    def _stop_daemons(self) -> None:
        if self.daemons is not None:
            self.leftover_processes = self.daemons.stop()
            if self.leftover_processes:
                raise LabError(f"lab processes survived: {self.leftover_processes}")

    def _undo_all(self) -> None:
        for journal in self.journals():
            self.teardown_errors += journal.undo_all()

    def close(self) -> None:
        """Undo everything that is left, innermost first; every undo runs even if an earlier one fails."""
        self._undo_all()
        if self.workdir.exists():
            (self.workdir / "journal.txt").write_text(
                "\n".join(j.text() for j in reversed(self.journals())) + "\n")
        if self._own_workdir and not self.keep_workdir and not self.failed and not self.teardown_errors:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.failed = True
        self.close()
