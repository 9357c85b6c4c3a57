"""The collection's failure modes, against fake hosts over real SSH (tests/support/fleet).

Hosts that lack a tool, stall, run the script through sudo or without root, hang up
mid-output, or send too much: each is reported in one line, bounded in time and size,
and the host is left as it was (nothing in its /tmp or /dev/shm, nothing written through a link).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from vfio_certify.collect import CollectError, Target, collect_snapshot
from vfio_certify.collect import runner, spec
from vfio_certify.collect.script import render_script
from vfio_certify.snapshot import BundleError, Snapshot, bundle, unpack_bundle
from vfio_certify.snapshot.reader import PathState
from vfio_certify.snapshot.tree import DiskTree

try:
    from support.fleet import FleetHost, LoopbackFleet
    from support.script_parts import links_body, shell_functions, sysfs_links
except ImportError:
    from tests.support.fleet import FleetHost, LoopbackFleet
    from tests.support.script_parts import links_body, shell_functions, sysfs_links

HAS_ANSIBLE = (Path(sys.executable).parent / "ansible").exists()
USB = "sys/bus/usb/devices/1-1 [x]"  # a space and a glob in a sysfs name
GPU = "sys/bus/pci/devices/0000:01:00.0"


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _snapshot(dest: Path, cpuinfo: bytes = b"processor\t: 0\n") -> Path:
    _write(dest / "meta.json", json.dumps({"format": "host-snapshot/1", "hostname": dest.name,
                                           "kernel_release": "6.1.0-18-amd64"}))
    root = dest / "root"
    _write(root / "proc/cmdline", "BOOT_IMAGE=/vmlinuz ro intel_iommu=on\n")
    _write(root / "proc/cpuinfo", cpuinfo)
    for i in range(60):
        _write(root / f"etc/modprobe.d/m{i:02}.conf", f"options m{i} x=1\n")
    for attr, value in (("vendor", "0x10de"), ("device", "0x1eb8"), ("class", "0x030200")):
        _write(root / GPU / attr, value + "\n")
    for attr, value in (("idVendor", "152d"), ("idProduct", "9561"), ("product", "USB disk")):
        _write(root / USB / attr, value + "\n")
    (root / "sys/class/iommu/dmar [0]").mkdir(parents=True)
    _write(dest / "commands/uname_-r", "6.1.0-18-amd64\n")
    return dest


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    reason = LoopbackFleet.unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("snapshots")
    plain = _snapshot(base / "plain")
    big = _snapshot(base / "big", cpuinfo=os.urandom(3 << 20))  # ~4 MiB of base64, incompressible
    with LoopbackFleet([FleetHost("plain", plain), FleetHost("big", big),
                        FleetHost("nob64", plain), FleetHost("nomktemp", plain),
                        FleetHost("nobody", _snapshot(base / "nobody"), user="65534:65534"),
                        FleetHost("sidebyside", plain), FleetHost("hung", plain), FleetHost("hung-in-mkdir", plain),
                        FleetHost("overdue", plain), FleetHost("nosleep", plain), FleetHost("where", plain),
                        FleetHost.slow("stall", plain, delay_s=float("inf"))]) as fleet:
        os.unlink(fleet.root("nob64") / "bin/base64")
        os.unlink(fleet.root("nomktemp") / "bin/mktemp")
        os.unlink(fleet.root("overdue") / "bin/timeout")  # the commands' bound needs no `timeout` on the host
        os.unlink(fleet.root("nosleep") / "bin/sleep")
        # where the private folder is: lsusb lists the folders a collection has made, while it runs
        lsusb = fleet.root("where") / "usr/bin/lsusb"
        lsusb.unlink()
        lsusb.write_text("#!/bin/sh\nls -d /dev/shm/*/commands /tmp/*/commands /scratch/*/commands 2>/dev/null\n")
        lsusb.chmod(0o755)
        (fleet.root("where") / "scratch").mkdir(mode=0o1777)
        sudo = fleet.root("plain") / "bin/sudo"  # like sudo's env_reset: the session's environment is gone
        sudo.write_text('#!/bin/sh\nexec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"\n')
        sudo.chmod(0o755)
        root = fleet.root("nobody")
        for path in [*root.glob("etc/modprobe.d/*.conf"), root / GPU / "vendor", root / USB / "product"]:
            path.chmod(0)
        yield fleet
    # Also the stalled logins' sessions are gone: stopped, a process still takes a moment to exit on a busy machine
    # (busybox's `timeout` looks at its command once a second).
    deadline = time.monotonic() + 10
    while fleet.leftover_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not fleet.leftover_pids(), _describe(fleet.leftover_pids())


def _describe(pids) -> str:
    """The command lines of the processes left behind, for the assertion's message."""
    lines = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                lines.append(f"{pid}: " + cmdline.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            lines.append(f"{pid}: (gone)")
    return "left running: " + "; ".join(lines)


def collect(fleet, name, dest, **kw):
    return collect_snapshot(Target(fleet.urls[name], ssh_config=fleet.ssh_config, **kw), dest)


def left_on_host(fleet, name):
    """What is in the host's /tmp and /dev/shm (where the script's private folder goes, in memory, when it can)."""
    return sorted(str(p.relative_to(fleet.root(name))) for d in ("tmp", "dev/shm") for p in (fleet.root(name) / d).iterdir())


def run_in_root(root: Path, shell: str = "/bin/sh", script: str | None = None, args: tuple[str, ...] = (),
                env: dict[str, str] | None = None, **kw):
    """The script run straight in a fake root (no SSH), stdout a pipe; `args` its $0 and on (a FILE to write the
    bundle to), `env` added to its PATH."""
    return subprocess.Popen(["chroot", str(root), *shell.split(), "-c", script or render_script(), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}, **kw)


# -- 1. --sudo keeps the SSH session ------------------------------------------------


def test_sudo_still_records_the_ssh_session(fleet, tmp_path):
    snap = collect(fleet, "plain", tmp_path / "s", sudo=True)
    [command] = fleet.remote_commands("plain")[-1:]
    assert command.split(" ", 1)[1].startswith("sudo ")
    session = snap.command("printenv SSH_CONNECTION").stdout.split()
    assert session[2:] == [fleet.address("plain"), str(fleet.port("plain"))]
    assert left_on_host(fleet, "plain") == []


# -- 2. a host that accepts the connection and stalls -------------------------------


def test_the_command_bounds_a_stalled_host_by_its_two_timeouts(fleet, tmp_path):
    """--connect-timeout 2 --collect-timeout 3: given up after 2 + 3 + 15 s, reported unreachable, the run goes on."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--host", fleet.urls["stall"],
                           "--ssh-config", fleet.ssh_config, "--connect-timeout", "2", "--collect-timeout", "3",
                           "--output", tmp_path / "out"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    elapsed = time.monotonic() - started
    [host] = json.loads((tmp_path / "out" / "summary.json").read_text())["hosts"]
    assert proc.returncode == 3 and host["verdict"] == "unreachable", proc.stdout[-2000:]
    message = host["checks"][0]["message"]
    assert "within 20 s (host stalled; the bound is --connect-timeout + --collect-timeout + 15 s)" in message
    assert 20 <= elapsed < 60


@pytest.mark.parametrize("how", ["ansible", "safe-ssh"])
def test_a_stalled_host_is_given_up_on(fleet, monkeypatch, how):
    if how == "ansible" and not HAS_ANSIBLE:
        pytest.skip("needs ansible-core in the venv")
    monkeypatch.setattr(runner, "BOUND_SLACK_S", 1, raising=False)
    address, port = fleet.address("stall"), fleet.port("stall")
    if how == "ansible":
        target = Target("ansible://stall", ansible_inventory=fleet.ansible_inventory)
    else:
        target = Target(f"safe-ssh://root@{address}:{port}", ssh_config=fleet.ssh_config)
    target.connect_timeout_s = target.collect_timeout_s = 2
    started = time.monotonic()
    with pytest.raises(CollectError) as failed:
        collect_snapshot(target, "/nonexistent/never-written")
    assert "within 5 s (host stalled; the bound is --connect-timeout + --collect-timeout + 1 s)" in str(failed.value)
    assert time.monotonic() - started < 15


@pytest.mark.skipif(not HAS_ANSIBLE, reason="needs ansible-core in the venv")
def test_ansible_host_collects_in_one_command_with_keepalives(fleet, tmp_path):
    before = len(fleet.remote_commands("plain"))
    snap = collect_snapshot(Target("ansible://plain", ansible_inventory=fleet.ansible_inventory), tmp_path / "a")
    assert snap.read_value(f"/{GPU}/vendor") == "0x10de"
    assert len(fleet.remote_commands("plain")) == before + 1
    from testinfra.utils.ansible_runner import AnsibleRunner
    inner = AnsibleRunner.get_runner(fleet.ansible_inventory).get_host("plain")
    assert "ServerAliveInterval" in inner.backend.ssh_extra_args


# -- 3. output and bundle sizes ------------------------------------------------------


def test_output_beyond_the_bound_is_refused(fleet, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "MAX_OUTPUT_BYTES", 1 << 20, raising=False)
    with pytest.raises(CollectError) as failed:
        collect(fleet, "big", tmp_path / "s")
    assert "more than 1 MiB" in str(failed.value) and "\n" not in str(failed.value)
    collect(fleet, "plain", tmp_path / "small")  # the same bound lets a small host through


def _tar_gz(path: Path, members: dict[str, int]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_gzip_bomb_is_refused_before_anything_is_unpacked(tmp_path):
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", {"s/meta.json": 2, "s/root/proc/cpuinfo": bundle.MAX_MEMBER_BYTES + 1})
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(BundleError) as refused:
        unpack_bundle(bomb, tmp_path / "out")
    assert "'s/root/proc/cpuinfo'" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_bundle_total_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", 1 << 20)
    many = _tar_gz(tmp_path / "many.tar.gz", {f"s/root/f{i}": 400 << 10 for i in range(3)})
    with pytest.raises(BundleError) as refused:
        unpack_bundle(many, tmp_path / "out")
    assert "'s/root/f2'" in str(refused.value) and "1 MiB" in str(refused.value)
    assert not (tmp_path / "out").exists()


# -- 4. a host without a tool the script needs ----------------------------------------


def test_missing_base64_is_named(fleet, tmp_path):
    with pytest.raises(CollectError) as failed:
        collect(fleet, "nob64", tmp_path / "s")
    assert str(failed.value) == "collection script exited 69: base64 not found on the host"
    assert left_on_host(fleet, "nob64") == []


# -- 5. no mktemp: a private folder, never one planted beforehand ---------------------


def test_without_mktemp_a_planted_link_is_refused(fleet, tmp_path):
    root = fleet.root("nomktemp")
    (root / "victim").mkdir()

    def plant():  # in the child, before chroot execs the shell: $$ is this pid
        os.symlink("/victim", f"{root}/tmp/vfio-certify.{os.getpid()}")

    proc = run_in_root(root, preexec_fn=plant)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 70 and b"vfio-certify." in err.splitlines()[-1]
    assert list((root / "victim").iterdir()) == []
    for link in (root / "tmp").iterdir():
        assert link.is_symlink()
        link.unlink()
    collect(fleet, "nomktemp", tmp_path / "s")  # the fallback folder works, and is removed
    assert left_on_host(fleet, "nomktemp") == []


def test_without_mktemp_the_folder_goes_in_tmpdir_when_the_user_set_one(fleet):
    root = fleet.root("nomktemp")
    scratch = root / "scratch"
    scratch.mkdir(mode=0o1777, exist_ok=True)

    def plant():  # where the script must make its folder: a link planted there shows that it tried that path
        os.symlink("/nowhere", f"{scratch}/vfio-certify.{os.getpid()}")

    proc = run_in_root(root, env={"TMPDIR": "/scratch"}, preexec_fn=plant)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 70 and err.splitlines()[-1] == (
        f"cannot create the private folder /scratch/vfio-certify.{proc.pid}".encode())
    for link in scratch.iterdir():
        link.unlink()
    proc = run_in_root(root, env={"TMPDIR": "/scratch"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"vfio-certify snapshot end" in out, err
    assert list(scratch.iterdir()) == [] and left_on_host(fleet, "nomktemp") == []
    scratch.rmdir()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted on `path` for the block (a file system that is nearly full, or fills up)."""
    path.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a {size} tmpfs needs CAP_SYS_ADMIN: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def run_where(root: Path, tmpdir: str | None = None) -> subprocess.CompletedProcess:
    """The script in the host "where" (its lsusb lists the folders a collection has made), writing /snapshot.tgz."""
    proc = run_in_root(root, args=("sh", "/snapshot.tgz"), env={"TMPDIR": tmpdir} if tmpdir else None)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("case", ["/dev/shm", "no /dev/shm", "/dev/shm under 64 MiB free", "TMPDIR"])
def test_the_private_folder_is_in_memory_where_the_host_has_dev_shm(fleet, case):
    """In /dev/shm (a tmpfs: nothing written to the host's disks) when it has room, else in /tmp; in $TMPDIR when
    the user set it."""
    root = fleet.root("where")
    shm, aside = root / "dev/shm", root / "dev/shm-aside"
    with contextlib.ExitStack() as stack:
        if case == "no /dev/shm":
            shm.rename(aside)
            stack.callback(aside.rename, shm)
        elif case == "/dev/shm under 64 MiB free":
            stack.enter_context(small_tmpfs(shm, "60m"))
        proc = run_where(root, "/scratch" if case == "TMPDIR" else None)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(root / "snapshot.tgz") as bundle:
        [seen] = bundle.extractfile("commands/lsusb").read().decode().split()
    (root / "snapshot.tgz").unlink()
    expected = {"/dev/shm": "/dev/shm/", "TMPDIR": "/scratch/"}.get(case, "/tmp/")
    assert seen.startswith(expected) and seen.endswith("/commands"), seen
    assert left_on_host(fleet, "where") == [] and list((root / "scratch").iterdir()) == []


def test_a_private_folder_that_fills_up_sends_nothing_and_says_where(fleet):
    """A file system that fills up cuts files short without a word from the commands that wrote them: the script
    sends no snapshot, exits 75, and its last line names the folder; nothing is left."""
    root = fleet.root("where")
    with small_tmpfs(root / "full", "64k"):
        proc = run_where(root, "/full")
        left = list((root / "full").iterdir())
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.decode().splitlines()[-1] == "no space left in /full"
    assert not (root / "snapshot.tgz").exists()
    assert left == [] and left_on_host(fleet, "where") == []


# -- 6. a hang-up mid-output ---------------------------------------------------------


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/busybox sh"])
def test_hang_up_mid_output_leaves_nothing(fleet, shell):
    proc = run_in_root(fleet.root("big"), shell)
    assert len(proc.stdout.read(65536)) == 65536
    proc.stdout.close()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert left_on_host(fleet, "big") == []


# -- 7. ansible's own reasons --------------------------------------------------------


@pytest.mark.skipif(not HAS_ANSIBLE, reason="needs ansible-core in the venv")
def test_missing_inventory_says_so(tmp_path):
    with pytest.raises(CollectError) as failed:
        collect_snapshot(Target("ansible://kvm1", ansible_inventory=str(tmp_path / "missing.ini")), tmp_path / "s")
    message = str(failed.value)
    assert "missing.ini" in message and "inventory" in message and "\n" not in message


# -- 8, 9. unreadable files and attributes are noted, all of them --------------------


def test_every_unreadable_path_is_noted(fleet, tmp_path):
    snap = collect(fleet, "nobody", tmp_path / "s")
    notes = json.loads((tmp_path / "s/meta.json").read_text())["collector_notes"]
    expected = {f"unreadable: /etc/modprobe.d/m{i:02}.conf" for i in range(60)}
    expected |= {f"unreadable: /{GPU}/vendor", f"unreadable: /{USB}/product"}
    assert expected <= set(notes)
    for path in ("/etc/modprobe.d/m59.conf", f"/{GPU}/vendor", f"/{USB}/product"):
        assert snap.state(path) is PathState.NOT_COLLECTED, path
    assert snap.read_value(f"/{GPU}/device") == "0x1eb8"
    assert left_on_host(fleet, "nobody") == []


def test_too_many_unreadable_paths_judge_nothing_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "MAX_UNREADABLE_NOTES", 3, raising=False)
    dest = tmp_path / "s"
    (dest / "root/etc").mkdir(parents=True)
    (dest / "meta.json").write_text('{"format": "host-snapshot/1", "absence": "parent-folder"}')
    (dest / "notes").write_text("".join(f"unreadable: /etc/f{i}\n" for i in range(5)))
    runner._complete_meta(DiskTree(dest))
    snap = Snapshot(dest)
    assert snap.state("/etc/f4") is PathState.NOT_COLLECTED
    assert snap.state("/etc/never-there") is PathState.NOT_COLLECTED


