"""Snapshot bundles: a snapshot folder travelling as SNAPSHOT.tar.gz.

A bundle comes from outside (a customer's host), so unpacking checks every member
before anything is written: absolute paths, `..` components, links that leave the
bundle, a member whose path runs through a link of the bundle (links chained to climb
out, or a file written through a link), hard links, devices and FIFOs refuse the whole
bundle. So do a file bigger than MAX_MEMBER_BYTES and a bundle that unpacks to more than
MAX_TOTAL_BYTES (a gzip bomb), as the tar headers declare them, which is what is written,
and so do more than MAX_MEMBERS entries, a path deeper than MAX_DEPTH or longer than the
kernel's PATH_MAX. All of it is decided from the headers, before the first file is written.
The headers themselves are bounded as tarfile reads them: a pax or GNU long-name header
bigger than MAX_HEADER_BYTES and sparse files (a map read whole, never in a snapshot) are
refused, and the decompressed stream is cut at what the bounds above allow.
The checked members are then written by `_write_members`, which follows no link on the way (each
folder made or found real, each file created new without following a link), leaves out owners,
times and special mode bits as Python's tar "data" filter does, and costs one system call or two
per member (tarfile's extraction with that filter walked every member's path twice with realpath,
and set its owner, mode and time: 0.1 s of CPU per snapshot, read once per host).
Every refusal is one line naming the bundle as the user gave it; a refused or interrupted
unpacking leaves nothing behind.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import shutil
import signal
import stat
import tarfile
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .tree import MemoryTree

MAX_MEMBERS = 200_000
MAX_MEMBER_BYTES = 64 << 20  # a snapshot's biggest files (dmesg, modules.dep, cpuinfo) are a few MiB
MAX_TOTAL_BYTES = 512 << 20
MAX_DEPTH = 64  # path components; a snapshot's deepest paths (sysfs attributes) have about a dozen
MAX_PATH_BYTES = 4095  # PATH_MAX less its NUL
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_HEADER_BYTES = 16 << 10  # a pax or GNU long-name header: a path, a link target, times: a few KiB
# The tar stream, decompressed, holds the declared bytes and at most a few 512-byte blocks per entry.
MAX_STREAM_BYTES = MAX_TOTAL_BYTES + MAX_MEMBERS * 4 * 512
INFLATE_WHOLE_BYTES = 16 << 20  # a bundle in memory whose tar stream is at most this is inflated at once (a host's: a few MiB)

_LONG_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
                      tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


class BundleError(Exception):
    """The bundle was refused or could not be read; nothing was unpacked."""


def pack_bundle(snapshot_dir: os.PathLike | str, out_file: os.PathLike | str) -> Path:
    snapshot_dir, out_file = Path(snapshot_dir), Path(out_file)
    arcname = out_file.name
    for suffix in (".tar.gz", ".tgz"):
        if arcname.endswith(suffix):
            arcname = arcname[: -len(suffix)]
    with tarfile.open(out_file, "w:gz") as tar:
        tar.add(snapshot_dir, arcname=arcname or "snapshot")
    return out_file


def _member_problem(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' in path"
    if member.islnk():
        return "hard link"
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            return f"link to absolute path {target!r}"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == ".." or resolved.startswith("../"):
            return f"link leaving the bundle ({target!r})"
        return ""
    if not (member.isfile() or member.isdir()):
        return "device, FIFO or other special file"
    return ""


def _through_link(member: tarfile.TarInfo, links: set[str]) -> str:
    """The bundle's link that this member's path (or, for a link, its target) passes through, or ''.

    Each link is checked alone (`_member_problem`); chained, `a/b -> ..` and `a/c -> b/../..`
    climb out although each stays inside on paper. Sysfs links point at folders that are not
    in a snapshot, never through one another, so a real snapshot has none of these.
    """
    name = posixpath.normpath(member.name)
    parts = name.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if prefix in links:
            return prefix
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        target_parts = target.split("/")
        passed = _stood_on(posixpath.dirname(name), member.linkname)
        passed.update("/".join(target_parts[:i]) for i in range(1, len(target_parts) + 1))  # the target, or under
        through = sorted(link for link in passed & links if link != name)
        if through:
            return through[0]
    return ""


def _stood_on(base: str, target: str) -> set[str]:
    """Every path that walking `target` from `base` step by step stands on (before normalising)."""
    here = [p for p in base.split("/") if p not in ("", ".")]
    stood: set[str] = set()
    for step in target.split("/"):
        if step in ("", "."):
            continue
        if step == "..":
            if here:
                here.pop()
            continue
        here.append(step)
        stood.add("/".join(here))
    return stood


class _Refused(Exception):
    """A bound or rule the bundle breaks, raised while tarfile reads its headers (the bundle named later)."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's members, with each header's own size checked before tarfile reads it whole.

    _proc_member is tarfile's extension point for TarInfo subclasses; the sparse-map readers are
    refused outright (a map can be as long as the stream, and a snapshot never has a sparse file).
    """

    def _proc_member(self, tar):
        if self.type in _LONG_HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            raise _Refused(f"a tar extended (pax or long-name) header of {self.size} bytes, "
                           f"more than the {MAX_HEADER_BYTES >> 10} KiB a path needs")
        if self.type == tarfile.GNUTYPE_SPARSE:
            self._refuse_sparse(self)
        return super()._proc_member(tar)

    def _refuse_sparse(self, member: tarfile.TarInfo, *_args):
        raise _Refused(f"{_short(member.name)!r}: a sparse file (a snapshot never has one)")

    # tarfile's readers of the three pax sparse formats, called with the member the pax header describes
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _BoundedStream:
    """The decompressed tar stream, ending at MAX_STREAM_BYTES whatever its headers claim."""

    def __init__(self, raw):
        self._raw = raw

    def _check(self, position: int) -> None:
        if position > MAX_STREAM_BYTES:
            raise _Refused(f"its tar stream runs past {MAX_STREAM_BYTES >> 20} MiB (a gzip bomb?)")

    def read(self, size: int = -1) -> bytes:
        room = MAX_STREAM_BYTES + 1 - self._raw.tell()
        data = self._raw.read(room if size is None or size < 0 or size > room else size)
        self._check(self._raw.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._check(offset)  # before a compressed stream is inflated up to there
        position = self._raw.seek(offset, whence)
        self._check(position)
        return position

    def tell(self) -> int:
        return self._raw.tell()


def _decompressed(raw):
    """The tar stream inside a .tar.gz, .tar.bz2, .tar.xz or plain .tar file."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return _inflated_whole(raw) or gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _inflated_whole(raw) -> Optional[io.BytesIO]:
    """A .tar.gz already in memory (a live host's answer) inflated at once, when it is one whole gzip member of at
    most INFLATE_WHOLE_BYTES: tarfile then moves from header to header in memory, where through GzipFile each
    move costs a seek down its layers (a host's answer is read 20-30% sooner). Anything else (a file on disk, a
    bigger, truncated, corrupt or multi-member stream) is None: streamed through GzipFile, and refused there."""
    if not isinstance(raw, io.BytesIO):
        return None
    inflate = zlib.decompressobj(wbits=31)  # a gzip wrapper: its CRC and length are checked at the end
    try:
        data = inflate.decompress(raw.getvalue(), min(INFLATE_WHOLE_BYTES, MAX_STREAM_BYTES + 1))
    except zlib.error:
        return None
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        return None
    return io.BytesIO(data)


