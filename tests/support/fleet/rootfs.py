"""Fake host root trees for LoopbackFleet: a snapshot's files plus a tiny toolbox.

Layout of one host root (the directory a session is chroot'ed into)::

    /proc /sys /boot /etc /dev /lib/modules ...   the snapshot's root/ tree, as plain
                                                  files, folders and symlinks
    /dev/null                                     a real character device (mknod 1:3)
    /tmp, /dev/shm                                writable (1777), private to the host (a
                                                  real host's /dev/shm is a tmpfs; here both
                                                  are folders of the fleet's)
    /bin/sh                                       dash (see "Why dash" below)
    /bin/busybox + /bin/<applet> links            cat, mkdir, ln, readlink, gzip, base64,
                                                  mktemp, rm, timeout, ... (tar too, for
                                                  FleetHost(..., tar="busybox"))
    /bin/tar -> gnutar                            this machine's GNU tar (the default), as
                                                  a distribution's host has it
    /lib/x86_64-linux-gnu/libc.so.6, /lib64/ld-*  what dash (and a dynamic busybox) need
    /usr/bin/<tool> -> /.fleet/fake               uname, hostname, dmesg, lspci, lsusb,
                                                  ip, grubby, printenv ... (replayed
                                                  outputs; unrecorded: "not found", 127,
                                                  unless /bin has a plain tool of that name)
    /bin/printenv                                 a tiny script (the session's own env)
    /.fleet/fake                                  the replay script
    /.fleet/commands/<name>[.rc|.err]             the snapshot's commands/ outputs, with
                                                  uname_-r / uname_-n / hostname written
                                                  from meta.json

Why dash and not busybox sh: Debian's busybox-static is built with
FEATURE_SH_STANDALONE, so its sh runs its own applet for any command name that is an
applet *before* searching PATH. `uname -r`, `dmesg` and `ip` would then report the
machine running the tests (the real kernel release, the real ring buffer, the real
links), whatever fake is on PATH. dash has no applets, so PATH decides, and busybox is
only used for the plain file tools (its `timeout` applet does search PATH, so
`timeout 30 uname -r` also reaches the fake). A host can still be given busybox sh
(`FleetHost(..., shell="busybox")`) to exercise the script under ash; its uname, dmesg
and ip facts then come from this machine.

Files are shared: one copy of the toolbox and of each snapshot per fleet, hard-linked
into every host root (the script only reads them; per-host files are unlinked before
being rewritten, so a shared inode is never modified).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

# Names in a snapshot that are bookkeeping, not host files (fixtures keep empty folders in git).
SKIP_PREFIX = ".snapshot"

# Busybox applets linked into /bin: what the collection script uses, plus common text
# tools for debugging a session by hand. Never the faked commands, and nothing that would
# read the real kernel through a syscall (hostname, uname, dmesg, ip, nproc, free, ...).
APPLETS = [
    "cat", "mkdir", "ln", "readlink", "tar", "gzip", "gunzip", "zcat", "base64", "mktemp",
    "rm", "rmdir", "timeout", "dirname", "basename", "printf", "echo", "test", "[", "true",
    "false", "sleep", "ls", "cp", "mv", "chmod", "touch", "grep", "sed", "head", "tail",
    "wc", "cut", "tr", "sort", "uniq", "find", "env", "stat", "od", "expr", "awk", "xargs",
    "ash",
    "date",  # the clock is not a host fact: the script stamps meta.json's collected_at with it
]

# Commands always faked (besides the first word of every spec.COMMANDS entry and every
# command found in the snapshot): `hostname` answers like `uname -n`.
ALWAYS_FAKED = ["uname", "hostname"]

_SAFE_TOOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")

FAKE_SCRIPT = r"""#!/bin/sh
# Replays a recorded command: /.fleet/commands/<tool>_<arg>_<arg>... holds its standard
# output, optional .err its standard error and .rc its exit status.
D=/.fleet/commands
tool=${0##*/}
n=$tool
for a in "$@"; do n="${n}_$a"; done
case $n in */*) n=;; esac
if [ -n "$n" ] && [ -f "$D/$n" ]; then
  cat "$D/$n"
  [ -f "$D/$n.err" ] && cat "$D/$n.err" >&2
  rc=0
  [ -f "$D/$n.rc" ] && read rc < "$D/$n.rc"
  case $rc in ''|*[!0-9]*) rc=1;; esac
  exit "$rc"
fi
# Not recorded: a plain tool of the fake root (busybox applet reading the fake files,
# /bin/printenv) runs for real; anything else is absent.
[ -x "/bin/$tool" ] && exec "/bin/$tool" "$@"
echo "sh: $tool: not found" >&2
exit 127
"""

# printenv is not a busybox applet; the session's own SSH_CONNECTION is a fact the
# collection records (printenv SSH_CONNECTION) when the snapshot did not.
PRINTENV_SCRIPT = r"""#!/bin/sh
[ $# -eq 0 ] && exec env
rc=0
for v in "$@"; do
  case $v in ''|[0-9]*|*[!A-Za-z0-9_]*) rc=1; continue;; esac
  if eval "[ -n \"\${$v+x}\" ]"; then eval "printf '%s\\n' \"\$$v\""; else rc=1; fi
done
exit $rc
"""


class RootfsError(RuntimeError):
    pass


def _libraries(binary: str) -> List[str]:
    """Absolute paths of the shared objects a binary loads (empty for a static one)."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if result.returncode != 0:  # "not a dynamic executable"
        return []
    libs = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
        else:
            target = line.split(" (", 1)[0].strip()
        if target.startswith("/"):
            libs.append(target)
    return libs


def find_busybox() -> Optional[str]:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_dash() -> Optional[str]:
    for candidate in (shutil.which("dash"), "/bin/dash", "/usr/bin/dash"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_gnu_tar() -> Optional[str]:
    """This machine's GNU tar (every distribution's tar), or None."""
    tar = shutil.which("tar")
    if tar is None:
        return None
    result = subprocess.run([tar, "--version"], capture_output=True, text=True)
    return tar if result.returncode == 0 and "GNU tar" in result.stdout else None


def busybox_applets(busybox: str) -> List[str]:
    result = subprocess.run([busybox, "--list"], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


@dataclass
class Toolbox:
    """One copy per fleet of the binaries every host root hard-links."""

    dir: Path
    files: Dict[str, Path] = field(default_factory=dict)  # path inside root -> copy here
    applets: List[str] = field(default_factory=list)

    @classmethod
    def build(cls, dir: Path) -> "Toolbox":
        busybox = find_busybox()
        dash = find_dash()
        if busybox is None or dash is None:
            raise RootfsError("busybox and dash are needed to build fake host roots")
        box = cls(dir=dir)
        dir.mkdir(parents=True, exist_ok=True)
        box._add("bin/busybox", busybox)
        box._add("bin/dash", dash)
        gnu_tar = find_gnu_tar()
        if gnu_tar is not None:  # a host's tar (tar="gnu"): the script makes its links with it
            box._add("bin/gnutar", gnu_tar)
        for binary in filter(None, (busybox, dash, gnu_tar)):
            for lib in _libraries(binary):
                box._add(lib.lstrip("/"), lib)
        available = set(busybox_applets(busybox))
        missing = {"cat", "mkdir", "ln", "readlink", "tar", "gzip", "base64", "mktemp",
                   "rm", "timeout"} - available
        if missing:
            raise RootfsError(f"{busybox} lacks applets the collection script needs: "
                              + ", ".join(sorted(missing)))
        box.applets = [a for a in APPLETS if a in available]
        fake = dir / "fake"
        fake.write_text(FAKE_SCRIPT)
        fake.chmod(0o755)
        box.files[".fleet/fake"] = fake
        printenv = dir / "printenv"
        printenv.write_text(PRINTENV_SCRIPT)
        printenv.chmod(0o755)
        box.files["bin/printenv"] = printenv
        return box

    def _add(self, inside: str, source: str) -> None:
        if inside in self.files:
            return
        copy = self.dir / inside.replace("/", "__")
        shutil.copy2(os.path.realpath(source), copy)
        self.files[inside] = copy


@dataclass
class SnapshotImage:
    """A fleet-private copy of one snapshot folder (so hard links never reach the source)."""

    source: Path
    dir: Path
    meta: dict

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def commands(self) -> Path:
        return self.dir / "commands"

    @classmethod
    def build(cls, source: Path, dir: Path) -> "SnapshotImage":
        source = Path(source)
        if not source.is_dir():
            raise RootfsError(f"snapshot folder not found: {source}")
        dir.mkdir(parents=True)
        for part in ("root", "commands"):
            if (source / part).is_dir():
                _copy_tree(source / part, dir / part)
            else:
                (dir / part).mkdir()
        meta: dict = {}
        meta_file = source / "meta.json"
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text(errors="replace"))
            except ValueError as exc:
                raise RootfsError(f"{meta_file}: not JSON: {exc}") from None
            if not isinstance(meta, dict):
                raise RootfsError(f"{meta_file}: not a JSON object")
        return cls(source=source, dir=dir, meta=meta)

    def first_line(self, command_file: str) -> Optional[str]:
        path = self.commands / command_file
        if path.is_file() and not path.is_symlink():
            lines = path.read_text(errors="replace").strip().splitlines()
            return lines[0] if lines else ""
        return None

    @property
    def kernel_release(self) -> Optional[str]:
        value = self.meta.get("kernel_release")
        return str(value) if value else self.first_line("uname_-r")

    @property
    def hostname(self) -> Optional[str]:
        value = self.meta.get("hostname")
        return str(value) if value else self.first_line("uname_-n")

    def tools(self) -> List[str]:
        names = set()
        for entry in os.listdir(self.commands):
            tool = entry.split("_", 1)[0]
            if tool.endswith((".rc", ".err")):
                tool = tool.rsplit(".", 1)[0]
            if _SAFE_TOOL.match(tool):
                names.add(tool)
        return sorted(names)


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy files, folders and symlinks (links as links, never followed)."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.name.startswith(SKIP_PREFIX):
                continue
            target = dst / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                _copy_tree(Path(entry.path), target)
            elif entry.is_file():
                shutil.copyfile(entry.path, target)
            # sockets, fifos, devices: not host facts a snapshot can hold; skipped


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror src into dst with hard links for files (same filesystem: the fleet dir)."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            if entry.is_symlink():
                if target.is_symlink() or target.exists():
                    continue
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                _link_tree(Path(entry.path), target)
            else:
                if target.exists() or target.is_symlink():
                    continue
                os.link(entry.path, target)


def _write_private(path: Path, data: str) -> None:
    """Write a per-host file without touching a hard-linked inode another host shares."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_text(data)


def _make_dev_null(path: Path) -> bool:
    """A real /dev/null; False (and an empty regular file) where mknod is not allowed."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(path, 0o666)
        return True
    except OSError:
        path.write_bytes(b"")
        os.chmod(path, 0o666)
        return False


def build_host_root(
    root: Path,
    image: Optional[SnapshotImage],
    toolbox: Toolbox,
    faked_tools: Iterable[str],
    hostname: Optional[str] = None,
    shell: str = "dash",
    tar: str = "gnu",
) -> Tuple[Path, bool]:
    """Build one host's chroot; returns (root, whether /dev/null is a real device). tar: "gnu", this machine's GNU
    tar, as a distribution's host has it, or "busybox", its applet (busybox sh runs its applet either way)."""
    root.mkdir(parents=True)
    if image is not None:
        _link_tree(image.root, root)
    # The harness's own files win over anything the snapshot put at the same path.
    for inside, copy in toolbox.files.items():
        dest = root / inside
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(copy, dest)
    bin_dir = root / "bin"
    sh = bin_dir / "sh"
    if sh.exists() or sh.is_symlink():
        sh.unlink()
    if shell == "dash":
        os.symlink("dash", sh)
    elif shell == "busybox":
        os.symlink("busybox", sh)
    else:
        raise RootfsError(f"unknown shell {shell!r} (dash or busybox)")
    if tar == "gnu":
        if "bin/gnutar" not in toolbox.files:
            raise RootfsError("tar='gnu' needs GNU tar on this machine")
        os.symlink("gnutar", bin_dir / "tar")
    elif tar != "busybox":
        raise RootfsError(f"unknown tar {tar!r} (gnu or busybox)")
    for applet in toolbox.applets:
        link = bin_dir / applet
        if not (link.exists() or link.is_symlink()):
            os.symlink("busybox", link)

    for tmp in (root / "tmp", root / "dev" / "shm"):  # the collection script's private folder goes in /dev/shm
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o1777)
    null = root / "dev" / "null"
    if null.exists() or null.is_symlink():
        null.unlink()
    real_null = _make_dev_null(null)

    commands = root / ".fleet" / "commands"
    if image is not None:
        _link_tree(image.commands, commands)
    else:
        commands.mkdir(parents=True, exist_ok=True)
    release = image.kernel_release if image else None
    name = hostname or (image.hostname if image else None)
    for file_name, value in (("uname_-r", release), ("uname_-n", name), ("hostname", name)):
        for suffix in ("", ".rc", ".err"):
            if value is not None and (commands / (file_name + suffix)).exists():
                (commands / (file_name + suffix)).unlink()
        if value is not None:
            _write_private(commands / file_name, value + "\n")

    usr_bin = root / "usr" / "bin"
    usr_bin.mkdir(parents=True, exist_ok=True)
    for tool in sorted(set(faked_tools) | set(ALWAYS_FAKED) | set(image.tools() if image else [])):
        if not _SAFE_TOOL.match(tool):
            continue
        link = usr_bin / tool
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink("/.fleet/fake", link)
    return root, real_null
