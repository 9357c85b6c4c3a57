"""The PCI tree: parsed from real sysfs captures (fixtures/captures, each citing its public source), read
from a snapshot's folders, carried into the host overview, and drawn as lanes by root port; a snapshot
without it is drawn in address order and says so, never as a wrong tree."""
import shutil
from pathlib import Path

from vfio_certify.devices import parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.pci_topology import from_folders, parse_device_paths, root_port
from vfio_certify.report import groups_picture
from vfio_certify.report.overview import overview_from_facts
from vfio_certify.snapshot.reader import Snapshot

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO / "fixtures" / "captures"
HOSTS = REPO / "fixtures" / "hosts"


def _capture(name: str) -> str:
    return "".join(l for l in (CAPTURES / name).read_text().splitlines(True) if not l.startswith("# "))


def test_ls_l_of_the_pci_devices_folder_gives_each_root_bus_function():
    tree = parse_device_paths(_capture("sysfs_pci_devices_links_ls_l_amd_matisse_ddcutil.txt"))
    assert len(tree) == 12 and set(tree.values()) == {"pci0000:00"}
    assert tree["0000:00:01.1"] == "pci0000:00" and tree["0000:00:03.2"] == "pci0000:00"
    assert "0000:00:07.1" not in tree  # its line was cut off before the path: no place, not a guess


def test_device_paths_through_a_pcie_switch_give_the_whole_chain():
    tree = parse_device_paths(_capture("sysfs_devices_paths_pcie_switch_nics_systemd.txt"))
    assert tree["0000:00:04.0"] == "pci0000:00"
    assert tree["0000:07:00.0"] == "0000:00:04.0"  # the switch's upstream port
    assert tree["0000:08:0a.0"] == "0000:07:00.0"  # one of its downstream ports
    assert tree["0000:0d:00.0"] == "0000:08:0a.0"  # eth8's function
    assert {a for a, p in tree.items() if p == "0000:07:00.0"} == {f"0000:08:{d}.0" for d in ("09", "0a", "0b", "0c", "0d")}
    assert root_port("0000:10:00.0", tree) == "0000:00:04.0"
    assert "0000:0c" not in str(tree.keys())  # pci_bus/0000:0c is a bus, not a function


def test_cut_garbled_and_binary_input_gives_no_wrong_place():
    assert parse_device_paths("") == {} and parse_device_paths(None) == {}
    assert parse_device_paths("\x00\xff\xfe garbage -> ../../../devices/pci0000:00/0000:00:1") == {}
    # the same function given two parents (a garbled paste) keeps the first; a loop has no root port
    tree = parse_device_paths("pci0000:00/0000:00:01.0/0000:01:00.0\npci0000:00/0000:00:02.0/0000:01:00.0\n")
    assert tree["0000:01:00.0"] == "0000:00:01.0"
    assert root_port("0000:01:00.0", {"0000:01:00.0": "0000:02:00.0", "0000:02:00.0": "0000:01:00.0"}) == ""
    assert root_port("0000:05:00.0", {"0000:05:00.0": "0000:00:1c.0"}) == ""  # its bridge's place was not read
    # folder listings: only function names count (port services, attributes, a bridge listing itself do not)
    tree = from_folders({"pci0000:00": ["0000:00:1c.0", "firmware_node", "power"]},
                        {"0000:00:1c.0": ["0000:03:00.0", "0000:00:1c.0:pcie002", "pci_bus", "0000:00:1c.0"]})
    assert tree == {"0000:00:1c.0": "pci0000:00", "0000:03:00.0": "0000:00:1c.0"}


def test_the_reader_reads_the_tree_from_a_snapshot_and_knows_when_it_was_not_collected(tmp_path):
    facts = read_host_facts(Snapshot(HOSTS / "cezanne-nonviable-group"))
    assert facts.pci_tree["0000:04:00.0"] == "0000:00:08.1" and facts.pci_tree["0000:00:08.1"] == "pci0000:00"
    assert set(facts.pci_tree) == set(facts.pci)  # every function has its place
    assert read_host_facts(Snapshot(HOSTS / "rocky9-before-intel-iommu")).pci_tree is None  # a bundle from before
    # a hostile snapshot: a file where a bridge folder's child should be, odd names; nothing raises
    host = _without_tree(tmp_path, "cezanne-nonviable-group")
    (host / "root/sys/devices/pci0000:00").mkdir(parents=True)
    (host / "root/sys/devices/pci0000:00/0000:00:08.1").mkdir()
    (host / "root/sys/devices/pci0000:00/not-a-function").mkdir()
    (host / "root/sys/bus/pci/devices/0000:00:08.1/0000:04:00.0").write_bytes(b"\xff\x00")
    facts = read_host_facts(Snapshot(host))
    assert not facts.read_errors and facts.pci_tree == {"0000:00:08.1": "pci0000:00"}


