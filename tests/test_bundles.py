"""Hostile bundles are refused from their tar headers, before anything is unpacked, in one line naming the
bundle as the user gave it; a signal while one unpacks leaves nothing behind (issue 15)."""
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from vfio_certify.snapshot import BundleError, bundle as bundle_module, unpack_bundle

META = json.dumps({"format": "host-snapshot/1"}).encode()


def _info(name: str, size: int = 0, kind=tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info


def _write(path: Path, members: list, fmt=tarfile.GNU_FORMAT) -> str:
    """A .tar.gz holding meta.json and then `members` ((TarInfo, data) pairs) written by Python's tarfile."""
    with tarfile.open(path, "w:gz", format=fmt, compresslevel=1) as tar:
        tar.addfile(_info("snap/meta.json", len(META)), io.BytesIO(META))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path.name


def _raw(path: Path, stream: bytes) -> str:
    """A .tar.gz whose tar stream is written block by block (headers that lie about what follows)."""
    path.write_bytes(gzip.compress(stream, compresslevel=1))
    return path.name


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(format=tarfile.GNU_FORMAT)[:512]


def deep(tmp):
    return _write(tmp / "deep.tar.gz", [(_info("snap/" + "a/" * 5000 + "f", 1), b"x")], fmt=tarfile.PAX_FORMAT)


def many_members(tmp):
    bundle_module.MAX_MEMBERS = 50
    return _write(tmp / "many.tar.gz", [(_info(f"snap/root/f{i}"), b"") for i in range(60)])


def huge_declared_size(tmp):  # 10 GiB declared, nothing behind it
    return _raw(tmp / "huge.tar.gz", _header(_info("snap/root/proc/kcore", 10 << 30)) + bytes(1024))


def gzip_bomb(tmp):  # 65 MiB of zeros in a 65 KiB file: more than one snapshot file may hold
    return _write(tmp / "bomb.tar.gz", [(_info("snap/root/var/log/dmesg", 65 << 20), bytes(65 << 20))])


def many_small_bombs(tmp):  # each file under the per-file bound, together over the total
    bundle_module.MAX_TOTAL_BYTES = 1 << 20
    return _write(tmp / "bombs.tar.gz", [(_info(f"snap/root/z{i}", 400 << 10), bytes(400 << 10)) for i in range(3)])


def long_name_header(tmp):  # GNU tar's ././@LongLink, 1 MiB of name read whole by tarfile
    return _write(tmp / "longname.tar.gz", [(_info("snap/" + "n" * (1 << 20)), b"")])


def pax_header(tmp):
    return _write(tmp / "pax.tar.gz", [(_info("snap/" + "p" * (1 << 20)), b"")], fmt=tarfile.PAX_FORMAT)


def pax_header_declared_only(tmp):  # a pax header declaring 4 GiB of records that never come
    return _raw(tmp / "paxsize.tar.gz", _header(_info("././@PaxHeader", 4 << 30, tarfile.XHDTYPE)) + bytes(1024))


def sparse_file(tmp):
    return _raw(tmp / "sparse.tar.gz", _header(_info("snap/root/sparse", 0, tarfile.GNUTYPE_SPARSE)) + bytes(1024))


def pax_sparse_file(tmp):  # GNU sparse 1.0: a map of as many numbers as the header says, read from the data
    info = _info("snap/root/sparse")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "1"}
    return _write(tmp / "paxsparse.tar.gz", [(info, b"")], fmt=tarfile.PAX_FORMAT)


def path_too_long(tmp):  # 25 levels, under the depth bound, 5,000 bytes long
    return _write(tmp / "longpath.tar.gz", [(_info("snap/" + ("d" * 200 + "/") * 25 + "f"), b"")])


def file_name_too_long(tmp):
    return _write(tmp / "longname2.tar.gz", [(_info("snap/" + "f" * 300), b"")])


def stream_past_its_bound(tmp):  # headers that each pass, in a decompressed stream longer than allowed
    bundle_module.MAX_STREAM_BYTES = 64 << 10
    return _write(tmp / "stream.tar.gz", [(_info(f"snap/root/s{i}", 1024), bytes(1024)) for i in range(100)])


