"""Each collected source is declared once (collect/spec.py) and read through that declaration.

The readers run on every fixture host through a snapshot that records each path, folder and command
they ask for: every one of them must be declared in the spec (a reader never reads what the script
does not collect), and every declared source must be read by some reader or say in `unread` why it
is collected anyway.
"""
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from vfio_certify.collect import spec
from vfio_certify.collect.script import expanded, render_script
from vfio_certify.facts import read_host_facts
from vfio_certify.snapshot.reader import Snapshot

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"


def _recorded(kind: str, accessor: str):
    def ask(self, arg):
        self.asked.add((kind, arg))
        return getattr(Snapshot, accessor)(self, arg)
    return ask


class RecordingSnapshot(Snapshot):
    """A snapshot that remembers what was asked of it (every other accessor goes through these five)."""

    def __init__(self, path):
        self.asked: set[tuple[str, str]] = set()
        super().__init__(path)

    state, read_bytes, link_name = (_recorded("path", a) for a in ("state", "read_bytes", "link_name"))
    listdir = _recorded("folder", "listdir")
    command = _recorded("command", "command")


def _virtio_and_acpi_member_host(folder: Path) -> Path:
    """What no fixture host has: a virtio NIC (its netdev sits on virtio0, a child of the PCI function),
    an IOMMU group member that is not a PCI function (an AMD IVRS ACPI device) with its driver, a
    device-tree SMMU below /soc, PCI functions behind an Intel VMD controller's own root bus, and an
    iommufd device node."""
    root = folder / "root"
    (folder / "root").mkdir(parents=True)
    (folder / "meta.json").write_text('{"format": "host-snapshot/1", "absence": "parent-folder", '
                                      '"hostname": "kvm-guest", "kernel_release": "6.1.0-13-amd64"}')
    function = root / "sys/bus/pci/devices/0000:00:03.0"
    function.mkdir(parents=True)
    (function / "vendor").write_text("0x1af4\n")
    (function / "device").write_text("0x1000\n")
    (function / "virtio0").write_text("")
    (root / "sys/class/net/eth0").mkdir(parents=True)
    (root / "sys/class/net/eth0/device").symlink_to("../../../bus/devices/virtio0")
    member = root / "sys/kernel/iommu_groups/3/devices/AMDI0020:00"
    member.mkdir(parents=True)
    (member / "driver").symlink_to("../../drivers/dw-apb-uart")
    # a device tree whose SMMU sits one level down (/soc/iommu@...), translating the PCIe controller beside it
    smmu = root / "sys/firmware/devicetree/base/soc/iommu@5000000"
    smmu.mkdir(parents=True)
    (smmu / "#iommu-cells").write_bytes(b"")
    (smmu / "compatible").write_bytes(b"arm,smmu-v3\0")
    (root / "sys/firmware/devicetree/base/soc/pcie@30000000").mkdir()
    (root / "sys/firmware/devicetree/base/soc/pcie@30000000/iommu-map").write_bytes(b"")
    (root / "sys/firmware/devicetree/base/model").write_bytes(b"a board\0")
    # an Intel VMD controller owning a root bus (domain 10000) with an NVMe drive behind its root port
    (root / "sys/devices/pci0000:00/0000:00:0e.0").mkdir(parents=True)
    (root / "sys/bus/pci/devices/0000:00:0e.0/pci10000:e0/10000:e0:06.0").mkdir(parents=True)
    (root / "sys/bus/pci/devices/10000:e0:06.0/10000:e1:00.0").mkdir(parents=True)
    (root / "sys/bus/pci/devices/10000:e1:00.0").mkdir(parents=True)
    # iommufd's node of the virtio function above (/dev/vfio/devices/vfio0), which /sys/class/vfio-dev names
    (root / "dev/vfio/devices").mkdir(parents=True)
    (root / "sys/class/vfio-dev/vfio0").mkdir(parents=True)
    (root / "sys/class/vfio-dev/vfio0/device").symlink_to("../../../bus/pci/devices/0000:00:03.0")
    (folder / "commands").mkdir()  # libvirt's facts (where who holds /dev/vfio is) are read when virsh was asked
    (folder / "commands/virsh_list_--all").write_text(" Id   Name   State\n------------------------\n\n")
    return folder


