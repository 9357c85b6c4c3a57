"""Snapshot bundles: a snapshot folder travelling as SNAPSHOT.tar.gz.

A bundle comes from outside (a customer's host), so unpacking checks every member
before anything is written: absolute paths, `..` components, links that leave the
bundle, hard links, devices and FIFOs refuse the whole bundle.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

MAX_MEMBERS = 200_000


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


def unpack_bundle(bundle: os.PathLike | str, dest: os.PathLike | str) -> Path:
    """Unpack a bundle into dest (created); return the snapshot folder inside it."""
    bundle, dest = Path(bundle), Path(dest)
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = []
            for member in tar:
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise BundleError(f"{bundle}: refused: more than {MAX_MEMBERS} entries")
                problem = _member_problem(member)
                if problem:
                    raise BundleError(f"{bundle}: refused: {member.name!r}: {problem}")
            dest.mkdir(parents=True, exist_ok=True)
            extract_kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extract_kwargs)
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{bundle}: not a readable .tar.gz bundle ({_one_line(exc)})") from None
    return _snapshot_root(dest)


def _one_line(exc: BaseException) -> str:
    """tarfile's "r:*" error lists every method it tried, one per line: say it in one."""
    text = str(exc)
    if "could not be opened successfully" in text:
        return "neither gzip, bzip2 nor xz compressed tar data"
    return " ".join(text.split()) or type(exc).__name__


def _snapshot_root(dest: Path) -> Path:
    if (dest / "meta.json").exists() or (dest / "root").is_dir():
        return dest
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    raise BundleError(f"{dest}: no snapshot inside (expected meta.json and root/)")
