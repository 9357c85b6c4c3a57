"""device.in_use and who holds /dev/vfio/<group> open: the collection script's scan (run for real in dash and busybox
sh), its pure parser on a real capture from the nested lab, the capture cut or missing (skipped, never passed)."""
import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_parsers import capture

from support.hosts import intel_host, pci
from vfio_certify.collect import spec
from vfio_certify.collect.script import render_script
from vfio_certify.devices import parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.libvirt import HeldDevice, OpenVfioFiles, parse_open_vfio_files
from vfio_certify.facts.model import LibvirtFacts
from vfio_certify.facts.readers.libvirt import read_open_vfio_files
from vfio_certify.model import Outcome
from vfio_certify.rules import device_readiness as rd
from vfio_certify.snapshot import Snapshot

LAB = capture("vfio_open_files_nested_lab_qemu_holds_group.txt")  # L2's QEMU (pid 229) holds L1's group 5
NIC = parse_device("0000:00:03.0")
HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"


def _scan(stdout=LAB, stderr="", rc=0, groups=("5",)) -> OpenVfioFiles:
    return parse_open_vfio_files(list(groups), stdout, stderr, rc, spec.VFIO_OPEN_FILES.limit)


def _host(scan):
    """The lab's L1 as the checks see it: the e1000e 00:03.0 alone in group 5 (bound to vfio-pci), no libvirt domain
    and no QEMU command line naming it, and `scan` for who holds /dev/vfio open."""
    host = intel_host()
    devices = {a: d for a, d in host.pci.items() if d.iommu_group != 5}
    devices[NIC.key] = pci(NIC.key, "8086:10d3", "020000", "vfio-pci", 5)
    return dataclasses.replace(host, pci=devices, libvirt=LibvirtFacts(virsh=False, processes={}, vfio_open=scan))


def test_the_lab_capture_is_qemu_holding_the_group_and_the_container_from_a_chroot():
    scan = _scan()
    assert scan.gap == "" and scan.groups == ["5"]
    group, container = scan.files
    assert (group.pid, group.fd, group.path, group.comm, group.group) == ("229", "33", "/dev/vfio/5", "qemu-system-x86", "5")
    assert group.target == "/hostroot/dev/vfio/5"  # L1 runs libvirtd and QEMU in a chroot at /hostroot
    assert (container.path, container.group) == ("/dev/vfio/vfio", "")


def test_a_process_holding_the_devices_group_open_makes_it_in_use_with_pid_node_and_a_fix():
    r = rd.in_use(_host(_scan()), NIC)
    assert r.outcome is Outcome.FAILED
    assert r.message == ("0000:00:03.0 is already assigned: pid 229 (qemu-system-x86) holds /dev/vfio/5 open "
                         "(fd 33 -> /hostroot/dev/vfio/5)")
    assert "/proc/229/fd/33 -> /hostroot/dev/vfio/5 (qemu-system-x86)" in r.evidence
    assert r.remediation.startswith("Stop what holds /dev/vfio/5 open (pid 229 qemu-system-x86")
    assert "virsh detach-device" not in r.remediation  # no domain holds it: nothing to detach


def test_held_by_a_domain_and_open_in_a_process_names_both_and_both_fixes():
    facts = _host(_scan())
    facts.libvirt.held = [HeldDevice(NIC.key, "l2", "live XML, running")]
    r = rd.in_use(facts, NIC)
    assert r.outcome is Outcome.FAILED and "domain 'l2' (live XML, running)" in r.message and "pid 229" in r.message
    assert r.remediation.startswith("Detach it there first") and r.remediation.endswith(
        "Stop what holds /dev/vfio/5 open (pid 229 qemu-system-x86): shut its VM or application down cleanly.")


def test_a_device_whose_group_has_no_node_is_held_by_nobody():
    facts = _host(_scan())
    facts.pci["0000:07:00.0"] = pci("0000:07:00.0", "8086:1521", "020000", "igb", 47)
    r = rd.in_use(facts, parse_device("07:00.0"))
    assert r.outcome is Outcome.PASSED and "/dev/vfio/47 absent: no process can hold 0000:07:00.0's group open" in r.evidence
    r = rd.in_use(_host(OpenVfioFiles(groups=[], files=[])), NIC)  # /dev/vfio read: no group node at all
    assert r.outcome is Outcome.PASSED and "/dev/vfio/5 absent: no process can hold 0000:00:03.0's group open" in r.evidence
    assert r.message.endswith("and no process holds its VFIO group open")


def test_nobody_holding_it_passes_only_on_a_whole_scan():
    r = rd.in_use(_host(_scan(stdout="")), NIC)
    assert r.outcome is Outcome.PASSED and "open files under /dev/vfio: 0; no process(es) hold /dev/vfio/5" in r.evidence


