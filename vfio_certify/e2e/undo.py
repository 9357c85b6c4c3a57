"""The in-memory undo stack of one run: every change the hot-plug engine (and the lab) makes is
recorded, and each change that must be reverted pushes an undo action. :meth:`UndoJournal.undo_all`
runs the pending undos newest-first and keeps going when one fails, so a teardown after a failed
step, a timeout or Ctrl-C reverts what is left. (What must survive a killed process is on disk, in
journal.ChangeJournal.)"""

from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Callable, List, Optional


@dataclasses.dataclass
class Entry:
    t: float                 # seconds since the journal started
    action: str
    detail: str = ""
    ok: Optional[bool] = None


@dataclasses.dataclass
class _Undo:
    key: str
    description: str
    fn: Callable[[], None]


class UndoJournal:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.entries: List[Entry] = []
        self._undo: List[_Undo] = []

    def record(self, action: str, detail: str = "", ok: Optional[bool] = None) -> Entry:
        e = Entry(round(time.monotonic() - self.t0, 3), action, detail, ok)
        self.entries.append(e)
        return e

    def push_undo(self, key: str, description: str, fn: Callable[[], None]) -> None:
        """Register fn to revert change `key` (replaces an older one with the
        same key)."""
        self.discard_undo(key)
        self._undo.append(_Undo(key, description, fn))
        self.record("undo-registered", f"{key}: {description}")

    def discard_undo(self, key: str) -> None:
        """The change `key` was reverted by the normal flow: forget its undo."""
        self._undo = [u for u in self._undo if u.key != key]

    @property
    def pending(self) -> List[str]:
        return [u.key for u in self._undo]

    def undo(self, key: str) -> List[str]:
        """Run only change `key`'s undo, leaving the others pending; returns the errors (as text)."""
        pending = [u for u in self._undo if u.key == key]
        self.discard_undo(key)
        errors = []
        for u in pending:
            try:
                u.fn()
                self.record("undo", f"{key}: {u.description}", ok=True)
            except Exception as exc:
                errors.append(repr(exc))
                self.record("undo", f"{key}: {exc!r}", ok=False)
        return errors

    def undo_all(self) -> List[str]:
        """Run pending undos newest-first; returns the errors (as text)."""
        errors = []
        while self._undo:
            u = self._undo.pop()
            try:
                u.fn()
                self.record("undo", f"{u.key}: {u.description}", ok=True)
            except BaseException as exc:  # keep undoing the rest
                msg = f"{u.key}: {u.description}: {exc!r}"
                errors.append(msg)
                self.record("undo", msg + "\n" + traceback.format_exc(limit=3),
                            ok=False)
                if isinstance(exc, KeyboardInterrupt):
                    continue
        return errors

    def text(self) -> str:
        return "\n".join(
            f"{e.t:8.3f}s {e.action:<18} {'' if e.ok is None else ('ok ' if e.ok else 'FAIL ')}{e.detail}"
            for e in self.entries)
