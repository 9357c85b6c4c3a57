"""Compiled report templates kept between runs: jinja2's bytecode cache in the user's cache folder.

Compiling the four page templates took a fifth of a local certification. Each cached entry is
checked against the template's source and the Python version before use, so an edited template
or another interpreter compiles afresh. A cache folder that cannot be made or written
($XDG_CACHE_HOME unset and no home, a read-only home) only means compiling every run: it never
fails a run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import jinja2


def cache_folder() -> Optional[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(os.path.expanduser("~"), ".cache")
                                                if os.path.expanduser("~") != "~" else "")
    return Path(base) / "vfio-certify" / "templates" if base else None


class _TolerantCache(jinja2.FileSystemBytecodeCache):
    """A write that fails (full disk, read-only folder) leaves the template compiled in memory only."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def bytecode_cache() -> Optional[jinja2.BytecodeCache]:
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK) or folder.is_symlink():
        return None
    return _TolerantCache(str(folder))