def _short(name: str, limit: int = 120) -> str:
    """A member's name for a one-line message (a hostile one may be thousands of characters)."""
    return name if len(name) <= limit else f"{name[:limit // 2]}...{name[-limit // 2:]}"


def _checked_members(tar: tarfile.TarFile, shown: str) -> list[tarfile.TarInfo]:
    """Every member, read from the headers alone; BundleError on the first one a snapshot may not have."""
    members, total = [], 0
    for member in tar:
        members.append(member)
        total += member.size
        name = _short(member.name)
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"{shown}: refused: more than {MAX_MEMBERS} entries")
        if member.size > MAX_MEMBER_BYTES:
            raise BundleError(f"{shown}: refused: {name!r}: {member.size} bytes, "
                              f"more than the {MAX_MEMBER_BYTES >> 20} MiB a snapshot file may have")
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"{shown}: refused: {name!r}: "
                              f"the bundle unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB")
        problem = _path_problem(member.name) or _member_problem(member)
        if problem:
            raise BundleError(f"{shown}: refused: {name!r}: {problem}")
    links = {posixpath.normpath(m.name) for m in members if m.issym()}
    for member in members:
        through = _through_link(member, links)
        if through:
            raise BundleError(f"{shown}: refused: {_short(member.name)!r}: "
                              f"its path runs through the link {_short(through)!r}")
    return members