@pytest.mark.parametrize("make, why", [
    (deep, "a path 5002 levels deep, more than the 64"),
    (many_members, "more than 50 entries"),
    (huge_declared_size, "10737418240 bytes, more than the 64 MiB"),
    (gzip_bomb, "68157440 bytes, more than the 64 MiB"),
    (many_small_bombs, "unpacks to more than 1 MiB"),
    (long_name_header, "extended (pax or long-name) header of 104858"),
    (pax_header, "extended (pax or long-name) header of"),
    (pax_header_declared_only, "extended (pax or long-name) header of 4294967296 bytes"),
    (sparse_file, "'snap/root/sparse': a sparse file"),
    (pax_sparse_file, "'snap/root/sparse': a sparse file"),
    (path_too_long, "a path longer than 4095 bytes"),
    (file_name_too_long, "a file name longer than 255 bytes"),
    (stream_past_its_bound, "its tar stream runs past"),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_a_hostile_bundle_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, make, why):
    for bound in ("MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_STREAM_BYTES"):  # restored after the test
        monkeypatch.setattr(bundle_module, bound, getattr(bundle_module, bound))
    monkeypatch.chdir(tmp_path)
    given = "./" + make(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(BundleError) as raised:
        unpack_bundle(given, dest)
    message = str(raised.value)
    assert message.startswith(f"{given}: refused: ") and why in message, message
    assert "\n" not in message and len(message) < 400, message
    assert not dest.exists()


def test_a_bundle_without_a_snapshot_is_named_as_given_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tarfile.open("two.tar.gz", "w:gz") as tar:
        for name in ("a/x", "b/y"):
            tar.addfile(_info(name, 1), io.BytesIO(b"x"))
    with pytest.raises(BundleError) as raised:
        unpack_bundle("two.tar.gz", tmp_path / "dest")
    assert str(raised.value) == "two.tar.gz: no snapshot inside (expected meta.json and root/)"
    assert not (tmp_path / "dest").exists()


def test_a_plain_or_xz_bundle_within_bounds_unpacks(tmp_path):
    for mode, name in (("w:", "snap.tar"), ("w:xz", "snap.tar.xz"), ("w:bz2", "snap.tar.bz2")):
        with tarfile.open(tmp_path / name, mode) as tar:
            tar.addfile(_info("snap/meta.json", len(META)), io.BytesIO(META))
            tar.addfile(_info("snap/root/proc/cmdline", 15), io.BytesIO(b"intel_iommu=on\n"))
        root = unpack_bundle(tmp_path / name, tmp_path / f"out-{name}")
        assert (root / "root/proc/cmdline").read_text() == "intel_iommu=on\n"


def certify(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_a_refused_bundle_is_one_line_naming_it_and_its_fix_is_a_new_bundle_not_ssh(tmp_path):
    deep(tmp_path)
    proc = certify("--snapshot", "./deep.tar.gz", "--output", "out", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # unreachable: its facts could not be had
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    [host] = summary["hosts"]
    reach = next(c for c in host["checks"] if c["id"] == "host.reachable")
    assert host["verdict"] == "unreachable" and reach["outcome"] == "failed"
    assert "./deep.tar.gz: refused: " in reach["message"] and "levels deep" in reach["message"], reach["message"]
    assert "vfio-certify-" not in reach["message"] and "bug in vfio-certify" not in reach["message"]
    assert "vfio-certify collect" in reach["remediation"] and "SSH" not in reach["remediation"], reach["remediation"]


def _big_bundle(path: Path, files: int = 20000) -> None:
    """A valid snapshot whose unpacking takes seconds (thousands of small files), its last member zz-last."""
    data = b"x" * 4096
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.addfile(_info("snap/meta.json", len(META)), io.BytesIO(META))
        for n in range(files):
            tar.addfile(_info(f"snap/root/filler/{n // 1000}/{n}", len(data)), io.BytesIO(data))
        tar.addfile(_info("snap/zz-last", 1), io.BytesIO(b"x"))


REPO = Path(__file__).resolve().parent.parent
ENTRIES = {  # the command, and its exit status when interrupted
    "vfio-certify": ([sys.executable, "-m", "vfio_certify.cli", "--output", "out"], 130),
    "pytest": ([sys.executable, "-m", "pytest", str(REPO / "checks"), "-p", "no:cacheprovider"], 2),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_a_bundle_unpacks_leaves_no_temporary_folder(tmp_path, stop, entry):
    _big_bundle(tmp_path / "big.tar.gz")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    command, interrupted = ENTRIES[entry]
    proc = subprocess.Popen([*command, "--snapshot", "big.tar.gz"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            unpacked = list(tmpdir.glob("vfio-certify-*/target-0/snap/root/filler/*/*"))
            if len(unpacked) > 200:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the bundle was seen unpacking:\n" + proc.stdout.read()
        assert not list(tmpdir.glob("vfio-certify-*/target-0/snap/zz-last")), "unpacking already finished"
        proc.send_signal(stop)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == interrupted, output  # interrupted, as by Ctrl-C
    left = [p.name for p in tmpdir.iterdir() if p.name.startswith("vfio-certify")]
    assert left == [], f"left in TMPDIR after {stop.name}: {left}"


def test_only_a_live_host_that_could_not_be_collected_is_told_to_check_ssh():
    from vfio_certify.rules import host
    bundle = host.reachable("kvm.tar.gz", None, "kvm.tar.gz: refused: 'x': hard link", 0.0, source="snapshot")
    live = host.reachable("ssh://kvm", None, "Connection refused", 0.0, source="ssh")
    assert "vfio-certify collect" in bundle.remediation and "SSH" not in bundle.remediation
    assert "SSH" in live.remediation


def test_a_name_given_twice_keeps_the_last_and_a_folder_never_becomes_a_file(tmp_path):
    twice = _write(tmp_path / "twice.tar.gz", [(_info("snap/root/proc/cmdline", 3), b"old"),
                                               (_info("snap/root/proc/cmdline", 3), b"new")])
    root = unpack_bundle(tmp_path / twice, tmp_path / "out")
    assert (root / "root/proc/cmdline").read_bytes() == b"new"
    clash = _write(tmp_path / "clash.tar.gz", [(_info("snap/root/proc", 0, tarfile.DIRTYPE), b""),
                                               (_info("snap/root/proc", 1), b"x")])
    with pytest.raises(BundleError) as raised:
        unpack_bundle(tmp_path / clash, tmp_path / "clash")
    assert "'snap/root/proc': a folder and a file or link of the same name" in str(raised.value)
    assert not (tmp_path / "clash").exists()


def test_unpacking_follows_no_link_already_in_the_destination(tmp_path):
    """Into an existing folder holding a link where the bundle has a folder: refused, nothing written through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "snap").mkdir(parents=True)
    (dest / "snap/root").symlink_to(outside)
    bundle = _write(tmp_path / "b.tar.gz", [(_info("snap/root/proc/cmdline", 3), b"abc")])
    with pytest.raises(BundleError) as raised:
        unpack_bundle(tmp_path / bundle, dest)
    assert "'snap/root': a folder and a file or link of the same name" in str(raised.value)
    assert list(outside.iterdir()) == []


def test_unpacked_files_keep_no_special_mode_bits(tmp_path):
    info = _info("snap/root/usr/bin/tool", 2)
    info.mode = 0o6777
    plain = _info("snap/root/etc/os-release", 2)
    plain.mode = 0o444
    root = unpack_bundle(tmp_path / _write(tmp_path / "m.tar.gz", [(info, b"#!"), (plain, b"ID")]), tmp_path / "o")
    assert (root / "root/usr/bin/tool").stat().st_mode & 0o7777 == 0o755 & ~_umask()
    assert (root / "root/etc/os-release").stat().st_mode & 0o7777 == 0o644 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@pytest.mark.parametrize("make, why", [
    (deep, "a path 5002 levels deep"),
    (gzip_bomb, "more than the 64 MiB"),
    (long_name_header, "extended (pax or long-name) header"),
    (sparse_file, "a sparse file"),
    (stream_past_its_bound, "its tar stream runs past"),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_a_live_hosts_answer_read_in_memory_is_refused_as_a_bundle_is(tmp_path, monkeypatch, make, why):
    monkeypatch.setattr(bundle_module, "MAX_STREAM_BYTES", bundle_module.MAX_STREAM_BYTES)
    data = (tmp_path / make(tmp_path)).read_bytes()
    with pytest.raises(BundleError) as raised:
        bundle_module.read_bundle(data, "ssh://kvm1")
    message = str(raised.value)
    assert message.startswith("ssh://kvm1: refused: ") and why in message and "\n" not in message, message


def test_in_memory_a_name_given_twice_keeps_the_last_and_a_folder_never_becomes_a_file(tmp_path):
    twice = _write(tmp_path / "twice.tar.gz", [(_info("snap/root/proc/cmdline", 3), b"old"),
                                               (_info("snap/root/proc/cmdline", 3), b"new")])
    tree = bundle_module.read_bundle((tmp_path / twice).read_bytes(), "ssh://kvm1")
    assert tree.read("root/proc/cmdline") == b"new" and tree.names("") == ["meta.json", "root"]
    clash = _write(tmp_path / "clash.tar.gz", [(_info("snap/root/proc", 0, tarfile.DIRTYPE), b""),
                                               (_info("snap/root/proc", 1), b"x")])
    with pytest.raises(BundleError, match="'snap/root/proc': a folder and a file or link of the same name"):
        bundle_module.read_bundle((tmp_path / clash).read_bytes(), "ssh://kvm1")
    with pytest.raises(BundleError, match="no snapshot inside"):
        bundle_module.read_bundle((tmp_path / _write(tmp_path / "two.tar.gz", [(_info("other/x", 1), b"x")]))
                                  .read_bytes(), "ssh://kvm1")


def _everything(tree, rel: str = "") -> dict:
    """Every path of a tree with what it holds: a file's bytes, a link's target, a folder's names."""
    kind = tree.kind(rel)
    if kind != "dir":
        return {rel: (kind, tree.read(rel) if kind == "file" else tree.target(rel))}
    held = {rel: ("dir", sorted(tree.names(rel)))}
    for name in tree.names(rel):
        held.update(_everything(tree, f"{rel}/{name}" if rel else name))
    return held


def _read_both_ways(data: bytes, monkeypatch):
    """read_bundle's answer for `data` inflated at once (a live host's answer) and streamed through GzipFile."""
    answers, bound = [], bundle_module.INFLATE_WHOLE_BYTES
    for whole in (bound, 1):  # 1 byte: nothing fits, every stream is streamed
        monkeypatch.setattr(bundle_module, "INFLATE_WHOLE_BYTES", whole)
        try:
            answers.append(_everything(bundle_module.read_bundle(data, "ssh://kvm1")))
        except BundleError as exc:
            answers.append(str(exc))
    monkeypatch.setattr(bundle_module, "INFLATE_WHOLE_BYTES", bound)
    return answers


def test_a_live_hosts_answer_inflated_at_once_reads_as_it_does_streamed(tmp_path, monkeypatch):
    """A real capture (a fixture host with sysfs links), and the same answer cut short, with a broken checksum, or
    sent as two gzip members: read whole in memory or streamed, the tree or the refusal is the same."""
    bundle_module.pack_bundle(Path(__file__).parent.parent / "fixtures/hosts/rocky9-after-intel-iommu",
                              tmp_path / "rocky9.tar.gz")
    data = (tmp_path / "rocky9.tar.gz").read_bytes()
    whole, streamed = _read_both_ways(data, monkeypatch)
    assert whole == streamed and whole["root/proc/cmdline"][0] == "file"
    assert any(kind == "link" for kind, _ in whole.values())
    assert bundle_module._inflated_whole(io.BytesIO(data)) is not None  # the fast path was taken
    half = len(data) // 2
    inflated = gzip.decompress(data)
    for variant in (data[:half],                                      # cut short
                    data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:],  # its CRC broken
                    gzip.compress(inflated[:10240]) + gzip.compress(inflated[10240:])):  # two gzip members
        whole, streamed = _read_both_ways(variant, monkeypatch)
        assert whole == streamed, (whole if isinstance(whole, str) else "a tree", streamed)
        assert bundle_module._inflated_whole(io.BytesIO(variant)) is None  # streamed, and refused there