@pytest.fixture(scope="module")
def asked(tmp_path_factory) -> set[tuple[str, str]]:
    asked: set[tuple[str, str]] = set()
    made = _virtio_and_acpi_member_host(tmp_path_factory.mktemp("sources") / "host")
    for host in [*sorted(p for p in HOSTS.iterdir() if p.is_dir()), made]:
        snap = RecordingSnapshot(host)
        facts = read_host_facts(snap)
        assert not facts.read_errors, (host.name, facts.read_errors)
        if host == made:  # the paths below were really read, and understood
            assert facts.net["eth0"].device == "0000:00:03.0" and facts.other_group_members == {
                "AMDI0020:00": "dw-apb-uart"}
            assert facts.libvirt.vfio_open.devices == {"vfio0": "0000:00:03.0"}
            assert facts.devicetree.iommus == {"soc/iommu@5000000": "arm,smmu-v3"}
            assert facts.devicetree.pcie_iommu_maps == ["soc/pcie@30000000"] and facts.devicetree.model == "a board"
            assert facts.pci_tree["10000:e1:00.0"] == "10000:e0:06.0" and facts.pci_tree["10000:e0:06.0"] == "pci10000:e0"
        asked |= snap.asked
    return asked


def _patterns(source) -> list[str]:
    """The host paths a source puts in the snapshot, as globs ($KREL matches any release)."""
    if isinstance(source, spec.Command):
        return []
    path = source.path.replace("$KREL", "*")
    if isinstance(source, spec.Attributes):
        return [f"{path}/{name}" for name in source.names + source.text_names]
    return [path]


def _reads(source, asked: set[tuple[str, str]]) -> bool:
    if isinstance(source, spec.CommandEach):  # one command per name: `virsh dumpxml win11`
        return any(kind == "command" and path.startswith(source.line + " ") for kind, path in asked)
    if isinstance(source, spec.Command):
        return ("command", source.line) in asked
    for pattern in _patterns(source):
        for kind, path in asked:
            if kind == "path" and fnmatchcase(path, pattern):
                return True
            # a folder listed: the names in it are the fact (IOMMU units, group members, grub.d drop-ins)
            if kind == "folder" and fnmatchcase(path, pattern.rsplit("/", 1)[0]) and not isinstance(source, spec.Folder):
                return True
            if isinstance(source, spec.Folder) and (
                    fnmatchcase(path, pattern) or (kind == "path" and fnmatchcase(path.rsplit("/", 1)[0], pattern))):
                return True  # the folder is listed, or a path in it judged present or absent
    return False


def test_every_path_a_reader_reads_is_declared_in_the_spec(asked):
    patterns = [p for s in spec.SOURCES for p in _patterns(s)]
    commands = {s.line for s in spec.SOURCES if isinstance(s, spec.Command)}
    undeclared = []
    for kind, path in sorted(asked):
        if kind == "command":
            declared = path in commands or any(path.startswith(e.line + " ") for e in spec.COMMANDS_EACH)
        elif kind == "folder":  # a probed folder, or the folder a declared glob's names are in
            declared = any(fnmatchcase(path, p) or fnmatchcase(path, p.rsplit("/", 1)[0]) for p in patterns)
        else:
            declared = any(fnmatchcase(path, p) for p in patterns)
        if not declared:
            undeclared.append(f"{kind} {path}")
    assert not undeclared, "read but not declared in collect/spec.py: " + ", ".join(undeclared)


def test_every_declared_source_is_read_by_a_reader_or_says_why_not(asked):
    unread = [s for s in spec.SOURCES if not s.unread and not _reads(s, asked)]
    assert not unread, f"declared in collect/spec.py but read by no reader (say why in unread=): {unread}"
    # and a reason is not left on a source that is read after all
    stale = [s for s in spec.SOURCES if s.unread and _reads(s, asked)]
    assert not stale, f"read by a reader, yet marked unread: {stale}"


def test_every_source_is_declared_once_and_is_in_the_script():
    script = expanded(render_script())  # path words are written with the script's ABBREVIATIONS
    for source in spec.SOURCES:
        word = source.line if isinstance(source, spec.Command) else source.path
        assert script.count(f" {word}") >= 1, word
    twice = {s for s in spec.SOURCES if spec.SOURCES.count(s) > 1}
    assert not twice, f"declared twice in collect/spec.py: {twice}"


def test_at_fills_krel_and_glob_components_in_order():
    assert spec.MODULES_DEP.at(krel="6.8.12-4-pve") == "/lib/modules/6.8.12-4-pve/modules.dep"
    assert spec.PCI_DRIVER.at("0000:07:00.1") == "/sys/bus/pci/devices/0000:07:00.1/driver"
    assert spec.IOMMU_GROUP_OTHER_DRIVER.at("3", "AMDI0020:00") == \
        "/sys/kernel/iommu_groups/3/devices/AMDI0020:00/driver"
    assert spec.NET_LOWERS.folder("vlan10") == "/sys/class/net/vlan10"