@pytest.mark.parametrize("scan, says", [
    (OpenVfioFiles(groups=["5"]), "the scan of who holds /dev/vfio/5 open was not collected"),  # no scan: an older bundle
    (None, "/dev/vfio (whether a process holds a VFIO group open) was not collected"),
    (_scan(stdout=LAB[:12]), "its output is cut short or garbled"),  # the capture cut in its first line
    (_scan(stdout="", stderr="ls: cannot open directory '/proc/1/fd': Permission denied\n", rc=2),
     "the open files of 1 process(es) could not be read (Permission denied: pid 1; run as root)"),
    (_scan(stdout="", rc=124), "the scan of /proc/<pid>/fd timed out"),
    (_scan(stdout="\x00\xff garbage\n"), "its output is cut short or garbled"),
])
def test_a_missing_cut_or_partial_scan_is_skipped_never_passed(scan, says):
    r = rd.in_use(_host(scan), NIC)
    assert r.outcome is Outcome.SKIPPED and says in r.message, r.message


def test_a_holder_is_named_even_when_the_rest_of_the_scan_is_cut_or_partly_unreadable():
    cut = LAB.split("\n")[0] + "\n229 34 /hostroot/dev/vf"
    for scan in (_scan(stdout=cut), _scan(stderr="ls: /proc/1/fd/0: cannot read link: Permission denied\n")):
        assert scan.gap and rd.in_use(_host(scan), NIC).outcome is Outcome.FAILED


def test_the_parser_never_raises_and_keeps_only_vfio_nodes():
    for text in ("", "\n\n", "229", "229 33", "x y /dev/vfio/5 z\n", "229 33 /dev/vfio/../../etc/shadow cat\n",
                 "1 2 /tmp/dev/vfio/notes.txt vim\n", "\udcff" * 50):
        scan = _scan(stdout=text)
        assert all(f.group in ("", "5") for f in scan.files) and not [f for f in scan.files if ".." in f.target]
    assert _scan(stdout="7 3 /dev/vfio/5 (deleted) Web Content\n").files[0].comm == "Web Content"
    assert "only the first 2 open files were kept" in parse_open_vfio_files(["5"], LAB, "", 0, 2).gap


# -- the reader: /dev/vfio's group nodes say whether the scan was needed -------------------------------

def _snapshot(tmp_path, nodes, scan=None) -> Snapshot:
    root = tmp_path / "snap"
    (root / "root" / "dev").mkdir(parents=True)
    (root / "meta.json").write_text('{"format": "host-snapshot/1", "absence": "parent-folder"}')
    if nodes is not None:
        (root / "root/dev/vfio").mkdir()
        for node in nodes:
            (root / "root/dev/vfio" / node).write_bytes(b"")
    (root / "commands").mkdir()
    if scan is not None:
        (root / "commands" / spec.VFIO_OPEN_FILES.line).write_text(scan)
    return Snapshot(root)


def test_the_reader_knows_none_without_group_nodes_and_nothing_without_the_scan(tmp_path):
    read = read_open_vfio_files(_snapshot(tmp_path / "a", ["vfio", "5"], LAB))
    assert read.groups == ["5"] and [f.pid for f in read.files] == ["229", "229"]
    assert read_open_vfio_files(_snapshot(tmp_path / "b", ["vfio"])).files == []  # known none: the scan did not run
    assert read_open_vfio_files(_snapshot(tmp_path / "c", ["vfio", "5"])).files is None  # not collected
    assert read_open_vfio_files(_snapshot(tmp_path / "d", None)) is None  # /dev/vfio not collected


def test_the_fixture_host_with_a_bound_gpu_passes_and_without_the_scan_is_skipped(tmp_path):
    ryzen, gpu = HOSTS / "ryzen-vfio-bound-gpu", parse_device("2d:00.0")
    r = rd.in_use(read_host_facts(Snapshot(ryzen)), gpu)
    assert r.outcome is Outcome.PASSED and "open files under /dev/vfio: 0; no process(es) hold /dev/vfio/27" in r.evidence
    copy = tmp_path / "ryzen"
    shutil.copytree(ryzen, copy, symlinks=True)
    (copy / "commands" / spec.VFIO_OPEN_FILES.line).unlink()
    r = rd.in_use(read_host_facts(Snapshot(copy)), gpu)
    assert r.outcome is Outcome.SKIPPED and "the scan of who holds /dev/vfio/27 open was not collected" in r.message


# -- the script's scan, run for real ----------------------------------------------------------------------

def _vc_open() -> str:
    """vc_open, and the watchdog that bounds its scan as a command's."""
    script = render_script()
    starts = [script.index(f"{name}() {{") for name in ("vc_open", "vc_watch", "vc_wait")]
    return "".join(script[start:script.index("\n}\n", start) + 3] for start in starts)


