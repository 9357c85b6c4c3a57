"""Namespace holder for the lab daemons (stdlib only; run by daemons.py as
``unshare --mount --propagation private python3 _nsholder.py SPEC.json``).

Inside the fresh mount namespace it:

1. makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the
   daemonised virtlogd/libvirtd and the QEMU processes libvirtd daemonises are
   re-parented to it and reaped here (this machine's PID 1 reaps nothing);
2. asks for SIGTERM when its parent (the test process) dies
   (``PR_SET_PDEATHSIG``) -- a crashed or killed test run still tears the lab
   down;
3. bind-mounts the lab's directories, starts ``virtlogd -d`` and
   ``libvirtd -d``, prints ``READY <virtlogd pid> <libvirtd pid>``;
4. on SIGTERM/SIGINT/SIGHUP: SIGTERM libvirtd, then virtlogd, then every other
   process in the namespace; SIGKILL whatever is left after a grace period;
   reaps everything; exits.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def log(msg):
    sys.stderr.write(f"nsholder[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def in_namespace(ns):
    me = os.getpid()
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) != me:
            try:
                if os.readlink(f"/proc/{e}/ns/mnt") == ns and alive(int(e)):
                    out.append(int(e))
            except OSError:
                pass
    return out


def terminate(pids, grace):
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not any(alive(p) for p in pids):
            return
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            log(f"SIGKILL {p}")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        reap()
        time.sleep(0.05)
    reap()


def main():
    spec = json.load(open(sys.argv[1]))
    parent = spec["parent"]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # parent died before PDEATHSIG was armed
        return 1

    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    ns = os.readlink("/proc/self/ns/mnt")
    if ns == spec["host_ns"]:  # never run (or kill) in the host's namespace
        print("FAILED not in a private mount namespace", flush=True)
        return 1
    pids = {}
    try:
        for src, dst in spec["mounts"]:
            subprocess.run([spec["mount"], "--bind", src, dst], check=True)
        for name in ("virtlogd", "libvirtd"):
            pidfile = f"/run/{name}.pid"
            subprocess.run([spec[name], "-d", "-p", pidfile,
                            "-f", f"/etc/libvirt/{name}.conf"], check=True)
            with open(pidfile) as f:
                pids[name] = int(f.read().strip())
        print(f"READY {pids['virtlogd']} {pids['libvirtd']}", flush=True)
    except Exception as exc:  # report, then fall through to teardown
        print(f"FAILED {exc}", flush=True)
        stopping.append(0)

    while not stopping:
        reap()
        time.sleep(0.1)

    # teardown: libvirtd first (it may still be talking to QEMU/virtlogd)
    grace = float(spec.get("grace", 5.0))
    for name in ("libvirtd", "virtlogd"):
        if name in pids and alive(pids[name]):
            terminate([pids[name]], grace)
    rest = in_namespace(ns)
    if rest:
        log(f"terminating leftovers {rest}")
        terminate(rest, grace)
    reap()
    left = in_namespace(ns)
    if left:
        log(f"still alive: {left}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