def _path_problem(name: str) -> str:
    """Depth and length, before anything walks the path (a 5,000-deep one overflows recursive code)."""
    depth = len([p for p in name.split("/") if p not in ("", ".")])
    if depth > MAX_DEPTH:
        return f"a path {depth} levels deep, more than the {MAX_DEPTH} a snapshot may have"
    encoded = os.fsencode(name)
    if len(encoded) > MAX_PATH_BYTES:
        return f"a path longer than {MAX_PATH_BYTES} bytes"
    if len(encoded) > MAX_NAME_BYTES and any(len(p) > MAX_NAME_BYTES for p in encoded.split(b"/")):
        return f"a file name longer than {MAX_NAME_BYTES} bytes"
    return ""


@contextmanager
def _stopped_as_by_ctrl_c():
    """While a bundle unpacks, SIGTERM and SIGHUP raise KeyboardInterrupt as SIGINT does (whoever runs
    this, vfio-certify or pytest itself), so that what was written is removed. Handlers installed by
    someone else are left alone."""
    replaced = {}
    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(stop) == signal.SIG_DFL:
                replaced[stop] = signal.signal(stop, signal.default_int_handler)
    try:
        yield
    finally:
        for stop, handler in replaced.items():
            signal.signal(stop, handler)


def unpack_bundle(bundle: os.PathLike | str, dest: os.PathLike | str, shown_as: Optional[str] = None) -> Path:
    """Unpack a bundle into dest (created); return the snapshot folder inside it.

    Messages name the bundle as `shown_as`, by default as given. Refused, unreadable or
    interrupted (KeyboardInterrupt included), nothing is left in dest.
    """
    shown, dest = shown_as or os.fspath(bundle), Path(dest)
    created = not dest.exists()
    try:
        with _stopped_as_by_ctrl_c(), open(bundle, "rb") as raw, _checked(raw, shown) as (tar, members):
            dest.mkdir(parents=True, exist_ok=True)
            _write_members(tar, members, dest, shown)
        return _snapshot_root(dest, shown)
    except BaseException:  # refused, unreadable, interrupted: no half-unpacked snapshot stays behind
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def read_bundle(data: bytes, shown_as: str) -> MemoryTree:
    """A bundle's snapshot read into memory, never written to disk (a live host's answer, already in memory):
    refused, in one line naming it `shown_as`, as unpack_bundle refuses; the members as _write_members writes
    them (a name given twice keeps the last one, a folder never becomes a file or link)."""
    with _checked(io.BytesIO(data), shown_as) as (tar, members):
        names = [posixpath.normpath(m.name).lstrip("/") for m in members]
        prefix = _memory_root_prefix(names, members, shown_as)  # "" or "NAME/"
        tree = MemoryTree()
        for member, rel in zip(members, names):
            if not (rel + "/").startswith(prefix) or rel + "/" == prefix or rel in ("", "."):
                continue  # the bundle's top folder itself
            rel = rel[len(prefix):]
            try:
                if member.isdir():
                    tree.add_folder(rel)
                elif member.issym():
                    tree.add_link(rel, member.linkname)
                else:
                    with tar.extractfile(member) as content:
                        tree.add_file(rel, content.read())
            except FileExistsError:
                raise _same_name(shown_as, member.name) from None
    return tree


