"""Snapshot bundles: a snapshot folder travelling as SNAPSHOT.tar.gz.

A bundle comes from outside (a customer's host), so unpacking checks every member
before anything is written: absolute paths, `..` components, links that leave the
bundle, a member whose path runs through a link of the bundle (links chained to climb
out, or a file written through a link), hard links, devices and FIFOs refuse the whole
bundle. So do a file bigger than MAX_MEMBER_BYTES and a bundle that unpacks to more than
MAX_TOTAL_BYTES (a gzip bomb), as the tar headers declare them, which is what is written.
Python's tar "data" filter, where this Python has it, checks again on the way out.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

MAX_MEMBERS = 200_000
MAX_MEMBER_BYTES = 64 << 20  # a snapshot's biggest files (dmesg, modules.dep, cpuinfo) are a few MiB
MAX_TOTAL_BYTES = 512 << 20


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
        for link in links:
            if link != name and (target == link or target.startswith(link + "/")
                                 or _climbs_through(posixpath.dirname(name), member.linkname, link)):
                return link
    return ""


def _climbs_through(base: str, target: str, link: str) -> bool:
    """Whether walking `target` from `base` step by step ever stands on `link` (before normalising)."""
    here = [p for p in base.split("/") if p not in ("", ".")]
    for step in target.split("/"):
        if step in ("", "."):
            continue
        if step == "..":
            if here:
                here.pop()
            continue
        here.append(step)
        if "/".join(here) == link:
            return True
    return False


def unpack_bundle(bundle: os.PathLike | str, dest: os.PathLike | str) -> Path:
    """Unpack a bundle into dest (created); return the snapshot folder inside it."""
    bundle, dest = Path(bundle), Path(dest)
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members, total = [], 0
            for member in tar:
                members.append(member)
                total += member.size
                if len(members) > MAX_MEMBERS:
                    raise BundleError(f"{bundle}: refused: more than {MAX_MEMBERS} entries")
                if member.size > MAX_MEMBER_BYTES:
                    raise BundleError(f"{bundle}: refused: {member.name!r}: {member.size} bytes, "
                                      f"more than the {MAX_MEMBER_BYTES >> 20} MiB a snapshot file may have")
                if total > MAX_TOTAL_BYTES:
                    raise BundleError(f"{bundle}: refused: {member.name!r}: "
                                      f"the bundle unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB")
                problem = _member_problem(member)
                if problem:
                    raise BundleError(f"{bundle}: refused: {member.name!r}: {problem}")
            links = {posixpath.normpath(m.name) for m in members if m.issym()}
            for member in members:
                through = _through_link(member, links)
                if through:
                    raise BundleError(f"{bundle}: refused: {member.name!r}: its path runs through the link {through!r}")
            dest.mkdir(parents=True, exist_ok=True)
            extract_kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extract_kwargs)
    except BundleError:
        raise
    except getattr(tarfile, "FilterError", ()) as exc:  # the data filter refused a member
        raise BundleError(f"{bundle}: refused: {_one_line(exc)}") from None
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