# -- 10. sysfs names are never split or globbed --------------------------------------


def test_names_with_spaces_and_globs_are_collected(fleet, tmp_path):
    snap = collect(fleet, "plain", tmp_path / "s")
    assert snap.read_value(f"/{USB}/idVendor") == "152d"
    assert snap.read_value(f"/{USB}/product") == "USB disk"
    assert snap.is_dir("/sys/class/iommu/dmar [0]")
    assert not (fleet.root("plain") / "[x]").exists()


# -- 11. the commands run side by side, each storing only its own files ------------


def _tool(root: Path, name: str, body: str) -> None:
    """A command of the fake host, ahead of its recorded ones on the script's PATH."""
    _write(root / "usr/sbin" / name, "#!/bin/sh\n" + body)
    (root / "usr/sbin" / name).chmod(0o755)


def _unpacked(stdout: bytes, dest: Path) -> Path:
    bundle_file = dest.with_suffix(".tar.gz")
    bundle_file.write_bytes(runner._payload(stdout))
    return unpack_bundle(bundle_file, dest)


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/busybox sh"])
def test_commands_run_side_by_side_and_keep_their_own_output_and_status(fleet, shell, tmp_path):
    root = fleet.root("sidebyside")
    # lspci is declared before virsh: run one after the other, it would wait for virsh in vain
    _tool(root, "lspci", 'i=0; while [ ! -e /.virsh-started ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n'
                         '[ -e /.virsh-started ] || { echo alone; exit 3; }\necho "virsh started meanwhile"\n')
    _tool(root, "virsh", ': > /.virsh-started\ncase "$*" in\n'
                         '  "list --all --name") echo vm1 ;;\n'
                         '  "dumpxml vm1") echo "<domain><name>vm1</name></domain>" ;;\n'
                         '  *) echo "virsh $*"; echo "virsh warns: $*" >&2; exit 2 ;;\nesac\n')
    _tool(root, "ps", '[ -e /.virsh-started ] && echo "beside virsh" || echo alone\n')  # runs alone, first
    (root / ".virsh-started").unlink(missing_ok=True)
    proc = run_in_root(root, shell)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    commands = _unpacked(out, tmp_path / "s") / "commands"
    assert (commands / "lspci_-nnk").read_text() == "virsh started meanwhile\n"
    assert not (commands / "lspci_-nnk.rc").exists() and not (commands / "lspci_-nnk.err").exists()
    assert (commands / "ps_-eo_pid,args").read_text() == "alone\n"
    for name in ("virsh_version", "virsh_domcapabilities", "virsh_list_--all"):
        line = name.replace("_", " ")
        assert (commands / name).read_text() == line + "\n"
        assert (commands / f"{name}.err").read_text() == f"virsh warns: {line[len('virsh '):]}\n"
        assert (commands / f"{name}.rc").read_text() == "2\n"
    # the names were listed before dumpxml ran for them
    assert (commands / "virsh_dumpxml_vm1").read_text() == "<domain><name>vm1</name></domain>\n"
    assert left_on_host(fleet, "sidebyside") == []