@pytest.mark.parametrize("shell", ["dash", "busybox sh"])
def test_the_scan_finds_a_process_holding_a_node_and_runs_only_when_a_group_node_exists(shell, tmp_path):
    if not shutil.which(shell.split()[0]):
        pytest.skip(f"{shell} is not installed (scripts/setup.sh installs it)")
    node = tmp_path / "chroot" / "dev" / "vfio" / "5"  # as a process in a chroot at tmp_path/chroot sees it
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    holder = subprocess.Popen(["sh", "-c", f"exec 7<'{node}'; exec sleep 60"])
    try:
        out = tmp_path / "commands"
        out.mkdir()
        body = (f"C='{out}'; T='{tmp_path}'; NL='\n'; _k=0\n{_vc_open()}"
                f"vc_open scan 256 /dev/vfio '{node}'\nvc_open never 256 /dev/vfio '{tmp_path}/none/[0-9]*'\n")
        for _ in range(100):  # until the holder is sleep, which it becomes after opening the node
            if Path(f"/proc/{holder.pid}/comm").read_text() == "sleep\n":
                break
            time.sleep(0.05)
        subprocess.run([*shell.split(), "-c", body], check=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "never").exists()  # no group node matched: not scanned
    err = (out / "scan.err").read_text() if (out / "scan.err").exists() else ""
    scan = parse_open_vfio_files(["5"], (out / "scan").read_text(), err, 0, 256)
    [held] = [f for f in scan.files if f.pid == str(holder.pid)]
    assert (held.fd, held.path, held.group, held.comm, held.target) == ("7", "/dev/vfio/5", "5", "sleep", str(node))


# -- iommufd's device nodes (/dev/vfio/devices/vfioN): a QEMU given its device through iommufd holds that node ----
# The lab's QEMU uses the group interface, so these scans are written in the script's own line format (PID FD
# TARGET COMM), as it writes them for a node under /dev/vfio; the script's glob for them is run for real above.

CDEV_HELD = "311 24 /dev/vfio/devices/vfio0 qemu-system-x86\n311 25 /dev/iommu qemu-system-x86\n"


def test_a_process_holding_the_devices_iommufd_node_makes_it_in_use():
    scan = _scan(stdout=CDEV_HELD)
    [held] = scan.files
    assert (held.device_node, held.group) == ("vfio0", "")
    scan.devices = {"vfio0": NIC.key}
    r = rd.in_use(_host(scan), NIC)
    assert r.outcome is Outcome.FAILED
    assert r.message == ("0000:00:03.0 is already assigned: pid 311 (qemu-system-x86) holds /dev/vfio/devices/vfio0 "
                         "open (fd 24)")
    assert "iommufd device nodes held: /dev/vfio/devices/vfio0; 0000:00:03.0 is /dev/vfio/devices/vfio0" in r.evidence
    assert r.remediation.startswith("Stop what holds /dev/vfio/devices/vfio0 open (pid 311 qemu-system-x86")


def test_another_devices_iommufd_node_held_leaves_it_free_and_an_unknown_one_is_not_judged():
    scan = _scan(stdout=CDEV_HELD)
    scan.devices = {"vfio0": "0000:07:00.0"}
    r = rd.in_use(_host(scan), NIC)
    assert r.outcome is Outcome.PASSED
    assert "iommufd device nodes held: /dev/vfio/devices/vfio0; none of them is 0000:00:03.0 (/sys/class/vfio-dev)" in r.evidence
    scan.devices = None  # a bundle made before /sys/class/vfio-dev was read: which device vfio0 is, is unknown
    r = rd.in_use(_host(scan), NIC)
    assert r.outcome is Outcome.SKIPPED and "which device /dev/vfio/devices/vfio0 is (/sys/class/vfio-dev)" in r.message


def test_the_reader_maps_iommufd_nodes_to_devices_when_the_collection_looked(tmp_path):
    snap = _snapshot(tmp_path / "a", ["vfio", "5", "devices"], CDEV_HELD)
    assert read_open_vfio_files(snap).devices is None  # /sys/class/vfio-dev not read: not collected
    node = tmp_path / "a" / "snap" / "root" / "sys" / "class" / "vfio-dev" / "vfio0"
    node.mkdir(parents=True)
    (node / "device").symlink_to("../../../bus/pci/devices/0000:00:03.0")
    read = read_open_vfio_files(Snapshot(tmp_path / "a" / "snap"))
    assert read.devices == {"vfio0": "0000:00:03.0"} and read.files[0].device_node == "vfio0"
    assert rd.in_use(_host(read), NIC).outcome is Outcome.FAILED
    bare = _snapshot(tmp_path / "b", ["vfio", "devices"]).path  # no group node, and no scan
    (bare / "root" / "sys" / "class" / "vfio-dev").mkdir(parents=True)
    assert read_open_vfio_files(Snapshot(bare)).files == []  # the collection looked: no device node, nothing held
    (bare / "root" / "sys" / "class" / "vfio-dev" / "vfio0").mkdir()
    assert read_open_vfio_files(Snapshot(bare)).files is None  # a device node and no scan: who holds it is unknown
