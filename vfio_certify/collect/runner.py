"""Collect a host's snapshot in one remote command.

The target is a testinfra host (local://, ssh://, ansible://, ...). Exactly one
remote command is run per collection: the rendered script. It is bounded in time and
output size on this side, and its output is unpacked with the same safety checks as a
customer bundle. The script writes meta.json on the host
(format, the absence convention, the host's clock; see script.py); it is then completed
on this side (`_complete_meta`): hostname and kernel release from the recorded uname output
and the collector's notes are JSON-encoded here, so hostile host text cannot shape it.
"""
from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..snapshot import FORMAT, BundleError, Snapshot, unpack_bundle
from ..snapshot.bundle import read_bundle
from ..snapshot.reader import ABSENCE_PARENT_FOLDER, decode
from ..snapshot.tree import DiskTree, MemoryTree
from .script import BEGIN_MARK, END_MARK, render_script

# Options that keep one dead or hung host from stalling a run; a user's
# --ssh-extra-args replaces them. ansible:// hosts get the keepalives added to theirs.
_KEEPALIVE = "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"
DEFAULT_SSH_EXTRA_ARGS = "-o BatchMode=yes " + _KEEPALIVE


# The whole collection is bounded on the host (when it has `timeout`); the script comes in as $0
# and the SSH session as $1, so this stays one remote command.
COLLECT_TIMEOUT_S = 120
_BOUNDED = ('[ -z "$1" ] || export SSH_CONNECTION="$1"; '
            'if command -v timeout >/dev/null 2>&1; then exec timeout {t} sh -c "$0"; '
            'else exec sh -c "$0"; fi')
# On this side: the host's bound plus the connection and this much.
BOUND_SLACK_S = 15

MAX_OUTPUT_BYTES = 256 << 20  # the script's base64 output (a big host's is a few MiB)
MAX_UNREADABLE_NOTES = 2000  # beyond this, no path is judged absent
MAX_OTHER_NOTES = 50


class CollectError(Exception):
    """The host could not be collected; str() is a one-line reason."""


def _stalled(limit: float) -> CollectError:
    return CollectError(f"no complete answer within {limit:g} s (host stalled; the bound is --connect-timeout + "
                        f"--collect-timeout + {BOUND_SLACK_S} s)")


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
    def bound_s(self) -> float:
        """How long this side waits for the collection: the connection, the host's own bound and some slack."""
        return self.connect_timeout_s + self.collect_timeout_s + BOUND_SLACK_S

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
        # --sudo is not testinfra's: it is put in the remote command (_remote_command).
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


_STDERR = re.compile(r"""_stderr=(b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*")""")
# ansible says why in a warning or error, then adds deprecation warnings: the first line that says why.
_REASONS = ("ERROR", "Unable to parse", "No inventory was parsed", "Could not match", "UNREACHABLE")


def _reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "deprecation" not in ln.lower()]
    for key in _REASONS:
        for line in lines:
            if key in line:
                return re.sub(r"^\[(WARNING|ERROR)\]:\s*", "", line)[:300]
    return _one_line("\n".join(lines))


def _backend_failure(exc: Exception) -> str:
    """One readable line for a testinfra backend's failure (they raise with whole reprs, or
    with a CommandResult)."""
    failed = exc.args[0] if exc.args else None
    if hasattr(failed, "stderr_bytes"):
        return _reason(decode(failed.stderr_bytes or b""))
    text = str(exc)
    missing = re.search(r"(\S+): (?:command )?not found", text)
    if missing:
        return f"{missing.group(1)} not found on this machine (ansible:// hosts need ansible-core: pip install ansible-core)"
    stderr = _STDERR.search(text)
    with contextlib.suppress(ValueError, SyntaxError):
        if stderr:
            return _reason(decode(ast.literal_eval(stderr.group(1))))
    return f"{type(exc).__name__}: {_one_line(text, 200) or 'connection failed'}"


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