def _running_in(root: Path) -> list[str]:
    """The command lines of the live processes chroot'ed into root."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or not os.readlink(f"/proc/{entry}/root").startswith(str(root)):
                continue
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found.append(cmdline.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def _wait_for(mark: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _stop_and_expect_nothing_left(fleet, name: str, proc, within_s: float) -> None:
    """Stop the script: it exits 130 within within_s, leaves no folder and, soon, no command running."""
    proc.terminate()
    proc.communicate(timeout=within_s)
    assert proc.returncode == 130
    assert left_on_host(fleet, name) == []
    root = fleet.root(name)
    deadline = time.monotonic() + 5  # busybox's timeout watches its command once a second
    while _running_in(root):
        assert time.monotonic() < deadline, f"the stopped script left commands running: {_running_in(root)}"
        time.sleep(0.1)


def test_stopped_while_its_folders_are_made_it_still_stops_its_commands(fleet):
    """A stop that finds the script in one of its batched mkdirs (field splitting on newlines only): the stopped
    script still stops its running commands, instead of waiting for them (`timeout` ends them after 30 s).
    dash only: busybox's sh runs mkdir as its own applet, never the one on PATH, so it cannot be held there."""
    shell = "/bin/sh"
    root = fleet.root("hung-in-mkdir")
    for mark in (".lspci-started", ".mkdir-started"):
        (root / mark).unlink(missing_ok=True)
    _tool(root, "lspci", ": > /.lspci-started\nexec sleep 60\n")
    # the batched mkdirs are `mkdir -p -- FOLDERS` (with the newline-only IFS); the first one waits
    _tool(root, "mkdir", 'case "$1 $2" in "-p --") [ -e /.mkdir-started ] || { : > /.mkdir-started; sleep 2; } ;; esac\n'
                         'exec /bin/mkdir "$@"\n')
    proc = run_in_root(root, shell)
    _wait_for(root / ".mkdir-started", "the batched mkdir never ran")
    assert (root / ".lspci-started").exists()  # started before the folders are made
    _stop_and_expect_nothing_left(fleet, "hung-in-mkdir", proc, within_s=15)


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/busybox sh"])
def test_stopped_mid_command_it_stops_its_commands_and_leaves_nothing(fleet, shell):
    root = fleet.root("hung")
    started = root / ".lspci-started"
    started.unlink(missing_ok=True)
    _tool(root, "lspci", ": > /.lspci-started\nexec sleep 60\n")
    proc = run_in_root(root, shell)
    _wait_for(started, "lspci never started")
    _stop_and_expect_nothing_left(fleet, "hung", proc, within_s=30)


