"""Read a snapshot directory without trusting it.

Every accessor takes a host path ("/proc/cmdline" or "proc/cmdline") and answers from
SNAPSHOT/root/. Rules from the spec, enforced here so parsers never have to think
about them:

- text is decoded forgivingly (invalid UTF-8 replaced, CRLF folded to LF);
- a symlink is never followed: only its target's last component is read;
- nothing outside the snapshot is ever opened, whatever the paths or links say;
- what is missing was *not collected* (the spec: every part is optional), unless
  meta.json declares `"absence": "parent-folder"`: "this collector made the parent
  folder of every path it probed, so a missing path whose parent folder is present is
  absent on the host". Our collection script writes that field (collect/script.py);
  hand-made snapshots and other tools' get it only if they say so (see `state`);
- meta.json is read forgivingly too: a UTF-8 BOM is stripped, and one that cannot be
  parsed (cut short, empty, not an object) does not stop the host being judged: the
  snapshot is read as host-snapshot/1 without the absence convention, and
  `meta_problem` says why in one line. A parsed meta.json naming a newer major format
  (host-snapshot/2) or another format is refused (SnapshotError).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional, Union

from .tree import DiskTree, MemoryTree

FORMAT = "host-snapshot/1"
# meta.json "absence": the collector made the parent folder of every path it probed, so a
# missing path whose parent folder is present is absent on the host.
ABSENCE_PARENT_FOLDER = "parent-folder"
_FORMAT_RE = re.compile(r"^host-snapshot/(\d+)$")
# Names the snapshot machinery itself uses (e.g. a marker keeping an empty folder in git).
_INTERNAL_PREFIX = ".snapshot"
_UNREADABLE = "unreadable: "  # the collection script's note for a file it found but could not read
_ROOT, _COMMANDS = "root", "commands"  # the host's files, the commands' outputs (in the snapshot folder)


class SnapshotError(Exception):
    """The snapshot cannot be read at all (not a folder, a newer or unknown format)."""


class PathState(str, Enum):
    PRESENT = "present"
    ABSENT = "absent"  # declared absence convention: the parent folder was collected, the path was not there
    NOT_COLLECTED = "not-collected"


@dataclass(frozen=True)
class CommandOutput:
    name: str
    stdout: str
    rc: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def decode(data: bytes) -> str:
    """Host text as a str: invalid UTF-8 replaced, NULs dropped, CRLF/CR folded to LF."""
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Snapshot:
    """A snapshot folder (Snapshot(path)), or one held in memory (Snapshot.in_memory: a live host's collection)."""

    def __init__(self, path: os.PathLike | str, tree: Union[DiskTree, MemoryTree, None] = None):
        self.path = Path(path)
        if tree is None:
            if not self.path.is_dir():
                raise SnapshotError(f"{self.path}: not a snapshot folder")
            tree = DiskTree(self.path)
        self._tree = tree
        self._real_folders: set[str] = set()  # folders found real, no symlink on the way
        # One line when meta.json was there but could not be used (the host is judged anyway).
        self.meta_problem: Optional[str] = None
        self.meta = self._read_meta()
        absence = self.meta.get("absence")
        self.absence_by_parent_folder = absence == ABSENCE_PARENT_FOLDER
        if absence is not None and not self.absence_by_parent_folder:
            self.meta_problem = (f"meta.json: unknown absence convention {str(absence)[:40]!r}; "
                                 "missing paths are judged not collected")
        self.notes = self._read_notes()
        # A file the collector found but could not read is not collected, never absent.
        self._unreadable = {n[len(_UNREADABLE):].strip().rstrip("/") for n in self.notes if n.startswith(_UNREADABLE)}

    @classmethod
    def in_memory(cls, tree: MemoryTree, shown_as: str) -> "Snapshot":
        """A snapshot never written to disk, named `shown_as` (its path is only a name)."""
        return cls(shown_as, tree)

    def _read_notes(self) -> list[str]:
        """The collector's notes: meta.json's collector_notes (vfio-certify collect), else the script's own
        notes file (a bundle made by `sh collect.sh FILE`). At most 2250 lines (2000 'unreadable:' and 250 more)."""
        notes = self.meta.get("collector_notes")
        if isinstance(notes, list):
            return [str(n) for n in notes][:2250]
        if self._tree.kind("notes") == "file":
            return decode(self._tree.read("notes", 1 << 20) or b"").splitlines()[:2250]
        return [str(notes)] if notes is not None else []

    # -- meta ---------------------------------------------------------------
    def _unusable_meta(self, why: str) -> dict:
        self.meta_problem = f"meta.json {why}: judged as {FORMAT}, missing paths as not collected"
        return {}

    def _read_meta(self) -> dict:
        meta_path = self.path / "meta.json"
        if self._tree.kind("meta.json") != "file":
            return {}
        data = self._tree.read("meta.json")
        if data is None:
            return self._unusable_meta("unreadable")
        text = decode(data).lstrip("\ufeff")  # a BOM some editors add
        if not text.strip():
            return self._unusable_meta("is empty")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            return self._unusable_meta(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
        except (ValueError, RecursionError):
            return self._unusable_meta("is not valid JSON")
        if not isinstance(meta, dict):
            return self._unusable_meta("is not a JSON object")
        fmt = str(meta.get("format", FORMAT))
        match = _FORMAT_RE.match(fmt)
        if not match:
            raise SnapshotError(f"{meta_path}: unknown format {fmt!r}, expected {FORMAT!r}")
        if int(match.group(1)) > 1:
            raise SnapshotError(
                f"{meta_path}: format {fmt} is newer than this vfio-certify reads ({FORMAT}); upgrade vfio-certify"
            )
        return meta

    @property
    def hostname(self) -> str:
        name = str(self.meta.get("hostname") or "")
        if not name:
            out = self.command("uname -n")
            name = out.stdout.strip() if out else ""
        return name

    @property
    def kernel_release(self) -> str:
        release = str(self.meta.get("kernel_release") or "")
        if not release:
            out = self.command("uname -r")
            release = out.stdout.strip() if out else ""
        return release

    # -- paths ---------------------------------------------------------------
    def _inside(self, base: str, rel: str) -> Optional[str]:
        """base/rel (relative to the snapshot folder) if it stays inside base without crossing a symlinked
        folder."""
        parts = [p for p in rel.strip("/").split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        folder = "/".join((base, *parts[:-1]))
        if folder not in self._real_folders:  # a snapshot is read once: each folder on the way is checked once
            current = base
            if self._tree.kind(current) == "link":
                return None
            for part in parts[:-1]:
                current = f"{current}/{part}"
                if self._tree.kind(current) != "dir":
                    return None
            self._real_folders.add(folder)
        return "/".join((base, *parts))

    def _local(self, host_path: str) -> Optional[str]:
        return self._inside(_ROOT, host_path)

    def state(self, host_path: str) -> PathState:
        """PRESENT, or for a missing path: ABSENT when meta.json declares the parent-folder
        convention and the parent folder was collected, NOT_COLLECTED otherwise."""
        local = self._local(host_path)
        if local is not None and self._tree.kind(local) is not None:  # a link, dangling or not, is there
            return PathState.PRESENT
        if not self.absence_by_parent_folder or "/" + host_path.strip("/") in self._unreadable:
            return PathState.NOT_COLLECTED
        parent = self._local(os.path.dirname(host_path.rstrip("/")) or "/")
        if parent is not None and parent != _ROOT and self._tree.kind(parent) == "dir":
            return PathState.ABSENT
        return PathState.NOT_COLLECTED

    def exists(self, host_path: str) -> bool:
        return self.state(host_path) is PathState.PRESENT

    def read_bytes(self, host_path: str) -> Optional[bytes]:
        local = self._local(host_path)
        if local is None or self._tree.kind(local) != "file":
            return None
        return self._tree.read(local)

    def read_text(self, host_path: str) -> Optional[str]:
        data = self.read_bytes(host_path)
        return None if data is None else decode(data)

    def read_value(self, host_path: str) -> Optional[str]:
        """A one-value sysfs file, stripped ("0x8086")."""
        text = self.read_text(host_path)
        return None if text is None else text.strip()

    def listdir(self, host_path: str) -> Optional[list[str]]:
        """Entry names of a collected folder (sorted), None when not collected."""
        local = self._local(host_path)
        if local is None or self._tree.kind(local) != "dir":
            return None
        names = self._tree.names(local)
        return None if names is None else sorted(n for n in names if not n.startswith(_INTERNAL_PREFIX))

    def link_name(self, host_path: str) -> Optional[str]:
        """Last component of a symlink's target (never followed); None if not a link."""
        local = self._local(host_path)
        if local is None or self._tree.kind(local) != "link":
            return None
        target = self._tree.target(local)
        if target is None:
            return None
        name = target.rstrip("/").rsplit("/", 1)[-1]
        return name or None

    def is_dir(self, host_path: str) -> bool:
        local = self._local(host_path)
        return local is not None and self._tree.kind(local) == "dir"

    # -- commands -----------------------------------------------------------
    @staticmethod
    def command_file_name(command: str) -> str:
        return command.strip().replace(" ", "_")

    def command(self, command: str) -> Optional[CommandOutput]:
        """A command's captured output, None when it was not collected."""
        name = self.command_file_name(command)
        if "/" in name or name.startswith("."):
            return None
        out_path = f"{_COMMANDS}/{name}"
        if self._tree.kind(_COMMANDS) != "dir" or self._tree.kind(out_path) != "file":
            return None
        stdout = self._tree.read(out_path)
        if stdout is None:
            return None
        rc_text = self._small_text(f"{_COMMANDS}/{name}.rc")
        try:
            rc = int(rc_text.strip()) if rc_text and rc_text.strip() else 0
        except ValueError:
            rc = -1
        return CommandOutput(
            name=command,
            stdout=decode(stdout),
            rc=rc,
            stderr=self._small_text(f"{_COMMANDS}/{name}.err") or "",
        )

    def _small_text(self, rel: str) -> Optional[str]:
        if self._tree.kind(rel) != "file":
            return None
        data = self._tree.read(rel, 65536)
        return None if data is None else decode(data)

    def describe(self) -> str:
        return f"snapshot {self.path}"

