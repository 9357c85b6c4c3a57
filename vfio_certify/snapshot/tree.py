"""Where a snapshot's files are: a folder on disk, or in memory (a live host's collection, never written out).

Both answer as lstat would, never following a link: a path's kind ("dir", "file", "link", "other" or None when
there is nothing), a file's bytes, a folder's names, a link's target. Paths are relative to the snapshot folder,
"/"-separated and normalised ("root/proc/cmdline"; "" is the snapshot folder itself). Whether a path runs through a
link on the way is the reader's to check (reader.py `_inside`): these answer for the path as given.
"""
from __future__ import annotations

import os
import shutil
import stat
from typing import Optional


class DiskTree:
    """A snapshot folder on disk."""

    def __init__(self, folder: os.PathLike | str) -> None:
        self.folder = os.fspath(folder)

    def _path(self, rel: str) -> str:
        return os.path.join(self.folder, rel) if rel else self.folder

    def kind(self, rel: str) -> Optional[str]:
        try:
            mode = os.lstat(self._path(rel)).st_mode
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(mode):
            return "link"
        return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"

    def read(self, rel: str, limit: int = -1) -> Optional[bytes]:
        try:
            with open(self._path(rel), "rb") as f:
                return f.read(limit)
        except (OSError, ValueError):
            return None

    def names(self, rel: str) -> Optional[list[str]]:
        try:
            return os.listdir(self._path(rel))
        except (OSError, ValueError):
            return None

    def target(self, rel: str) -> Optional[str]:
        try:
            return os.readlink(self._path(rel))
        except (OSError, ValueError):
            return None

    def add_file(self, rel: str, data: bytes) -> None:
        """The file written, never through a link (remove() a link first)."""
        fd = os.open(self._path(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)

    def remove(self, rel: str) -> None:
        """A file, a link, or a folder and everything in it."""
        path = self._path(rel)
        if self.kind(rel) == "dir":
            shutil.rmtree(path)
        elif self.kind(rel) is not None:
            os.unlink(path)


class MemoryTree:
    """A snapshot held in memory: each path's kind and content (bytes for a file, the target for a link)."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {"": "dir"}
        self._content: dict[str, bytes | str] = {}
        self._children: dict[str, dict[str, None]] = {"": {}}

    def add_folder(self, rel: str) -> None:
        """The folder and those above it (a bundle may leave a folder's own entry out)."""
        kind = self._kinds.get(rel)
        if kind == "dir":
            return
        if kind is not None:
            raise FileExistsError(rel)  # a file or link never becomes a folder
        parent, _, name = rel.rpartition("/")
        self.add_folder(parent)
        self._kinds[rel] = "dir"
        self._children[rel] = {}
        self._children[parent][name] = None

    def add_file(self, rel: str, data: bytes) -> None:
        self._add(rel, "file", data)

    def add_link(self, rel: str, target: str) -> None:
        self._add(rel, "link", target)

    def remove(self, rel: str) -> None:
        """A file, a link, or a folder and everything in it."""
        kind = self._kinds.get(rel)
        if kind is None or not rel:
            return
        if kind == "dir":
            for child in list(self._children[rel]):
                self.remove(f"{rel}/{child}")
            del self._children[rel]
        del self._kinds[rel]
        self._content.pop(rel, None)
        parent, _, name = rel.rpartition("/")
        del self._children[parent][name]

    def _add(self, rel: str, kind: str, content: bytes | str) -> None:
        if self._kinds.get(rel) == "dir":
            raise FileExistsError(rel)  # a folder never becomes a file or link
        parent, _, name = rel.rpartition("/")
        self.add_folder(parent)
        self._kinds[rel] = kind  # the same name given twice: the last one stays (as tar does)
        self._content[rel] = content
        self._children[parent][name] = None

    def kind(self, rel: str) -> Optional[str]:
        return self._kinds.get(rel)

    def read(self, rel: str, limit: int = -1) -> Optional[bytes]:
        data = self._content.get(rel) if self._kinds.get(rel) == "file" else None
        return data if data is None or limit < 0 else data[:limit]  # type: ignore[index,return-value]

    def names(self, rel: str) -> Optional[list[str]]:
        children = self._children.get(rel)
        return None if children is None else list(children)

    def target(self, rel: str) -> Optional[str]:
        return self._content.get(rel) if self._kinds.get(rel) == "link" else None  # type: ignore[return-value]
