"""A minimal newc ("070701") cpio writer for the lab's initramfs: pure Python (no cpio binary),
every entry owned by 0:0 whoever builds it."""

from __future__ import annotations

import stat
from typing import Sequence, Tuple


class CpioError(RuntimeError):
    pass



class CpioWriter:
    """Minimal newc ("070701") writer; every entry owned by 0:0."""

    def __init__(self, fh):
        self._fh = fh
        self._ino = 1000
        self._names = set()

    def _header(self, name: str, mode: int, size: int, nlink: int = 1,
                mtime: int = 0) -> None:
        encoded = name.encode() + b"\0"
        self._ino += 1
        fields = [self._ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0,
                  len(encoded), 0]
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._fh.write(hdr + encoded)
        self._pad(len(hdr) + len(encoded))

    def _pad(self, n: int) -> None:
        rem = (-n) % 4
        if rem:
            self._fh.write(b"\0" * rem)

    def _check(self, name: str) -> str:
        name = name.lstrip("/")
        if not name or name in self._names:
            raise CpioError(f"cpio: duplicate or empty entry {name!r}")
        self._names.add(name)
        return name

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._header(self._check(name), stat.S_IFDIR | mode, 0, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(self._check(name), stat.S_IFREG | mode, len(data))
        self._fh.write(data)
        self._pad(len(data))

    def symlink(self, name: str, target: str) -> None:
        data = target.encode()
        self._header(self._check(name), stat.S_IFLNK | 0o777, len(data))
        self._fh.write(data)
        self._pad(len(data))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        encoded = self._check(name).encode() + b"\0"
        self._ino += 1
        fields = [self._ino, stat.S_IFCHR | mode, 0, 0, 1, 0, 0, 0, 0,
                  major, minor, len(encoded), 0]
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._fh.write(hdr + encoded)
        self._pad(len(hdr) + len(encoded))

    def trailer(self) -> None:
        self._header("TRAILER!!!", 0, 0, nlink=1)


def write_cpio(entries: Sequence[Tuple], fh) -> None:
    """Write entries ("dir", name, mode) / ("file", name, data, mode) /
    ("symlink", name, target) / ("chardev", name, major, minor, mode)."""
    w = CpioWriter(fh)
    for entry in entries:
        kind, rest = entry[0], entry[1:]
        getattr(w, kind)(*rest)
    w.trailer()
