"""Collect a host's snapshot in one remote command.

The target is a testinfra host (local://, ssh://, ansible://, ...). Exactly one
`host.run` is made per collection: the rendered script. Its output is unpacked with
the same safety checks as a customer bundle. The script writes meta.json on the host
(format, the absence convention, the host's clock; see script.py); it is then completed
on this side (`_write_meta`): hostname and kernel release from the recorded uname output
and the collector's notes are JSON-encoded here, so hostile host text cannot shape it.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..snapshot import FORMAT, BundleError, Snapshot, unpack_bundle
from ..snapshot.reader import ABSENCE_PARENT_FOLDER, decode
from .script import BEGIN_MARK, END_MARK, render_script

# Options that keep one dead or hung host from stalling a run; a user's
# --ssh-extra-args replaces them.
DEFAULT_SSH_EXTRA_ARGS = "-o BatchMode=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=3"


# The whole collection is bounded on the host (when it has `timeout`); the script comes in as $0,
# so this stays one remote command.
COLLECT_TIMEOUT_S = 120
_BOUNDED = ('if command -v timeout >/dev/null 2>&1; then exec timeout {t} sh -c "$0"; '
            'else exec sh -c "$0"; fi')


class CollectError(Exception):
    """The host could not be collected; str() is a one-line reason."""


@dataclass
class Target:
    """A host as named on the command line, and how to reach it."""

    spec: str  # "local://", "ssh://root@kvm1", "ansible://kvm1"
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    ssh_extra_args: str | None = None
    ansible_inventory: str | None = None
    sudo: bool = False
    connect_timeout_s: int = 10
    collect_timeout_s: int = COLLECT_TIMEOUT_S

    @property
    def source(self) -> str:
        scheme = self.spec.split("://", 1)[0] if "://" in self.spec else "ssh"
        return "local" if scheme == "local" else scheme

    def testinfra_host(self) -> Any:
        import testinfra  # imported late: plain snapshot judging does not need it

        put_venv_on_path()

        kwargs: dict[str, Any] = {}
        if self.source in ("ssh", "paramiko", "safe-ssh"):
            kwargs.update(
                ssh_config=self.ssh_config,
                ssh_identity_file=self.ssh_identity_file,
                ssh_extra_args=self.ssh_extra_args or DEFAULT_SSH_EXTRA_ARGS,
                timeout=self.connect_timeout_s,
            )
        if self.source == "ansible" and self.ansible_inventory:
            kwargs["ansible_inventory"] = self.ansible_inventory
        if self.sudo:
            kwargs["sudo"] = True
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return testinfra.get_host(self.spec, **kwargs)


def put_venv_on_path() -> None:
    """Tools installed beside this Python (ansible-inventory, ansible) must be found by
    testinfra even when the venv is not activated."""
    venv_bin = os.path.dirname(sys.executable)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line[:limit]


def _backend_failure(exc: Exception) -> str:
    """One readable line for a testinfra backend's failure (they raise with whole reprs)."""
    text = str(exc)
    missing = re.search(r"(\S+): (?:command )?not found", text)
    if missing:
        return f"{missing.group(1)} not found on this machine (ansible:// hosts need ansible-core: pip install ansible-core)"
    stderr = re.search(r"_stderr=b['\"](.*?)['\"]\)", text)
    detail = stderr.group(1).encode().decode("unicode_escape") if stderr else text
    return f"{type(exc).__name__}: {_one_line(detail, 200) or 'connection failed'}"


def _payload(stdout: bytes) -> bytes:
    text = stdout.decode("ascii", errors="replace")
    begin = text.find(BEGIN_MARK)
    end = text.find(END_MARK, begin + 1)
    if begin < 0 or end < 0:
        raise CollectError("the collection script's output was cut short (no end marker)")
    try:
        return base64.b64decode(text[begin + len(BEGIN_MARK) : end])
    except (binascii.Error, ValueError):
        raise CollectError("the collection script's output is not valid base64") from None


@dataclass
class _Ran:
    rc: int
    stdout: bytes
    stderr: bytes