def _without_tree(tmp_path: Path, name: str) -> Path:
    host = tmp_path / name
    shutil.copytree(HOSTS / name, host, symlinks=True)
    shutil.rmtree(host / "root/sys/devices")
    for bridge in (host / "root/sys/bus/pci/devices").iterdir():
        for child in bridge.iterdir():
            if child.is_dir() and not child.is_symlink() and child.name.startswith("0000:"):
                shutil.rmtree(child)
    return host


def _overview(host: Path, device: str):
    spec = parse_device(device)
    return overview_from_facts(read_host_facts(Snapshot(host)), [spec])


def test_the_overview_carries_each_functions_parent():
    ov = _overview(HOSTS / "rocky9-after-intel-iommu", "0000:07:00.1")
    parents = {d.address: d.parent for g in ov.groups for d in g.devices}
    assert ov.pci_tree_collected
    assert parents["0000:07:00.1"] == "0000:00:1c.4" and parents["0000:02:00.0"] == "0000:00:02.0"
    assert parents["0000:00:1c.4"] == "pci0000:00" and parents["0000:ff:0b.0"] == "pci0000:ff"


def test_the_picture_of_a_host_with_its_tree_has_a_lane_per_root_port_the_named_group_first():
    ov = _overview(HOSTS / "cezanne-nonviable-group", "0000:04:00.0")
    pic = groups_picture.picture(ov.groups, ov.pci_tree_collected)
    lanes = [lane for s in pic.strips for lane in s.lanes]
    assert pic.tree
    first = lanes[0]
    assert first.title.startswith("root port 00:08.1 · ")  # the group of the named iGPU, under its bridge
    named = [b for b in first.boxes if b.named]
    assert len(named) == 1 and named[0].status == "not-viable" and named[0].number == 5
    assert [r.address for r in named[0].rows if r.named] == ["04:00.0"]
    assert sum(r.blocks for r in named[0].rows) == 4  # the audio, PSP and USB functions that block it
    titles = [lane.title for lane in lanes]
    for port in ("00:02.1", "00:02.2", "00:02.4"):
        assert any(t.startswith(f"root port {port}") for t in titles), titles
    assert "root bus 0000:00: integrated functions" in titles
    assert titles.index("root bus 0000:00: integrated functions") > titles.index(first.title)


def test_the_same_host_without_its_tree_is_drawn_in_address_order_and_says_so(tmp_path):
    ov = _overview(_without_tree(tmp_path, "cezanne-nonviable-group"), "0000:04:00.0")
    assert not ov.pci_tree_collected and all(d.parent == "" for g in ov.groups for d in g.devices)
    pic = groups_picture.picture(ov.groups, ov.pci_tree_collected)
    lanes = [lane for s in pic.strips for lane in s.lanes]
    assert not pic.tree and {lane.title for lane in lanes} == {groups_picture.NOT_COLLECTED_LANE}
    assert lanes[0].boxes[0].named  # the named device's group first


def test_lane_titles_name_the_root_port_and_fit_their_lane():
    ov = _overview(HOSTS / "rocky9-after-intel-iommu", "0000:07:00.1")
    lanes = [lane for s in groups_picture.picture(ov.groups, True).strips for lane in s.lanes]
    titles = [lane.title for lane in lanes]
    assert titles[0].startswith("root port 00:1c.4 · ") and titles[0].endswith("PCI Express Root Port #5")
    assert any(t.startswith("root port 00:02.0 · …") and t.endswith("Root Port 2") for t in titles), titles
    assert "root bus 0000:ff: integrated functions" in titles
    assert not any("[8086:" in t or "(rev" in t for t in titles)  # lspci's ids and revision left out
    assert all(len(lane.title) * groups_picture.TITLE_CHAR <= lane.width for lane in lanes)
