"""The loopback fleet harness (tests/support/fleet) against real sshd processes.

Each fleet host is its own sshd on 127.0.0.x whose sessions run chroot'ed in a fake root
built from a snapshot; collecting it the way vfio-certify does must give back THAT
host's facts, in one remote command and one SSH handshake per host.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vfio_certify.collect import CollectError, Target, collect_snapshot
from vfio_certify.collect import spec as collect_spec
from vfio_certify.facts import read_host_facts
from vfio_certify.snapshot import Snapshot

try:
    from support.fleet import DENIED, SILENT, FleetHost, LoopbackFleet
except ImportError:
    from tests.support.fleet import DENIED, SILENT, FleetHost, LoopbackFleet

FIXTURE_HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"


@pytest.fixture(autouse=True)
def _needs_fleet():
    reason = LoopbackFleet.unavailable_reason()
    if reason:
        pytest.skip(reason)


# -- hand-made snapshots --------------------------------------------------------------


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


def make_snapshot(dest: Path, *, hostname: str, release: str, cmdline: str, dmesg: str,
                  driver: str, group: str, commands: dict | None = None) -> Path:
    """A small snapshot folder (specs/snapshot.md layout) with one assignable GPU."""
    _write(dest / "meta.json", json.dumps({
        "format": "host-snapshot/1", "absence": "parent-folder", "hostname": hostname,
        "collected_at": "2026-11-24T10:00:00Z", "kernel_release": release}))
    root = dest / "root"
    _write(root / "proc/cmdline", cmdline + "\n")
    _write(root / "proc/cpuinfo", f"processor\t: 0\nmodel name\t: fake CPU of {hostname}\nflags\t\t: vmx\n")
    _write(root / "proc/modules", "vfio_pci 16384 0 - Live 0x0000000000000000\n")
    _write(root / f"boot/config-{release}", f"# config of {release}\nCONFIG_VFIO=m\n")
    _write(root / f"lib/modules/{release}/modules.builtin", "kernel/drivers/iommu/intel/iommu.ko\n")
    _write(root / "etc/default/grub", f'GRUB_CMDLINE_LINUX="{cmdline}"\n')
    _write(root / "dev/kvm", b"")
    _write(root / "sys/firmware/acpi/tables/DMAR", b"")
    (root / "sys/class/iommu/dmar0").mkdir(parents=True)
    (root / "sys/module/vfio_pci").mkdir(parents=True)
    gpu = root / "sys/bus/pci/devices/0000:01:00.0"
    for attr, value in (("vendor", "0x10de"), ("device", "0x1eb8"), ("class", "0x030200")):
        _write(gpu / attr, value + "\n")
    os.symlink(f"../../../bus/pci/drivers/{driver}", gpu / "driver")
    os.symlink(f"../../../kernel/iommu_groups/{group}", gpu / "iommu_group")
    _write(root / f"sys/kernel/iommu_groups/{group}/devices/0000:01:00.0", b"")
    _write(root / "sys/bus/pci/drivers/.snapshot-dir", b"")  # fixture bookkeeping: never shown
    cmds = dest / "commands"
    _write(cmds / "uname_-r", release + "\n")
    _write(cmds / "uname_-n", hostname + "\n")
    _write(cmds / "dmesg", dmesg)
    _write(cmds / "lspci_-nnk", f"01:00.0 3D controller [0302]: NVIDIA [10de:1eb8]\n\tKernel driver in use: {driver}\n")
    for name, data in (commands or {}).items():
        _write(cmds / name, data)
    return dest


@pytest.fixture
def two_snapshots(tmp_path):
    alpha = make_snapshot(
        tmp_path / "alpha", hostname="kvm-alpha", release="5.14.0-427.el9.x86_64",
        cmdline="BOOT_IMAGE=/vmlinuz ro intel_iommu=on iommu=pt",
        dmesg="[    0.000000] Linux version 5.14.0-427.el9.x86_64\n[    0.1] DMAR: IOMMU enabled\n",
        driver="vfio-pci", group="17")
    beta = make_snapshot(
        tmp_path / "beta", hostname="kvm-beta", release="6.1.0-18-amd64",
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet",
        dmesg="[    0.000000] Linux version 6.1.0-18-amd64\n",
        driver="nouveau", group="3",
        commands={"grubby_--info=DEFAULT": "", "grubby_--info=DEFAULT.rc": "1\n",
                  "grubby_--info=DEFAULT.err": "grubby: no default kernel\n"})
    return alpha, beta


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


# -- the brief's scenario -------------------------------------------------------------


def test_fleet_collects_each_host_and_stops_clean(tmp_path, two_snapshots):
    alpha, beta = two_snapshots
    fleet = LoopbackFleet([
        FleetHost("kvm-alpha", alpha),
        FleetHost("kvm-beta", beta),
        FleetHost.down("kvm-down"),
    ])
    try:
        assert fleet.start_seconds < 10
        urls = fleet.urls
        assert set(urls) == {"kvm-alpha", "kvm-beta", "kvm-down"}
        addresses = {fleet.address(n) for n in urls}
        assert len(addresses) == 3, "hosts differ by address"
        assert all(a.startswith("127.0.0.") and a != "127.0.0.1" for a in addresses)
        running = fleet.pids()
        assert running

        for name, source in (("kvm-alpha", alpha), ("kvm-beta", beta)):
            dest = tmp_path / "collected" / name
            collect_snapshot(Target(urls[name], ssh_config=fleet.ssh_config), dest)
            meta = json.loads((source / "meta.json").read_text())
            release = meta["kernel_release"]
            got = json.loads((dest / "meta.json").read_text())
            assert got["kernel_release"] == release
            assert got["hostname"] == meta["hostname"]
            assert got["kernel_release"] != os.uname().release  # not this machine's kernel
            # Written by the script on the host, kept by the controller's merge.
            assert got["format"] == "host-snapshot/1" and got["absence"] == "parent-folder"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got["collected_at"]), got
            for rel in ("root/proc/cmdline", "root/proc/cpuinfo", "root/etc/default/grub",
                        f"root/boot/config-{release}",  # found via $KREL = the fake uname -r
                        f"root/lib/modules/{release}/modules.builtin",
                        "commands/dmesg", "commands/lspci_-nnk",
                        "root/sys/bus/pci/devices/0000:01:00.0/vendor"):
                assert _read(dest / rel) == _read(source / rel), rel
            assert _first_line(dest / "commands/uname_-r") == release
            assert (dest / "root/dev/kvm").is_file()
            assert (dest / "root/sys/class/iommu/dmar0").is_dir()
            gpu = dest / "root/sys/bus/pci/devices/0000:01:00.0"
            assert os.readlink(gpu / "driver").rsplit("/", 1)[-1] == \
                os.readlink(source / "root/sys/bus/pci/devices/0000:01:00.0/driver").rsplit("/", 1)[-1]
            assert os.readlink(gpu / "iommu_group").rsplit("/", 1)[-1] == \
                os.readlink(source / "root/sys/bus/pci/devices/0000:01:00.0/iommu_group").rsplit("/", 1)[-1]
            # Not recorded in the snapshot: the tool is "not found" on that host.
            assert (dest / "commands/lsusb.rc").read_text().strip() == "127"
            assert "lsusb: not found" in (dest / "commands/lsusb.err").read_text()
            # The harness's own files are not host facts.
            assert not (dest / "root/bin").exists()
            assert not list(dest.rglob(".snapshot*"))
            # One remote command, one SSH login.
            assert len(fleet.remote_commands(name)) == 1, fleet.remote_commands(name)
            assert fleet.handshakes(name) == 1, fleet.log_tail(name)

        beta_cmds = tmp_path / "collected" / "kvm-beta" / "commands"
        assert (beta_cmds / "grubby_--info=DEFAULT.rc").read_text().strip() == "1"
        assert (beta_cmds / "grubby_--info=DEFAULT.err").read_text() == "grubby: no default kernel\n"
        alpha_cmds = tmp_path / "collected" / "kvm-alpha" / "commands"
        assert (alpha_cmds / "grubby_--info=DEFAULT.rc").read_text().strip() == "127"
        # printenv SSH_CONNECTION is not recorded here: the live session's value.
        session = (alpha_cmds / "printenv_SSH_CONNECTION").read_text().split()
        assert session[2:] == [fleet.address("kvm-alpha"), str(fleet.port("kvm-alpha"))]

        started = time.monotonic()
        with pytest.raises(CollectError) as failed:
            collect_snapshot(Target(urls["kvm-down"], ssh_config=fleet.ssh_config), tmp_path / "down")
        reason = str(failed.value)
        assert reason and "\n" not in reason
        assert "Connection refused" in reason
        assert time.monotonic() - started < 10
        assert fleet.remote_commands("kvm-down") == [] and fleet.handshakes("kvm-down") == 0
        ports = [fleet.port(n) for n in urls]
    finally:
        fleet.stop()

    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") and _alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in running if _alive(p)], "fleet processes survived stop()"
    assert fleet.leftover_pids() == set()
    for address, port in zip([fleet.address(n) for n in urls], ports):
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=1).close()
    fleet.cleanup()
    assert not fleet.dir.exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


# -- other host kinds -----------------------------------------------------------------


def test_denied_silent_slow_and_busybox_hosts(tmp_path, two_snapshots):
    alpha, beta = two_snapshots
    with LoopbackFleet([
        FleetHost.down("kvm-denied", how=DENIED),
        FleetHost.down("kvm-silent", how=SILENT),
        FleetHost.slow("kvm-slow", alpha, delay_s=1.5),
        FleetHost("kvm-ash", beta, shell="busybox", hostname="ash-host"),
    ]) as fleet:
        def collect(name, **kw):
            return collect_snapshot(Target(fleet.urls[name], ssh_config=fleet.ssh_config, **kw),
                                    tmp_path / name)

        with pytest.raises(CollectError) as failed:
            collect("kvm-denied")
        assert "Permission denied (publickey)" in str(failed.value)
        assert fleet.connections("kvm-denied") == 1 and fleet.handshakes("kvm-denied") == 0

        started = time.monotonic()
        with pytest.raises(CollectError) as failed:
            collect("kvm-silent", connect_timeout_s=1)
        assert "\n" not in str(failed.value) and "timed out" in str(failed.value)
        assert time.monotonic() - started < 8

        started = time.monotonic()
        collect("kvm-slow")
        assert time.monotonic() - started >= 1.5
        assert (tmp_path / "kvm-slow/root/proc/cmdline").read_bytes() == \
            (alpha / "root/proc/cmdline").read_bytes()
        assert len(fleet.remote_commands("kvm-slow")) == 1 and fleet.handshakes("kvm-slow") == 1

        # busybox sh runs the whole script; files are the host's, the hostname override wins.
        collect("kvm-ash")
        assert (tmp_path / "kvm-ash/root/proc/cmdline").read_bytes() == \
            (beta / "root/proc/cmdline").read_bytes()
        ash_meta = json.loads((tmp_path / "kvm-ash/meta.json").read_text())
        assert ash_meta["hostname"] == "ash-host" and ash_meta["absence"] == "parent-folder"


def test_ssh_config_by_name_and_ansible_inventory(two_snapshots):
    alpha, beta = two_snapshots
    with LoopbackFleet([FleetHost("kvm-alpha", alpha), FleetHost("kvm-beta", beta)]) as fleet:
        for name, release in (("kvm-alpha", "5.14.0-427.el9.x86_64"), ("kvm-beta", "6.1.0-18-amd64")):
            out = subprocess.run(["ssh", "-F", fleet.ssh_config, name, "uname -r; hostname; cat /proc/cmdline"],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert lines[0] == release and lines[1] == name
            assert fleet.remote_commands(name) == [f"{len('uname -r; hostname; cat /proc/cmdline')} "
                                                   "uname -r; hostname; cat /proc/cmdline"]

        inventory = Path(fleet.ansible_inventory).read_text()
        for name in ("kvm-alpha", "kvm-beta"):
            line = next(ln for ln in inventory.splitlines() if ln.startswith(name + " "))
            assert f"ansible_host={fleet.address(name)}" in line
            assert f"ansible_port={fleet.port(name)}" in line
            assert "ansible_user=root" in line and f"ansible_ssh_private_key_file={fleet.identity_file}" in line
            assert "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'" in line

        ansible = Path(sys.executable).with_name("ansible")
        if not ansible.exists():
            return
        fleet.reset_logs()
        env = dict(os.environ, ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_HOST_KEY_CHECKING="False",
                   ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_NOCOLOR="1")
        out = subprocess.run([str(ansible), "all", "-i", fleet.ansible_inventory, "-m", "raw", "-a", "uname -r",
                              "--one-line"], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "5.14.0-427.el9.x86_64" in out.stdout and "6.1.0-18-amd64" in out.stdout
        assert fleet.handshakes("kvm-alpha") == 1 and len(fleet.remote_commands("kvm-alpha")) == 1


# -- fidelity on the realistic fixtures ------------------------------------------------


def _fixture_hosts():
    if not FIXTURE_HOSTS.is_dir():
        return []
    return sorted(p for p in FIXTURE_HOSTS.iterdir() if (p / "meta.json").is_file() and (p / "root").is_dir())


@pytest.mark.skipif(not _fixture_hosts(), reason="no fixtures/hosts/<name>/ snapshots yet")
def test_fixture_hosts_round_trip(tmp_path):
    """Collecting a fleet host gives back its snapshot: every collected root file is the
    fixture's (content, or link target name, or mere existence), and every recorded
    command output is replayed byte for byte."""
    hosts = _fixture_hosts()
    with LoopbackFleet([FleetHost(h.name, h) for h in hosts]) as fleet:
        # Concurrently, as a --jobs run would: hosts must not see each other's facts.
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda h: collect_snapshot(
                Target(fleet.urls[h.name], ssh_config=fleet.ssh_config), tmp_path / h.name), hosts))
        for host in hosts:
            dest = tmp_path / host.name
            problems = []
            release = json.loads((host / "meta.json").read_text()).get("kernel_release", "")
            # The collector creates every probed folder, whether the fixture claims it or not.
            probed = {"root" + f.replace("$KREL", release) for f in collect_spec.PROBED_FOLDERS}
            probed |= {str(Path(p).parent) for p in probed}  # /etc/libvirt made on the way to /etc/libvirt/qemu
            for path in sorted((dest / "root").rglob("*")):
                rel = path.relative_to(dest)
                source = host / rel
                if str(rel) in probed and path.is_dir() and not path.is_symlink():
                    continue
                if not os.path.lexists(source):
                    problems.append(f"{rel}: collected but not in the fixture")
                elif path.is_symlink():
                    if not source.is_symlink() or \
                            os.readlink(path).rsplit("/", 1)[-1] != os.readlink(source).rsplit("/", 1)[-1]:
                        problems.append(f"{rel}: link target differs")
                elif path.is_file() and path.stat().st_size:
                    if source.is_symlink() or not source.is_file() or source.read_bytes() != path.read_bytes():
                        problems.append(f"{rel}: content differs")
            recorded = {c.replace(" ", "_") for c in collect_spec.COMMANDS}
            for path in sorted((host / "commands").iterdir()):
                base = path.name.rsplit(".", 1)[0] if path.name.endswith((".rc", ".err")) else path.name
                if base in recorded and not base.startswith("uname_"):
                    got = dest / "commands" / path.name
                    if not got.is_file() or got.read_bytes() != path.read_bytes():
                        problems.append(f"commands/{path.name}: not replayed")
            meta = json.loads((host / "meta.json").read_text())
            got_meta = json.loads((dest / "meta.json").read_text())
            for key in ("hostname", "kernel_release", "absence"):
                if meta.get(key) and got_meta.get(key) != meta[key]:
                    problems.append(f"meta.json {key}: {got_meta.get(key)!r} != {meta[key]!r}")
            assert not problems, f"{host.name}:\n" + "\n".join(problems)
            # the PCI tree is folders (names only): the reader finds the same tree in what was collected
            tree = read_host_facts(Snapshot(host)).pci_tree
            assert read_host_facts(Snapshot(dest)).pci_tree == (tree or {}), host.name
            assert len(fleet.remote_commands(host.name)) == 1 and fleet.handshakes(host.name) == 1