def _remote_command(target: Target, sudo: bool, sudo_user: str | None = None) -> str:
    """The one remote command: the script is $0 of a bounded sh, the SSH session its $1. The host's
    login shell expands $SSH_CONNECTION before sudo, whose env_reset would drop it."""
    command = shlex.join(["sh", "-c", _BOUNDED.format(t=int(target.collect_timeout_s)), render_script()])
    command += ' "$SSH_CONNECTION"'
    if sudo:
        command = "sudo " + (f"-u {shlex.quote(sudo_user)} " if sudo_user else "") + command
    return command


def _too_much() -> CollectError:
    return CollectError(f"the host sent more than {MAX_OUTPUT_BYTES >> 20} MiB of output; stopped")


def _read_within(proc: subprocess.Popen, limit: float, started: float | None = None) -> tuple[bytes, bytes]:
    """proc's stdout (at most MAX_OUTPUT_BYTES) and the tail of its stderr, within limit seconds of
    `started` (time.monotonic(), by default now)."""
    stalled = _stalled(limit)
    deadline = (time.monotonic() if started is None else started) + limit
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            ready = selector.select(max(deadline - time.monotonic(), 0))
            if not ready and time.monotonic() >= deadline:
                raise stalled
            for key, _ in ready:
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                key.data.extend(chunk)
            if len(out) > MAX_OUTPUT_BYTES:
                raise _too_much()
            del err[:-65536]  # only its last lines are ever shown
    try:
        proc.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        raise stalled from None
    return bytes(out), bytes(err)