def _run_bounded(host: Any, target: Target, command: str, *args: str) -> _Ran:
    """host.run with a wall-clock bound on this side, for the backends that run a local process.

    testinfra's run has no timeout: a host that accepts the connection and then stalls would
    hang the run. For local:// and ssh:// we start testinfra's own command line ourselves,
    in its own process group, and kill the group when the bound passes.
    """
    backend = host.backend
    limit = target.connect_timeout_s + target.collect_timeout_s + 15
    if backend.NAME == "local":
        shell_command = backend.get_command(command, *args)
    elif backend.NAME == "ssh":
        cmd, cmd_args = backend._build_ssh_command(backend.get_command(command, *args))
        shell_command = backend.quote(" ".join(cmd), *cmd_args)
    else:
        result = host.run(command, *args)
        return _Ran(result.rc, result.stdout_bytes, result.stderr_bytes)
    proc = subprocess.Popen(shell_command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CollectError(f"no complete answer within {limit} s (host stalled)") from None
    if backend.NAME == "ssh" and proc.returncode == 255:
        raise CollectError(_one_line(decode(stderr)) or f"cannot connect to {target.spec}")
    return _Ran(proc.returncode, stdout, stderr)


def collect_snapshot(target: Target, dest: os.PathLike | str) -> Snapshot:
    """Collect `target` into the folder `dest` (created); return the snapshot."""
    dest = Path(dest)
    try:
        host = target.testinfra_host()
        result = _run_bounded(host, target, "sh -c %s %s", _BOUNDED.format(t=int(target.collect_timeout_s)),
                              render_script())
    except CollectError:
        raise
    except RuntimeError as exc:  # testinfra's ssh backends: ssh itself failed (rc 255)
        failed = exc.args[0] if exc.args else None
        detail = _one_line(decode(getattr(failed, "stderr_bytes", b"") or b"")) if failed else ""
        raise CollectError(detail or f"cannot connect to {target.spec}") from None
    except Exception as exc:  # any backend's connection failure, reported in one line
        raise CollectError(_backend_failure(exc)) from None

    if result.rc == 124:
        raise CollectError(f"collection took longer than {target.collect_timeout_s} s on the host and was stopped")
    if result.rc != 0:
        detail = _one_line(decode(result.stderr or b""))
        raise CollectError(f"collection script exited {result.rc}" + (f": {detail}" if detail else ""))
    archive = _payload(result.stdout)

    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tmp:
        tmp.write(archive)
        tmp.flush()
        try:
            unpack_bundle(tmp.name, dest)
        except BundleError as exc:
            raise CollectError(f"the host sent a snapshot that was refused: {exc}") from None
    _write_meta(dest)
    return Snapshot(dest)


def _host_meta(dest: Path) -> dict:
    """The meta.json the script wrote on the host, {} when it is missing or unusable."""
    path = dest / "meta.json"
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        meta = json.loads(decode(path.read_bytes()).lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(dest: Path) -> None:
    """Merge into the script's meta.json: what the host wrote stays (absence, collected_at
    from the host's clock); format is ours, hostname and kernel_release come from the
    recorded uname output, the collector's notes are added."""
    def first_line(name: str) -> str:
        path = dest / "commands" / name
        if path.is_file() and not path.is_symlink():
            text = decode(path.read_bytes()).strip()
            return text.splitlines()[0] if text else ""
        return ""

    meta = _host_meta(dest)
    meta["format"] = FORMAT
    meta["absence"] = ABSENCE_PARENT_FOLDER  # this side sent the script: it probes by that convention
    for key, command in (("hostname", "uname_-n"), ("kernel_release", "uname_-r")):
        meta[key] = first_line(command) or str(meta.get(key) or "")
    if not isinstance(meta.get("collected_at"), str) or not meta["collected_at"]:
        meta["collected_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    notes_path = dest / "notes"
    if notes_path.is_file():
        meta["collector_notes"] = decode(notes_path.read_bytes()).splitlines()[:50]
        notes_path.unlink()
    meta_path = dest / "meta.json"
    if meta_path.is_symlink() or meta_path.is_file():
        meta_path.unlink()  # never written through a link the host sent
    elif meta_path.is_dir():
        shutil.rmtree(meta_path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
