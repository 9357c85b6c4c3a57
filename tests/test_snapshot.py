"""The snapshot reader and bundles treat their input as untrusted (specs/snapshot.md)."""
import io
import json
import os
import tarfile

import pytest

from vfio_certify.snapshot import BundleError, Snapshot, SnapshotError, pack_bundle, unpack_bundle
from vfio_certify.snapshot.reader import PathState


def make_snapshot(root, files=None, links=None, meta=None):
    for rel, data in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    for rel, target in (links or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_absent_versus_not_collected(tmp_path):
    snap = Snapshot(make_snapshot(tmp_path, {"root/dev/vfio/vfio": "", "root/proc/cmdline": "ro\r\n"}))
    assert snap.state("/dev/vfio/vfio") is PathState.PRESENT
    assert snap.state("/dev/kvm") is PathState.ABSENT  # /dev was collected, kvm was not in it
    assert snap.state("/sys/firmware/acpi/tables/DMAR") is PathState.NOT_COLLECTED
    assert snap.read_text("/proc/cmdline") == "ro\n"  # CRLF folded


def test_links_are_named_never_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("outside the snapshot")
    snap = Snapshot(make_snapshot(tmp_path / "s", links={
        "root/proc/cmdline": str(secret),
        "root/sys/bus/pci/devices/0000:07:00.1/driver": "../../../../bus/pci/drivers/igb",
    }))
    assert snap.read_text("/proc/cmdline") is None
    assert snap.link_name("/sys/bus/pci/devices/0000:07:00.1/driver") == "igb"


def test_a_linked_folder_is_not_entered(tmp_path):
    outside = tmp_path / "outside"
    (outside / "proc").mkdir(parents=True)
    (outside / "proc" / "cmdline").write_text("stolen")
    root = tmp_path / "s"
    (root).mkdir()
    os.symlink(outside, root / "root")
    snap = Snapshot(root)
    assert snap.read_text("/proc/cmdline") is None
    assert snap.read_text("../../outside/proc/cmdline") is None


def test_invalid_utf8_and_nul_survive(tmp_path):
    snap = Snapshot(make_snapshot(tmp_path, {"commands/dmesg": b"ok\xff\xfe\x00line\n", "commands/dmesg.rc": "1\n",
                                             "commands/dmesg.err": "dmesg: read kernel buffer failed: Operation not permitted\n"}))
    out = snap.command("dmesg")
    assert out.stdout == "ok\ufffd\ufffdline\n" and out.rc == 1 and "not permitted" in out.stderr
    assert snap.command("lsusb") is None


def test_newer_format_is_refused_with_a_clear_message(tmp_path):
    make_snapshot(tmp_path, meta={"format": "host-snapshot/2"})
    with pytest.raises(SnapshotError, match="newer than this vfio-certify reads"):
        Snapshot(tmp_path)


def test_meta_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "meta.json").write_bytes(b"\xff{")
    with pytest.raises(SnapshotError, match="not valid JSON"):
        Snapshot(tmp_path)


def _tar_with(tmp_path, member, data: bytes = b"") -> str:
    """A bundle with a good meta.json, then `member` (or each of a list of members) holding `data`."""
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("snap/meta.json")
        payload = b'{"format": "host-snapshot/1"}'
        ok.size = len(payload)
        tar.addfile(ok, io.BytesIO(payload))
        for m in member if isinstance(member, list) else [member]:
            m.size = len(data) if m.isfile() else 0
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return str(path)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("member, why", [
    (_member("/tmp/vfio-certify-pwned"), "absolute path"),
    (_member("snap/../../vfio-certify-pwned"), "'..' in path"),
    (_member("snap/root/proc/cmdline", tarfile.SYMTYPE, "/etc/shadow"), "link to absolute path"),
    (_member("snap/root/x", tarfile.SYMTYPE, "../../../../etc"), "link leaving the bundle"),
    (_member("snap/root/h", tarfile.LNKTYPE, "snap/meta.json"), "hard link"),
    (_member("snap/root/dev/sda", tarfile.BLKTYPE), "device"),
    # each link stays inside on paper; chained they climb out (a/b is the bundle's root, a/c two above it)
    ([_member("snap/a", tarfile.DIRTYPE), _member("snap/a/b", tarfile.SYMTYPE, ".."),
      _member("snap/a/c", tarfile.SYMTYPE, "b/../.."), _member("snap/a/c/vfio-certify-pwned")], "chained links"),
    # a file written through a link of the bundle
    ([_member("snap/root/l", tarfile.SYMTYPE, "."), _member("snap/root/l/proc/cmdline")], "through a link"),
])
def test_hostile_bundles_are_refused_and_nothing_is_written(tmp_path, member, why):
    bundle = _tar_with(tmp_path, member, b"pwned")
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match="refused"):
        unpack_bundle(bundle, dest)
    assert not dest.exists()  # refused before anything was unpacked
    assert not (tmp_path.parent / "vfio-certify-pwned").exists()


def test_pack_and_unpack_round_trip_keeps_links_inside(tmp_path):
    src = make_snapshot(tmp_path / "src", {"root/proc/cmdline": "intel_iommu=on\n"},
                        {"root/sys/bus/pci/devices/0000:07:00.1/driver": "../../drivers/igb"},
                        meta={"format": "host-snapshot/1", "hostname": "kvm"})
    bundle = pack_bundle(src, tmp_path / "kvm.tar.gz")
    snap = Snapshot(unpack_bundle(bundle, tmp_path / "out"))
    assert snap.hostname == "kvm" and snap.read_text("/proc/cmdline") == "intel_iommu=on\n"
    assert snap.link_name("/sys/bus/pci/devices/0000:07:00.1/driver") == "igb"


@pytest.mark.parametrize("data", [b"\x1f\x8b garbage", bytes(range(256)) * 20], ids=["cut-gzip", "binary"])
def test_garbage_file_is_not_a_bundle_and_says_so_in_one_line(tmp_path, data):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(data)
    with pytest.raises(BundleError, match="not a readable") as raised:
        unpack_bundle(path, tmp_path / "out")
    assert "\n" not in str(raised.value) and str(path) in str(raised.value), str(raised.value)