def _run_in_thread(host: Any, command: str, limit: float) -> _Ran:
    """host.run for the backends whose process is not ours to kill (paramiko, safe-ssh, ansible's
    modules), in a daemon thread given up on at the bound: it never blocks the interpreter's exit."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["result"] = host.run(command)
        except BaseException as exc:  # re-raised in the caller
            done["error"] = exc

    worker = threading.Thread(target=run, name="vfio-certify-collect", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise _stalled(limit)
    if "error" in done:
        raise done["error"]
    result = done["result"]
    if len(result.stdout_bytes) > MAX_OUTPUT_BYTES:
        raise _too_much()
    return _Ran(result.rc, result.stdout_bytes, result.stderr_bytes)


def _run_bounded(host: Any, target: Target) -> _Ran:
    """The remote command with a wall-clock and output bound on this side.

    testinfra's run has no timeout: a host that accepts the connection and then stalls would
    hang the run. For local:// and ssh:// (also an ansible:// host that ansible reaches over ssh)
    we start testinfra's own command line ourselves, in its own process group, read at most
    MAX_OUTPUT_BYTES and kill the group when the bound passes.
    """
    running = _start_bounded(host, target)
    if running is None:
        return _run_in_thread(host, _remote_command(target, target.sudo), target.bound_s)
    return running.finish()


def _start_bounded(host: Any, target: Target) -> _Running | None:
    """The collection's command line started (see _run_bounded), or None for a backend whose process is not
    ours to start (paramiko, safe-ssh, ansible's modules: testinfra runs those)."""
    backend, sudo, sudo_user = host.backend, target.sudo, None
    if backend.NAME == "ansible" and not backend.force_ansible:
        inner = backend.ansible_runner.get_host(backend.host, ssh_config=backend.ssh_config,
                                                ssh_identity_file=backend.ssh_identity_file)
        if inner is not None and inner.backend.NAME in ("local", "ssh"):
            backend = inner.backend
            sudo, sudo_user = sudo or backend.sudo, None if sudo else backend.sudo_user  # ansible_become
            if backend.NAME == "ssh":  # the options an ssh:// host gets, where the inventory sets none
                backend.timeout = target.connect_timeout_s
                if "serveralive" not in (backend.ssh_extra_args or "").lower():
                    backend.ssh_extra_args = f"{backend.ssh_extra_args or ''} {_KEEPALIVE}".strip()
    command = _remote_command(target, sudo, sudo_user)
    if backend.NAME == "local":
        shell_command = command
    elif backend.NAME == "ssh":
        cmd, cmd_args = backend._build_ssh_command(command)
        shell_command = backend.quote(" ".join(cmd), *cmd_args)
    else:
        return None
    return _Running(target, _start(shell_command), time.monotonic(), over_ssh=backend.NAME == "ssh")


def _start(shell_command: str) -> subprocess.Popen:
    """The command in its own process group (killed whole at the bound), its output read through pipes."""
    return subprocess.Popen(shell_command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


@dataclass
class _Running:
    """A collection command started at `started` (time.monotonic()), bounded from then on; over ssh, its
    exit status 255 is ssh's own (it could not connect)."""

    target: Target
    proc: subprocess.Popen
    started: float
    over_ssh: bool = False
    _reader: threading.Thread | None = None
    _outcome: list = field(default_factory=list)  # what the reader thread got: [_Ran] or [the exception]

    def finish(self) -> _Ran:
        if self._reader is not None:
            self._reader.join()
            if isinstance(self._outcome[0], BaseException):
                raise self._outcome[0]
            return self._outcome[0]
        return self._read()

    def _read(self) -> _Ran:
        limit = self.target.bound_s
        with self.proc:
            try:
                stdout, stderr = _read_within(self.proc, limit, self.started)
            except BaseException:
                self.stop()
                raise
        ran = _Ran(self.proc.returncode, stdout, stderr)
        if self.over_ssh and ran.rc == 255:
            raise CollectError(_one_line(decode(ran.stderr)) or f"cannot connect to {self.target.spec}")
        return ran

    def read_in_background(self) -> None:
        """Read its output in a thread as it comes (the host never waits on a full pipe); finish() joins it."""
        def read() -> None:
            try:
                self._outcome.append(self._read())
            except BaseException as exc:  # re-raised by finish() in the caller
                self._outcome.append(exc)

        self._reader = threading.Thread(target=read, name="vfio-certify-collect-ahead", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def discard(self) -> None:
        """Stopped, and its process reaped (by its reader thread, when it has one)."""
        self.stop()
        if self._reader is not None:
            self._reader.join()
            return
        with self.proc:
            self.proc.communicate()


# Collections started ahead (start_early, start_ahead), each taken by the first collect_snapshot of its target.
_EARLY: list[_Running] = []
EARLY_NICENESS = 10


def start_early(target: Target) -> None:
    """Start collecting this machine now, while the rest of the run starts up (the judging side's imports);
    collect_snapshot of an equal Target takes the running script over instead of starting its own.
    Only local:// (a plain local shell, no testinfra); discard_early() stops one that nothing took."""
    if target.source != "local":
        raise ValueError(f"only local:// is collected ahead, not {target.spec}")
    proc = _start(_remote_command(target, target.sudo))
    # Behind this process on the CPU: it runs beside the judging side's start-up, which is what the person
    # waits for, and has finished long before the checks need its answer (its children inherit the priority).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PGRP, proc.pid, EARLY_NICENESS)
    _EARLY.append(_Running(target, proc, time.monotonic()))


def start_ahead(target: Target) -> None:
    """Start collecting `target` now, its output read by a thread, while this process judges other hosts;
    collect_snapshot of an equal Target takes it over. Only a command line this side starts (local://,
    ssh://, an ansible:// host reached over ssh); for any other backend, or a target testinfra cannot make
    a host of, nothing starts (its collect_snapshot collects it, and says what failed)."""
    if any(running.target == target for running in _EARLY):
        return
    try:
        running = _start_bounded(target.testinfra_host(), target)
    except Exception:  # noqa: BLE001 -- collect_snapshot reports it, in one line
        return
    if running is not None:
        running.read_in_background()
        _EARLY.append(running)


def discard_early() -> None:
    """Stop the collections started ahead that no collect_snapshot took (a run that judged nothing)."""
    while _EARLY:
        _EARLY.pop().discard()


def _take_early(target: Target) -> _Running | None:
    for running in _EARLY:
        if running.target == target:
            _EARLY.remove(running)
            return running
    return None


def collect_snapshot(target: Target, dest: os.PathLike | str | None = None) -> Snapshot:
    """Collect `target` into the folder `dest` (created); return the snapshot. Without `dest`, the snapshot is
    held in memory only (what a run judges and lets go: nothing of it is written to disk)."""
    early = _take_early(target)
    try:
        result = early.finish() if early is not None else _run_bounded(target.testinfra_host(), target)
    except CollectError:
        raise
    except Exception as exc:  # any backend's connection failure, reported in one line
        raise CollectError(_backend_failure(exc) or f"cannot connect to {target.spec}") from None

    if result.rc == 124:
        raise CollectError(f"collection took longer than {target.collect_timeout_s} s on the host and was stopped "
                           "(--collect-timeout)")
    detail = _one_line(decode(result.stderr or b""))
    if result.rc != 0:
        raise CollectError(f"collection script exited {result.rc}" + (f": {detail}" if detail else ""))
    archive = _payload(result.stdout)
    if not archive:
        raise CollectError("the host sent an empty archive (its tar, gzip or base64 failed)"
                           + (f": {detail}" if detail else ""))

    try:
        if dest is None:
            tree = read_bundle(archive, target.spec)
            _complete_meta(tree)
            return Snapshot.in_memory(tree, target.spec)
        dest = Path(dest)
        with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tmp:
            tmp.write(archive)
            tmp.flush()
            unpack_bundle(tmp.name, dest, shown_as=target.spec)
    except BundleError as exc:
        raise CollectError(f"the host sent a snapshot that was refused: {exc}") from None
    _complete_meta(DiskTree(dest))
    return Snapshot(dest)


def _host_meta(tree: DiskTree | MemoryTree) -> dict:
    """The meta.json the script wrote on the host, {} when it is missing or unusable."""
    data = tree.read("meta.json") if tree.kind("meta.json") == "file" else None
    if data is None:
        return {}
    try:
        meta = json.loads(decode(data).lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _complete_meta(tree: DiskTree | MemoryTree) -> None:
    """Merge into the script's meta.json: what the host wrote stays (absence, collected_at
    from the host's clock); format is ours, hostname and kernel_release come from the
    recorded uname output, the collector's notes are added."""
    def first_line(name: str) -> str:
        rel = f"commands/{name}"
        if tree.kind(rel) == "file":
            text = decode(tree.read(rel) or b"").strip()
            return text.splitlines()[0] if text else ""
        return ""

    meta = _host_meta(tree)
    meta["format"] = FORMAT
    meta["absence"] = ABSENCE_PARENT_FOLDER  # this side sent the script: it probes by that convention
    for key, command in (("hostname", "uname_-n"), ("kernel_release", "uname_-r")):
        meta[key] = first_line(command) or str(meta.get(key) or "")
    if not isinstance(meta.get("collected_at"), str) or not meta["collected_at"]:
        meta["collected_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if tree.kind("notes") == "file":
        # The reader judges a path named in an 'unreadable: ' note not collected (never absent): keep them all.
        lines = decode(tree.read("notes") or b"").splitlines()
        unreadable = [ln for ln in lines if ln.startswith("unreadable: ")]
        notes = [ln for ln in lines if not ln.startswith("unreadable: ")][:MAX_OTHER_NOTES]
        if len(unreadable) > MAX_UNREADABLE_NOTES:
            del meta["absence"]
            notes.append(f"{len(unreadable)} paths unreadable, the first {MAX_UNREADABLE_NOTES} listed:"
                         " no missing path is judged absent")
        meta["collector_notes"] = notes + unreadable[:MAX_UNREADABLE_NOTES]
        tree.remove("notes")
    tree.remove("meta.json")  # never written through a link the host sent
    tree.add_file("meta.json", (json.dumps(meta, indent=2) + "\n").encode())