def _same_name(shown: str, name: str) -> BundleError:
    """The refusal of a bundle that gives one name to a folder and to a file or link (in memory or on disk)."""
    return BundleError(f"{shown}: refused: {_short(name)!r}: a folder and a file or link of the same name")


def _memory_root_prefix(names: list[str], members: list[tarfile.TarInfo], shown: str) -> str:
    """Where the snapshot is in a bundle read into memory (`names`: its members' normalised paths), as
    _snapshot_root finds it on disk: "" when meta.json or root/ is at the top, "NAME/" when the top is one
    folder, else no snapshot."""
    top = {name.split("/", 1)[0] for name in names} - {"", "."}
    kinds = {name: member.isdir() for name, member in zip(names, members)}
    if "meta.json" in top or ("root" in top and kinds.get("root", True)):
        return ""
    if len(top) == 1 and kinds.get(next(iter(top)), True):  # a folder (its own entry may be left out)
        return next(iter(top)) + "/"
    raise BundleError(f"{shown}: no snapshot inside (expected meta.json and root/)")


@contextmanager
def _checked(raw, shown: str) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """The open tar stream of `raw` and its members, every one checked; BundleError in one line otherwise."""
    try:
        with _decompressed(raw) as stream, \
                tarfile.open(fileobj=_BoundedStream(stream), mode="r:", tarinfo=_BoundedTarInfo) as tar:
            yield tar, _checked_members(tar, shown)
    except _Refused as exc:
        raise BundleError(f"{shown}: refused: {exc}") from None
    except (tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise BundleError(f"{shown}: not a readable .tar.gz bundle ({_one_line(exc)})") from None


def _write_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path, shown: str) -> None:
    """Write the checked members under dest, in the bundle's order, following no link: every folder on the way
    is made, or found to be a real folder (not a link); files and links are created new (O_EXCL, O_NOFOLLOW),
    a name given twice replaces the first unless one of the two is a folder. No owner and no time is set; a
    file's mode is the "data" filter's (no setuid/setgid/sticky, no group or other write, owner read-write)."""
    real_folders = {""}

    def folder(rel: str) -> str:
        if rel not in real_folders:
            folder(posixpath.dirname(rel))  # at most MAX_DEPTH deep (_path_problem)
            path = os.path.join(dest, rel)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise _same_name(shown, rel) from None
            real_folders.add(rel)
        return os.path.join(dest, rel)

    def replacing(path: str, rel: str, create) -> None:
        try:
            create()
        except FileExistsError:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise _same_name(shown, rel) from None
            os.unlink(path)  # the same name given twice: the last one stays (as tar does)
            create()

    for member in members:
        rel = posixpath.normpath(member.name).lstrip("/")
        if rel in ("", "."):
            continue
        if member.isdir():
            folder(rel)
            continue
        path = os.path.join(folder(posixpath.dirname(rel)), posixpath.basename(rel))
        if member.issym():
            replacing(path, rel, lambda: os.symlink(member.linkname, path))
            continue
        mode = member.mode & 0o755
        mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600

        def create() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as out, tar.extractfile(member) as data:
                shutil.copyfileobj(data, out)

        replacing(path, rel, create)


def _one_line(exc: BaseException) -> str:
    """tarfile's "r:*" error lists every method it tried, one per line: say it in one."""
    text = str(exc)
    if "could not be opened successfully" in text:
        return "neither gzip, bzip2 nor xz compressed tar data"
    return " ".join(text.split()) or type(exc).__name__


def _snapshot_root(dest: Path, shown: str) -> Path:
    if (dest / "meta.json").exists() or (dest / "root").is_dir():
        return dest
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    raise BundleError(f"{shown}: no snapshot inside (expected meta.json and root/)")