# -- 12. one watchdog bounds the commands ------------------------------------------------


def _members(folder: Path) -> dict[str, bytes | str]:
    """A snapshot folder's files (their bytes), links (their targets) and folders, by relative path."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = ("-> " + os.readlink(path) if path.is_symlink() else "folder" if path.is_dir()
                       else path.read_bytes())
    return found


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/busybox sh"])
def test_a_command_over_its_bound_is_stopped_with_124_and_the_rest_is_collected(fleet, shell, tmp_path):
    """Hung commands (killable, as `timeout` needs them too) on a host without `timeout`: the one that runs alone
    first, two of those run side by side and the first of a job (virsh's names, then a dumpxml each) are stopped
    at the bound, each with exit status 124; the job runs nothing after it; everything else is as collected from
    the same host without the hangs."""
    expected = _members(_unpacked(_finished(run_in_root(fleet.root("plain"), shell)), tmp_path / "expected"))
    root = fleet.root("overdue")
    for hung in ("ps", "lspci"):
        _tool(root, hung, "exec sleep 60\n")
    # the names of the domains come, then virsh hangs; unrecorded, the other virsh commands are not found, as on "plain"
    _tool(root, "virsh", 'case "$*" in "list --all --name") echo vm1; exec sleep 60 ;; esac\n'
                         'echo "sh: virsh: not found" >&2; exit 127\n')
    started = time.monotonic()
    proc = run_in_root(root, shell, render_script(command_timeout_s=2))
    got = _members(_unpacked(_finished(proc), tmp_path / "s"))
    elapsed = time.monotonic() - started
    print("ELAPSED", elapsed); assert 4 <= elapsed < 15  # two bounds: the command run alone, then those run side by side
    stopped = {"ps_-eo_pid,args": b"", "lspci_-nnk": b"", "lspci_-vvv": b"", "virsh_list_--all_--name": b"vm1\n"}
    for name, output in stopped.items():
        assert (got.pop(f"commands/{name}"), got.pop(f"commands/{name}.rc")) == (output, b"124\n"), name
        for suffix in ("", ".rc", ".err"):
            expected.pop(f"commands/{name}{suffix}", None)
    assert not [name for name in got if "dumpxml" in name]  # the job stopped: vm1's XML was not asked for
    del got["meta.json"], expected["meta.json"]  # collected_at
    assert got == expected
    assert not _running_in(root), "the stopped commands are gone"
    assert left_on_host(fleet, "overdue") == []


def _finished(proc) -> bytes:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def test_without_sleep_on_the_host_the_commands_run_unbounded_and_are_collected(fleet, tmp_path):
    snap = collect(fleet, "nosleep", tmp_path / "s")
    assert snap.read_text("/proc/cmdline") == "BOOT_IMAGE=/vmlinuz ro intel_iommu=on\n"
    assert snap.command("uname -r").stdout == "6.1.0-18-amd64\n"
    assert left_on_host(fleet, "nosleep") == []


# -- 13. sysfs attributes are copied byte for byte, by builtins where a file is one line -------------


@pytest.mark.parametrize("shell", ["dash", "busybox sh"])
def test_attributes_are_copied_byte_for_byte_whatever_their_lines(shell, tmp_path):
    values = {"one": b"0x10de\n", "spaces": b"  USB \\t disk \r\n", "lines": b"Acme\nInc\n", "noeol": b"noeol",
              "empty": b"", "blank": b"\n", "bytes": b"\xff\xfe caf\xc3\xa9\n"}
    text = {"product": b"\xff\xfeKbd\x00\x00 \xc3\x28\n"}  # a device's string, NULs and all (hostile-input)
    device = tmp_path / "sys/dev0"
    device.mkdir(parents=True)
    for name, data in {**values, **text}.items():
        (device / name).write_bytes(data)
    body = (f"R='{tmp_path}/out'; T='{tmp_path}'; _P=2\n{shell_functions('vc_bad', 'vc_cat', 'vc_attrs')}"
            f"vc_attrs '{' '.join(values)} absent' '{' '.join(text)} serial' '{device}'\n")
    (tmp_path / f"out{device}").mkdir(parents=True)
    subprocess.run([*shell.split(), "-c", body], check=True, timeout=30)
    copied = {p.name: p.read_bytes() for p in (tmp_path / f"out{device}").iterdir()}
    assert copied == {**values, **text}
    assert not (tmp_path / "notes").exists()


@pytest.mark.parametrize("shell", ["dash", "busybox sh"])
def test_the_watchdog_stops_its_own_commands_by_the_hosts_proc(shell, tmp_path):
    """Outside a fake root the watchdog checks /proc/PID/stat (this shell's child, not exited) before it stops a
    command: the hung one gets 124, the one that finished keeps its own status."""
    (tmp_path / "c").mkdir()
    functions = shell_functions("vc_name", "vc_start", "vc_watch", "vc_wait", script=render_script(command_timeout_s=1))
    body = (f"_IFS=$IFS; C='{tmp_path}/c'; T='{tmp_path}'; _k=0; _ps=; _st=; _js=\n{functions}"
            "vc_start sleep 60; vc_start false; vc_watch; vc_wait\n")
    started = time.monotonic()
    subprocess.run([*shell.split(), "-c", body], check=True, timeout=30)
    assert time.monotonic() - started < 10
    assert (tmp_path / "c/sleep_60.rc").read_text() == "124\n"
    assert (tmp_path / "c/false.rc").read_text() == "1\n"


# -- 14. links: one tar per link glob where tar is GNU tar, else one ln per link, the same links either way ---------


def _tools(folder: Path, log: Path, tar: str) -> Path:
    """A folder first on PATH: ln and tar that log each run, then run the real one. tar: "gnu" (this machine's GNU tar),
    "busybox" (its tar applet: no --transform) or "gnu-failing" (GNU tar that fails midway through extracting: the
    links it made are still the empty files GNU tar puts in their place until its end)."""
    folder.mkdir()
    real_tar = "/usr/bin/tar" if tar.startswith("gnu") else f"{shutil.which('busybox')} tar"
    fail = ('case " $* " in *" -x"*) /usr/bin/tar "$@"; find "$2" -type l -exec sh -c \'rm "$1"; : > "$1"\' _ {} \\;; '
            'exit 2 ;; esac; ' if tar == "gnu-failing" else "")
    for name, run in (("ln", shutil.which("ln")), ("tar", real_tar)):
        (folder / name).write_text(f'#!/bin/sh\necho "{name} $*" >> \'{log}\'\n{fail if name == "tar" else ""}exec {run} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.skipif(not shutil.which("busybox") or not os.path.exists("/usr/bin/tar"),
                    reason="needs busybox (its sh and tar) and GNU tar, as CI's Debian has them")
@pytest.mark.parametrize("shell,tar", [("dash", "gnu"), ("dash", "busybox"), ("dash", "gnu-failing"),
                                       ("busybox sh", "applets")])
def test_links_are_the_same_whether_tar_or_ln_makes_them(shell, tar, tmp_path):
    """busybox sh runs its own tar and ln applets whatever PATH says (tests/support/fleet/rootfs.py): no GNU tar."""
    src, out, log = tmp_path / "src", tmp_path / "out", tmp_path / "runs.log"
    kept = sysfs_links(src)
    tools = _tools(tmp_path / "tools", log, tar) if tar != "applets" else tmp_path
    subprocess.run([*shell.split(), "-c", links_body(src, out, tmp_path)], check=True, timeout=60,
                   env={"PATH": f"{tools}:/usr/bin:/bin", "LC_ALL": "C"})

    made = {str(p.relative_to(out / src.relative_to("/"))): os.readlink(p)
            for p in (out / src.relative_to("/")).rglob("*") if p.is_symlink()}
    assert made == kept
    assert not [p for p in out.rglob("*") if p.is_file()]  # the plain files named like links are not copied
    if tar == "applets":
        return
    runs = log.read_text().splitlines()
    lns = [r for r in runs if r.startswith("ln ")]
    tars = [r for r in runs if r.startswith("tar ")]
    if tar == "gnu":  # a few processes, whatever the number of links: its version, one per glob used, one extracting
        globs = {link.path for path in kept for link in spec.LINKS if fnmatchcase("/" + path, link.path)}
        assert (len(tars), len(lns)) == (1 + len(globs) + 1, 0)
    else:  # no --transform (busybox tar), or the extraction failed: one ln per link
        assert len(lns) == len(kept)


def test_a_host_with_gnu_tar_and_one_with_busybox_give_the_same_snapshot(tmp_path):
    """Over SSH, end to end: a real capture's host (80 links) with GNU tar, as a distribution has it, and with busybox's
    tar applet; the script makes its links with tar on the first, with ln on the second."""
    reason = LoopbackFleet.unavailable_reason()
    if reason:
        pytest.skip(reason)
    fixture = Path(__file__).resolve().parent.parent / "fixtures/hosts/ryzen-vfio-bound-gpu"
    with LoopbackFleet([FleetHost("gnu", fixture, tar="gnu"), FleetHost("busybox", fixture, tar="busybox")]) as fleet:
        assert os.readlink(fleet.root("gnu") / "bin/tar") == "gnutar"
        for name in ("gnu", "busybox"):  # each ln run leaves a line in the host's /tmp/ln-runs
            ln = fleet.root(name) / "bin/ln"
            ln.unlink()
            ln.write_text('#!/bin/sh\necho "$*" >> /tmp/ln-runs\nexec /bin/busybox ln "$@"\n')
            ln.chmod(0o755)
        trees = {}
        for name in ("gnu", "busybox"):
            collect(fleet, name, tmp_path / name)
            trees[name] = {path: value for path, value in _members(tmp_path / name).items()
                           if path not in ("meta.json", "commands/printenv_SSH_CONNECTION")}
        ln_runs = {name: (fleet.root(name) / "tmp/ln-runs").read_text().splitlines()
                   if (fleet.root(name) / "tmp/ln-runs").exists() else [] for name in ("gnu", "busybox")}
    links = {path: value[3:] for path, value in trees["gnu"].items() if isinstance(value, str) and value.startswith("-> ")}
    assert len(links) >= 80
    assert links["root/sys/bus/pci/devices/0000:2d:00.0/driver"] == "../../drivers/vfio-pci"
    assert trees["gnu"] == trees["busybox"]
    assert (len(ln_runs["gnu"]), len(ln_runs["busybox"])) == (0, len(links))
