"""The snapshot reader and bundles treat their input as untrusted (specs/snapshot.md)."""
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from vfio_certify.snapshot import BundleError, Snapshot, SnapshotError, pack_bundle, unpack_bundle
from vfio_certify.snapshot.reader import PathState

# meta.json of a snapshot made by our collector: a missing path in a collected folder is absent.
COLLECTOR_META = {"format": "host-snapshot/1", "absence": "parent-folder"}


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
    snap = Snapshot(make_snapshot(tmp_path, {"root/dev/vfio/vfio": "", "root/proc/cmdline": "ro\r\n"},
                                  meta=COLLECTOR_META))
    assert snap.state("/dev/vfio/vfio") is PathState.PRESENT
    assert snap.state("/dev/kvm") is PathState.ABSENT  # /dev was collected, kvm was not in it
    assert snap.state("/sys/firmware/acpi/tables/DMAR") is PathState.NOT_COLLECTED
    assert snap.read_text("/proc/cmdline") == "ro\n"  # CRLF folded
    assert snap.meta_problem is None


@pytest.mark.parametrize("meta", [None, {"format": "host-snapshot/1", "hostname": "kvm"}], ids=["no-meta", "no-field"])
def test_without_the_absence_field_missing_is_not_collected(tmp_path, meta):
    """The spec: every part is optional, what is missing was not collected, never false."""
    snap = Snapshot(make_snapshot(tmp_path, {"root/dev/vfio/vfio": ""}, meta=meta))
    assert snap.state("/dev/vfio/vfio") is PathState.PRESENT
    assert snap.state("/dev/kvm") is PathState.NOT_COLLECTED
    assert snap.meta_problem is None


@pytest.mark.parametrize("meta, outcome, state", [
    ({"format": "host-snapshot/1"}, "skipped", PathState.NOT_COLLECTED),
    (COLLECTOR_META, "failed", PathState.ABSENT),
], ids=["hand-made", "collector"])
def test_kvm_device_is_judged_absent_only_when_the_snapshot_says_so(tmp_path, meta, outcome, state):
    from vfio_certify.facts import read_host_facts
    from vfio_certify.rules import kvm

    snap = Snapshot(make_snapshot(tmp_path, {"root/dev/vfio/vfio": "", "root/proc/cpuinfo": "flags\t: vmx\n"},
                                  meta=meta))
    facts = read_host_facts(snap)
    assert facts.kvm_device is state
    assert kvm.device(facts).outcome.value == outcome


def test_an_unknown_absence_convention_is_not_guessed(tmp_path):
    snap = Snapshot(make_snapshot(tmp_path, {"root/dev/vfio/vfio": ""},
                                  meta={"format": "host-snapshot/1", "absence": "whatever-we-felt-like"}))
    assert snap.state("/dev/kvm") is PathState.NOT_COLLECTED
    assert "unknown absence convention" in snap.meta_problem and "\n" not in snap.meta_problem


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


def test_newer_format_behind_a_bom_and_crlf_is_still_refused(tmp_path):
    (tmp_path / "meta.json").write_bytes(b'\xef\xbb\xbf{"format": "host-snapshot/2"}\r\n')
    with pytest.raises(SnapshotError, match="newer than this vfio-certify reads"):
        Snapshot(tmp_path)


def test_a_bom_and_crlf_in_meta_are_read_through(tmp_path):
    (tmp_path / "meta.json").write_bytes(b'\xef\xbb\xbf{"format": "host-snapshot/1",\r\n "absence": "parent-folder",'
                                         b' "hostname": "kvm"}\r\n')
    make_snapshot(tmp_path, {"root/dev/vfio/vfio": ""})
    snap = Snapshot(tmp_path)
    assert snap.meta_problem is None and snap.hostname == "kvm"
    assert snap.state("/dev/kvm") is PathState.ABSENT


@pytest.mark.parametrize("data, why", [
    (b'{"format": "host-snapshot/1", "absence": "parent-folder", "hostn', "not valid JSON"),  # cut short
    (b"\xff{", "not valid JSON"),
    (b"", "is empty"),
    (b"\xef\xbb\xbf \r\n", "is empty"),
    (b'["host-snapshot/1"]', "not a JSON object"),
    (b"[" * 100000, "not valid JSON"),
], ids=["truncated", "invalid-utf8", "empty", "bom-only", "not-an-object", "deeply-nested"])
def test_meta_that_cannot_be_parsed_is_judged_without_the_absence_convention(tmp_path, data, why):
    make_snapshot(tmp_path, {"root/dev/vfio/vfio": "", "commands/uname_-n": "kvm7\n", "commands/uname_-r": "6.1.0\n"})
    (tmp_path / "meta.json").write_bytes(data)
    snap = Snapshot(tmp_path)  # the host is judged, not reported unreachable
    assert why in snap.meta_problem and "\n" not in snap.meta_problem, snap.meta_problem
    assert "not collected" in snap.meta_problem
    assert snap.state("/dev/vfio/vfio") is PathState.PRESENT
    assert snap.state("/dev/kvm") is PathState.NOT_COLLECTED  # nothing judged absent on a guess
    assert snap.hostname == "kvm7" and snap.kernel_release == "6.1.0"  # from the recorded uname


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


@pytest.mark.parametrize("where", ["meta", "notes file"])
def test_a_file_the_collector_could_not_read_is_not_collected_never_absent(tmp_path, where):
    """The script notes `unreadable: PATH` (a non-root user, a file mode 0400) and leaves the parent folder:
    that path must not count as absent on the host. The notes travel in meta.json (vfio-certify collect) or
    in the script's own notes file (a bundle made by `sh collect.sh FILE`)."""
    note = "unreadable: /boot/config-6.1.0-57-amd64"
    meta = dict(COLLECTOR_META, **({"collector_notes": [note]} if where == "meta" else {}))
    files = {"root/boot/System.map-6.1.0-57-amd64": "", **({"notes": note + "\n"} if where == "notes file" else {})}
    snap = Snapshot(make_snapshot(tmp_path, files, meta=meta))
    assert snap.state("/boot/config-6.1.0-57-amd64") is PathState.NOT_COLLECTED
    assert snap.state("/boot/vmlinuz-6.1.0-57-amd64") is PathState.ABSENT
    assert snap.notes == [note]


def test_a_snapshot_read_in_memory_gives_the_facts_its_unpacked_folder_gives(tmp_path):
    """A live host's answer is read in memory (collect_snapshot without a folder): every fixture host, packed as a
    bundle, reads to the same facts from memory as from the folder it unpacks to."""
    from vfio_certify.facts import read_host_facts
    from vfio_certify.snapshot.bundle import read_bundle

    hosts = sorted(p for p in (Path(__file__).resolve().parent.parent / "fixtures" / "hosts").iterdir()
                   if (p / "meta.json").is_file())
    assert len(hosts) > 10
    for host in hosts:
        bundle = pack_bundle(host, tmp_path / f"{host.name}.tar.gz")
        on_disk = read_host_facts(Snapshot(unpack_bundle(bundle, tmp_path / host.name)))
        in_memory = read_host_facts(Snapshot.in_memory(read_bundle(bundle.read_bytes(), host.name), host.name))
        assert repr(in_memory) == repr(on_disk), host.name
