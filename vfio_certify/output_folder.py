"""One run owns its output folder.

- `--output` naming a file (or a link) is refused; so is a folder inside an input (a snapshot
  folder, the baseline) and a folder that holds an input (the waivers, an ssh_config, ...).
- A new or empty folder is used; a folder an earlier run wrote (it holds MARKER, or only the
  files a run writes with a summary.json) is replaced as a whole; anything else is refused and
  left as it is.
- The run writes into a temporary sibling (`.NAME.new-*`) that is moved into place when the run
  is complete (with one atomic exchange where the kernel offers it): a reader sees the earlier
  run or this one, never half of one or a mix, and nothing of the earlier run survives.
- A lock beside the folder (`.NAME.lock`, flock) keeps a second run out while one writes it; the
  second is refused at once, naming the first's pid.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from .options import OptionError

MARKER = ".vfio-certify-output"
MARKER_TEXT = ("This folder is the output of one vfio-certify run. The next run given it as --output\n"
               "replaces it as a whole: keep nothing else here.\n")
# What a run writes (report.html, junit.xml and, with several hosts, the hosts/ folder of their pages included).
RUN_FILES = frozenset({MARKER, "summary.json", "overview.json", "diff.json", "certification.html", "index.html",
                       "report.html", "junit.xml", "hosts"})


class OutputFolderError(OptionError):
    """--output cannot be used; str() is one line naming it."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(output: Path, inputs: Iterable[tuple[str, str]]) -> None:
    """Refuse an --output that is a file or a link, overlaps an input (flag, path), or holds
    something other than an earlier run. Raises OutputFolderError."""
    if output.is_symlink():
        raise OutputFolderError(f"--output {output}: a link; name the folder itself")
    if output.exists() and not output.is_dir():
        raise OutputFolderError(f"--output {output}: a file, not a folder; name a new folder")
    final = output.resolve()
    for flag, given in inputs:
        path = Path(given).resolve()
        if flag == "--baseline" and (path if path.is_dir() else path.parent) == final:
            raise OutputFolderError(f"--baseline {given} and --output {output} are the same folder: "
                                    "this run would replace the baseline; write to a new folder")
        folder = path if path.is_dir() else (path.parent if flag == "--baseline" else None)
        if folder is not None and _inside(final, folder):
            raise OutputFolderError(f"--output {output} is {'' if final == folder else 'inside '}{flag} {given}: "
                                    "a run never writes into its input; name another folder")
        if _inside(path, final):
            raise OutputFolderError(f"--output {output} holds {flag} {given}: replacing the folder would delete it; "
                                    "name another folder")
    stray = foreign_entries(output)
    if stray:
        raise OutputFolderError(f"--output {output}: holds {stray[0]!r}{' and more' if len(stray) > 1 else ''}, "
                                "not an earlier vfio-certify run; it is left as it is: name a new folder")


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` shows it is not (only) an earlier run; [] for a missing, empty or run folder."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OutputFolderError(f"--output {folder}: cannot be read ({exc.strerror})") from None
    if not names or MARKER in names:
        return []
    if "summary.json" in names:  # a run from before the marker: only what runs write
        return [n for n in names if n not in RUN_FILES]
    return names


# The options that name a file or folder this run reads: none may be inside the output.
INPUT_OPTIONS = ("snapshot", "baseline", "waivers", "ssh_config", "ssh_identity_file", "ansible_inventory",
                 "guest_ssh_config", "journal")


def inputs_of(values: object) -> list[tuple[str, str]]:
    """(flag, path) of every input named in the option values (argparse namespace or pytest's config.option)."""
    found: list[tuple[str, str]] = []
    for dest in INPUT_OPTIONS:
        given = getattr(values, dest, None)
        for path in given if isinstance(given, list) else [given]:
            if path:
                found.append((f"--{dest.replace('_', '-')}", str(path)))
    return found


def _lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


def _busy(given: Path, holder: str) -> OutputFolderError:
    return OutputFolderError(f"--output {given}: another vfio-certify run{f' (pid {holder})' if holder else ''} "
                             "is writing it; wait for it to finish or name another folder")


def refuse_if_busy(output: Path) -> None:
    """Refuse at once when another run holds the output (the run itself takes the lock later)."""
    try:
        fd = os.open(_lock_path(Path(os.path.abspath(output))), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _busy(output, os.pread(fd, 32, 0).decode(errors="replace").strip()) from None
    finally:
        os.close(fd)


class OutputFolder:
    """The folder a run owns: open() (check, lock, a fresh staging folder), commit(), close()."""

    def __init__(self, output: Path, inputs: Iterable[tuple[str, str]] = ()):
        self.output = Path(os.path.abspath(output))
        self.given = output
        self.inputs = list(inputs)
        self.staging: Optional[Path] = None
        self._lock_fd: Optional[int] = None

    def open(self) -> Path:
        """Take the folder: the staging folder the run writes into. Raises OutputFolderError."""
        check_output(self.given, self.inputs)
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            check_output(self.given, self.inputs)  # again, now that no other run can change it
            self._remove_leftovers()
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.new-", dir=self.output.parent))
            self.staging.chmod(0o777 & ~_umask())  # as a folder made by mkdir (mkdtemp's is private)
            (self.staging / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        except OSError as exc:
            self.close()
            raise OutputFolderError(f"--output {self.given}: cannot write beside it "
                                    f"({exc.strerror or exc})") from None
        except OutputFolderError:
            self.close()
            raise
        return self.staging

    def _lock(self) -> None:
        path = _lock_path(self.output)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise _busy(self.given, holder) from None
            try:  # the file a finished run removed is not the lock: take the one at the path now
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _remove_leftovers(self) -> None:
        """Staging folders of runs that were killed (they hold the marker): nothing else is touched."""
        for prefix in (f".{self.output.name}.new-", f".{self.output.name}.old-"):
            for path in self.output.parent.glob(prefix + "*"):
                if path.is_dir() and not path.is_symlink() and (path / MARKER).is_file():
                    shutil.rmtree(path, ignore_errors=True)

    def commit(self) -> None:
        """Put the staging folder in the output's place; the earlier run, if any, is removed.
        Raises OutputFolderError (the finished run is left in its staging folder) when it cannot."""
        assert self.staging is not None and self._lock_fd is not None
        staging, self.staging = self.staging, None
        try:
            if not self.output.exists():
                os.rename(staging, self.output)
            elif _exchange(staging, self.output):  # staging now holds the earlier run
                shutil.rmtree(staging, ignore_errors=True)
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.old-", dir=self.output.parent))
                (old / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
                os.rename(self.output, old / "run")
                os.rename(staging, self.output)
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise OutputFolderError(f"--output {self.given}: this run could not be put in its place "
                                    f"({exc.strerror or exc}); it is complete in {staging}") from None

    def close(self) -> None:
        """Drop an uncommitted staging folder and release the lock (removing its file first)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(_lock_path(self.output))
            os.close(self._lock_fd)
            self._lock_fd = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not offered."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
