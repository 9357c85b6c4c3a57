"""The on-disk change journal: what an end-to-end run changed on a host, until it is undone.

Each change is written (and fsynced) before it is made, and closed once undone. A run that
was killed leaves open changes behind; the next run reads them and undoes them first.
JSON lines, append only, so a half-written last line loses nothing before it. One run at a time:
an e2e session holds an exclusive flock on <journal>.lock (holding its pid) from start to end.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Optional


def default_path() -> Path:
    if os.environ.get("VFIO_CERTIFY_JOURNAL"):
        return Path(os.environ["VFIO_CERTIFY_JOURNAL"])
    if os.geteuid() == 0:
        return Path("/var/lib/vfio-certify/journal.jsonl")
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "vfio-certify" / "journal.jsonl"


class JournalLocked(Exception):
    """Another run holds the journal; str() is one line naming the journal and that run's pid."""


class ChangeJournal:
    def __init__(self, path: Optional[os.PathLike] = None):
        self.path = Path(path) if path else default_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: Optional[int] = None

    def lock(self) -> None:
        """Take the journal for this run (released by unlock() or when the process ends), or raise JournalLocked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalLocked(f"journal {self.path} is in use by another vfio-certify run (pid {holder}, "
                                f"lock {self.lock_path}): wait for it to end") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the file stays: removing it would race a run taking it just now
            self._lock_fd = None

    def _append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut by a crash: start a fresh one, or this record is lost too
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def open_change(self, **record) -> str:
        """Record a change about to be made; returns its id."""
        change_id = uuid.uuid4().hex
        self._append({"id": change_id, "event": "open", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record})
        return change_id

    def close_change(self, change_id: str, how: str) -> None:
        self._append({"id": change_id, "event": "closed", "how": how,
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def leftovers(self) -> list[dict]:
        """Changes opened and never closed, oldest first."""
        if not self.path.is_file():
            return []
        opened: dict[str, dict] = {}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if not isinstance(record, dict) or "id" not in record:
                continue
            if record.get("event") == "open":
                opened[record["id"]] = record
            elif record.get("event") == "closed":
                opened.pop(record["id"], None)
        return list(opened.values())
