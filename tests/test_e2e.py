"""The end-to-end engine's parts that need no guest: hostdev XML, preflight, the journal, libvirt lookups.

libvirt's built-in test driver (test:///default: an in-memory hypervisor shipped with libvirt)
stands in for a host's libvirtd where only its API is exercised; the hot-plug flow itself is
tested in the lab (tests/lab)."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.hosts import intel_host
from vfio_certify.devices import parse_device
from vfio_certify.e2e.flow import E2EOptions, check_id_for, run_device
from vfio_certify.e2e.hostdev import alias_for, hostdev_matches, hostdev_xml, nodedev_name
from vfio_certify.e2e.journal import ChangeJournal
from vfio_certify.e2e.preflight import preflight
from vfio_certify.e2e.session import E2EConfig, E2ESession, E2ESetupError, default_libvirt_uri
from vfio_certify.facts.usb import UsbDevice
from vfio_certify.lab import templates
from vfio_certify.model import Outcome

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("device", ["07:00.1", "004.002", "152d:9561"])
def test_hostdev_xml_is_valid_domain_xml(device, tmp_path):
    if not shutil.which("virt-xml-validate"):
        pytest.skip("needs virt-xml-validate (libvirt-clients; scripts/setup.sh installs it)")
    spec = parse_device(device)
    xml = hostdev_xml(spec)
    domain = templates.domain_xml(name="validate", kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
                                  console_log=tmp_path / "console.log", ssh_port=2222)
    proc = templates.validate(templates.wrap_device(domain, xml))
    assert proc.returncode == 0, proc.stdout
    assert alias_for(spec) in xml and "managed='yes'" in xml
    assert hostdev_matches(f"<domain><devices>{xml}</devices></domain>", spec)


def test_hostdev_xml_forms():
    assert "<address domain='0x0000' bus='0x07' slot='0x00' function='0x1'/>" in hostdev_xml(parse_device("07:00.1"))
    assert "<address bus='4' device='2'/>" in hostdev_xml(parse_device("004.002"))
    usb = hostdev_xml(parse_device("152d:9561"))
    assert "<vendor id='0x152d'/>" in usb and "<product id='0x9561'/>" in usb
    assert nodedev_name("0000:07:00.1") == "pci_0000_07_00_1"
    assert not hostdev_matches("<domain><devices>" + hostdev_xml(parse_device("07:00.0")) + "</devices></domain>",
                               parse_device("07:00.1"))


def test_preflight_passes_a_good_nic_and_refuses_the_management_nic():
    facts = intel_host()
    named = [parse_device("07:00.1")]
    assert preflight(facts, named[0], named, {}).ok
    mgmt = [parse_device("00:19.0")]
    refused = preflight(facts, mgmt[0], mgmt, {})
    assert not refused.ok and "eno1 carries the default route" in refused.refusals[0]
    assert "--force overrides this" in refused.refusals[0]
    assert preflight(facts, mgmt[0], mgmt, {}, force=True).ok


def test_preflight_refuses_a_non_viable_group_and_a_device_held_by_another_domain():
    facts = intel_host(iommu_groups={48: ["0000:07:00.0", "0000:07:00.1"]})
    facts.pci["0000:07:00.0"].iommu_group = 48
    facts.pci["0000:07:00.1"].iommu_group = 48
    spec = parse_device("07:00.1")
    refused = preflight(facts, spec, [spec], {"win10": "running"})
    assert any("group 48 is not viable" in r for r in refused.refusals)
    assert any("already assigned to domain 'win10'" in r for r in refused.refusals)


def test_preflight_refuses_an_ambiguous_usb_vendor_product():
    disks = [UsbDevice("4-1", "152d", "9561", 4, 2), UsbDevice("4-2", "152d", "9561", 4, 3)]
    facts = intel_host(usb=disks)
    spec = parse_device("152d:9561")
    assert not preflight(facts, spec, [spec], {}).ok
    by_address = parse_device("004.003")
    assert preflight(facts, by_address, [by_address], {}).ok


def test_journal_keeps_open_changes_until_closed_and_survives_a_cut_line(tmp_path):
    journal = ChangeJournal(tmp_path / "j.jsonl")
    first = journal.open_change(device="0000:07:00.1", domain="vm", alias="ua-x")
    second = journal.open_change(device="004.002", domain="vm", alias="ua-y")
    journal.close_change(second, "detached")
    with open(journal.path, "a") as f:
        f.write('{"id": "cut-by-a-cra')  # a crash mid-write
    assert [c["id"] for c in ChangeJournal(journal.path).leftovers()] == [first]
    journal.close_change(first, "recovered")
    assert ChangeJournal(journal.path).leftovers() == []


def test_libvirt_uri_from_the_host():
    assert default_libvirt_uri("local://") == "qemu:///system"
    assert default_libvirt_uri("ssh://root@kvm1:2222") == "qemu+ssh://root@kvm1:2222/system"


def test_a_device_held_by_another_domain_is_refused_through_libvirt(tmp_path):
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    spec = parse_device("07:00.1")
    other = ("<domain type='test'><name>holder</name><memory>65536</memory><os><type>hvm</type></os>"
             f"<devices>{hostdev_xml(spec)}</devices></domain>")
    conn.defineXML(other)
    try:
        class Guest:  # only what run_device touches before refusing: the libvirt side
            def __init__(self):
                self.conn, self.dom = conn, conn.lookupByName("test")

        journal = ChangeJournal(tmp_path / "j.jsonl")
        result = run_device(Guest(), intel_host(), spec, [spec], journal, "test:///default",
                            recollect=lambda: pytest.fail("nothing may be touched"), options=E2EOptions())
        assert result.id == "e2e.nic[0000:07:00.1]" == check_id_for(spec, intel_host())
        assert result.outcome is Outcome.FAILED and "already assigned to domain 'holder'" in result.message
        assert "refused before touching anything" in result.message
        assert journal.leftovers() == [] and not journal.path.exists()  # nothing was journalled: nothing changed
    finally:
        conn.lookupByName("holder").undefine()


def test_cli_e2e_reports_a_missing_domain_as_an_error_not_a_pass(tmp_path):
    pytest.importorskip("libvirt")
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--e2e", "--domain", "nosuch", "--guest",
                           "ssh://root@127.0.0.1:1", "--libvirt-uri", "test:///default", "--journal", tmp_path / "j",
                           "--device", "00:01.0", "--output", tmp_path / "o"], capture_output=True, text=True, cwd=REPO)
    [host] = json.loads((tmp_path / "o" / "summary.json").read_text())["hosts"]
    e2e = {c["id"]: c for c in host["checks"] if c["id"].startswith("e2e")}
    assert e2e["e2e.leftovers"]["outcome"] == "error" and "Domain not found" in e2e["e2e.leftovers"]["message"]
    assert any(k.startswith("e2e.") and k != "e2e.leftovers" and v["outcome"] == "error" for k, v in e2e.items())
    assert host["verdict"] != "certified" and proc.returncode == 1


def test_cli_e2e_usage_errors(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args)], capture_output=True, text=True,
                              cwd=REPO, timeout=120)

    two = cli("--e2e", "--domain", "vm", "--guest", "ssh://root@vm", "--host", "local://", "--host",
              "ssh://root@127.0.0.1:1", "--output", tmp_path / "o")
    assert two.returncode == 2 and "--e2e takes one host" in two.stderr
    bad_file = cli("--e2e", "--usb-file", "../etc/shadow", "--output", tmp_path / "o2")
    assert bad_file.returncode == 2 and "--usb-file" in bad_file.stderr
    # naming a device but no domain: the user's devices are never handed to a VM nobody named
    no_domain = cli("--e2e", "--device", "00:01.0", "--output", tmp_path / "o3")
    assert no_domain.returncode == 2 and "needs --domain NAME and --guest" in no_domain.stderr
    assert not (tmp_path / "o3").exists()
    # plain pytest cannot boot the nested lab: it says where that lives
    plain = subprocess.run([sys.executable, "-m", "pytest", "checks", "-p", "no:cacheprovider", "--e2e",
                            "--hosts=local://"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert plain.returncode == 4 and "`vfio-certify --e2e` alone runs the suite's own nested lab" in plain.stderr


def test_persistent_needs_a_persistent_domain(tmp_path):
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    conn.createXML("<domain type='test'><name>transient-vm</name><memory>65536</memory><os><type>hvm</type></os>"
                   "</domain>", 0)
    try:
        config = E2EConfig(domain="transient-vm", guest="ssh://root@vm", libvirt_uri="test:///default",
                           journal=str(tmp_path / "j.jsonl"), options=E2EOptions(persistent=True))
        with pytest.raises(E2ESetupError, match="--persistent: domain 'transient-vm' is transient"):
            E2ESession(config, "local://", recollect=lambda: pytest.fail("nothing may be touched")).start()
        config.options.persistent = False  # live only: a transient domain is fine
        session = E2ESession(config, "local://", recollect=lambda: pytest.fail("nothing may be touched")).start()
        assert session.guest.dom.name() == "transient-vm"
        session.close()
    finally:
        conn.lookupByName("transient-vm").destroy()


# --- the flow against a fake domain and guest ----------------------------------------------------------------------

class FakeDomain:
    """A stand-in for a running libvirt domain, as far as the hot-plug flow uses it: libvirt's test driver cannot
    hot-plug (attachDeviceFlags is unsupported there). attach/detach add and remove the device XML in the live XML;
    on_attach runs as the attach call returns; after drop() every call raises libvirtError, as on a dropped
    connection."""

    def __init__(self, on_attach=None):
        self.devices, self.dropped, self.on_attach = [], False, on_attach

    def _call(self):
        if self.dropped:
            import libvirt
            raise libvirt.libvirtError("internal error: client socket is closed")

    def name(self):
        return "vm"

    def isActive(self):
        self._call()
        return 1

    def XMLDesc(self, flags=0):
        self._call()
        return f"<domain><name>vm</name><devices>{''.join(self.devices)}</devices></domain>"

    def attachDeviceFlags(self, xml, flags):
        self._call()
        self.devices.append(xml)
        if self.on_attach:
            self.on_attach()

    def detachDeviceFlags(self, xml, flags):
        self._call()
        self.devices.remove(xml)


class FakeConn:
    """The connection around FakeDomain: no other domains, no event loop (the flow then watches the live XML)."""

    def listAllDomains(self, flags):
        return []

    def domainEventRegisterAny(self, *args):
        import libvirt
        raise libvirt.libvirtError("no event loop")


def fake_guest(dom, visible=True, proof=None, serial="QM0001", pace=None):
    """A DomainGuest whose guest side is canned: the wait scripts see the device once FakeDomain holds it (and
    visible), beside another USB disk (sda, another model) that was there before; proof(command) answers the rest;
    it answers `true` at the given pace (default: at once)."""
    from vfio_certify.e2e.guest import DomainGuest, Pace

    class Guest(DomainGuest):
        def measure_pace(self, dead_after_s=None):
            self.pace = pace or Pace(0.01)
            return self.pace

        def run(self, command, timeout=30.0, check=True):
            self.commands.append(command)
            if not command.startswith("probe()"):
                return proof(command)
            there = visible and bool(dom.devices)
            lines = ["block sda usb=2-1 0781:5567 serial=OTHER ro=0 sectors=100"]
            if there:
                lines += [f"usb 1-1 46f4:0001 serial={serial} product=QEMU", "pci 0000:01:00.0 8086:1521 driver=igb net=eth1",
                          f"block sdb usb=1-1 46f4:0001 serial={serial} ro=0 sectors=100"]
            wants_present = "if [ $rc = 0 ]" in command
            return subprocess.CompletedProcess(command, 0 if there == wants_present else 3, "\n".join(lines), "")

    guest = Guest(FakeConn(), dom, "ssh://root@vm")
    guest.commands = []
    return guest


def proof_output(block="sdb", sha=""):
    def proof(command):
        if f"/sys/block/{block} " not in command:
            return subprocess.CompletedProcess(command, 4, "mount-failed /dev/sda -o ro: wrong fs type\n", "")
        return subprocess.CompletedProcess(command, 0, f"blockdev-ro {block}=1\nmounted /dev/{block} (-o ro) ext2 ro,relatime\n"
                                           f"sha256 {sha} data.txt\n", "")
    return proof


USB = UsbDevice("1-1", "46f4", "0001", 1, 2, "QEMU disk", "QM0001")
FAST = dict(visible_timeout_s=0.2, removal_timeout_s=0.2)


def _run(guest, facts, device, journal, recollect=None, **options):
    spec = parse_device(device)
    return run_device(guest, facts, spec, [spec], journal, "qemu:///system",
                      recollect or (lambda: pytest.fail("not a PCI device")), E2EOptions(**FAST, **options))


def test_usb_proof_uses_our_disk_not_the_first_usb_disk_in_the_guest(tmp_path):
    pytest.importorskip("libvirt")
    dom, sha = FakeDomain(), "ab" * 32
    guest = fake_guest(dom, proof=proof_output("sdb", sha))
    result = _run(guest, intel_host(usb=[USB]), "46f4:0001", ChangeJournal(tmp_path / "j"),
                  known_file="data.txt", known_sha256=sha)
    assert result.outcome is Outcome.PASSED, result.message
    [proof] = [c for c in guest.commands if not c.startswith("probe()")]
    assert "/sys/block/sdb " in proof and "/dev/sda" not in proof
    assert "sdb marked read-only=True, mounted read-only=True, sha256 matches" in "\n".join(result.evidence)


def test_a_dropped_libvirt_connection_leaves_the_change_open_and_is_an_error(tmp_path):
    pytest.importorskip("libvirt")
    dom = FakeDomain()

    def proof(command):  # the connection drops while the guest proves the disk
        dom.dropped = True
        return proof_output("sdb")(command)

    journal = ChangeJournal(tmp_path / "j")
    result = _run(fake_guest(dom, proof=proof), intel_host(usb=[USB]), "46f4:0001", journal)
    assert dom.devices  # still attached: nothing could detach it
    assert result.outcome is Outcome.ERROR and "unknown whether ua-vfio-certify-46f4-0001 is still attached" in result.message
    assert "detached again" not in result.remediation
    assert "virsh -c qemu:///system detach-device-alias vm ua-vfio-certify-46f4-0001 --live" in result.remediation
    assert len(journal.leftovers()) == 1  # the next run recovers it


def test_ctrl_c_as_the_attach_returns_still_detaches(tmp_path):
    pytest.importorskip("libvirt")

    def interrupted():
        raise KeyboardInterrupt

    dom, journal = FakeDomain(on_attach=interrupted), ChangeJournal(tmp_path / "j")
    with pytest.raises(KeyboardInterrupt):
        _run(fake_guest(dom, proof=proof_output()), intel_host(usb=[USB]), "46f4:0001", journal)
    assert dom.devices == [] and journal.leftovers() == []


def _kept_on_vfio(facts, driver="vfio-pci", override="vfio-pci"):
    """07:00.1 set up with driverctl: bound to vfio-pci by driver_override, no netdev on the host."""
    facts.pci["0000:07:00.1"].driver, facts.pci["0000:07:00.1"].driver_override = driver, override
    facts.net.pop("enp7s0f1")
    return facts


def test_a_device_kept_on_vfio_pci_is_attached_unmanaged_and_expected_back_on_vfio_pci(tmp_path):
    pytest.importorskip("libvirt")
    dom = FakeDomain()
    result = _run(fake_guest(dom), _kept_on_vfio(intel_host()), "07:00.1", ChangeJournal(tmp_path / "j"),
                  recollect=lambda: _kept_on_vfio(intel_host()))
    assert result.outcome is Outcome.PASSED, result.message
    evidence = "\n".join(result.evidence)
    assert "attached managed='no'" in evidence
    assert "0000:07:00.1: driver vfio-pci (was vfio-pci), driver_override vfio-pci (was vfio-pci)" in evidence
    assert "managed='no'" in hostdev_xml(parse_device("07:00.1"), managed=False)

    # handed back to igb (what nodedev-reattach would do): not restored, and the fix is not nodedev-reattach
    back_on_igb = _run(fake_guest(FakeDomain()), _kept_on_vfio(intel_host()), "07:00.1", ChangeJournal(tmp_path / "k"),
                       recollect=intel_host)
    assert back_on_igb.outcome is Outcome.ERROR and "host is not restored" in back_on_igb.message
    assert "echo vfio-pci > /sys/bus/pci/devices/0000:07:00.1/driver_override" in back_on_igb.remediation
    assert "nodedev-reattach" not in back_on_igb.remediation


def test_the_host_is_checked_after_the_undo_of_a_failed_step(tmp_path):
    pytest.importorskip("libvirt")
    dom, journal, recollected = FakeDomain(), ChangeJournal(tmp_path / "j"), []

    def stuck_on_vfio():
        recollected.append(True)
        return _kept_on_vfio(intel_host(), override="")

    result = _run(fake_guest(dom, visible=False), intel_host(), "07:00.1", journal, recollect=stuck_on_vfio)
    assert recollected and dom.devices == [] and journal.leftovers() == []
    assert result.outcome is Outcome.ERROR and "not visible in the guest" in result.message
    assert "0000:07:00.1 is not back on igb (now vfio-pci)" in result.message
    assert result.remediation == "virsh -c qemu:///system nodedev-reattach pci_0000_07_00_1"


def _fake_usb_sysfs(root: Path, serial: str) -> None:
    """The few sysfs files the USB probe reads, under root/sys: one USB disk 46f4:0001 as sdq with this serial."""
    usb = root / "sys/devices/usb1/1-1"
    (usb / "1-1:1.0/host0/target0/0:0:0:0").mkdir(parents=True)
    for name, value in (("idVendor", "46f4"), ("idProduct", "0001"), ("serial", serial), ("product", "QEMU")):
        (usb / name).write_text(value + "\n")
    (root / "sys/bus/usb/devices").mkdir(parents=True)
    (root / "sys/bus/usb/devices/1-1").symlink_to(usb)
    (root / "sys/block/sdq").mkdir(parents=True)
    (root / "sys/block/sdq/ro").write_text("0\n")
    (root / "sys/block/sdq/size").write_text("16384\n")
    (root / "sys/block/sdq/device").symlink_to(usb / "1-1:1.0/host0/target0/0:0:0:0")


def _sh():
    return ["busybox", "sh"] if shutil.which("busybox") else ["sh"]


@pytest.mark.parametrize("serial", ['$(touch "$PWNED")', 'x" ] || touch "$PWNED" || [ "', "it's `touch $PWNED`"])
def test_the_usb_serial_is_never_run_as_shell_code(tmp_path, serial):
    from vfio_certify.e2e import hotplug

    _fake_usb_sysfs(tmp_path, serial)
    probe = hotplug.usb_disk_probe("46f4", "0001", serial).replace("/sys/", f"{tmp_path}/sys/")
    pwned = tmp_path / "pwned"
    proc = subprocess.run([*_sh(), "-c", probe], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                                      "PWNED": str(pwned)})
    assert not pwned.exists(), proc.stdout
    assert f"usb 1-1 46f4:0001 serial={serial} product=QEMU" in proc.stdout
    assert hotplug.usb_blocks([], proc.stdout.splitlines(), "46f4:0001", serial) == ["sdq"]
    assert hotplug.usb_blocks([], proc.stdout.splitlines(), "46f4:0001", "another") == []


def test_read_only_mount_options_replay_no_journal(tmp_path):
    from vfio_certify.e2e.hotplug import RO_MOUNT_OPTIONS

    mke2fs = shutil.which("mke2fs") or pytest.skip("needs mke2fs (e2fsprogs)")
    images = {}
    for fs in ("ext2", "ext3", "ext4"):
        images[fs] = tmp_path / f"{fs}.img"
        with open(images[fs], "wb") as f:
            f.truncate(8 << 20)
        subprocess.run([mke2fs, "-q", "-F", "-t", fs, str(images[fs])], check=True)
    images["xfs"] = tmp_path / "xfs.img"  # an XFS superblock starts with its magic
    images["xfs"].write_bytes(b"XFSB" + bytes(4092))
    images["empty"] = tmp_path / "empty.img"
    images["empty"].write_bytes(bytes(4096))
    got = {fs: subprocess.run([*_sh(), "-c", RO_MOUNT_OPTIONS + 'ro_opts "$0"', str(path)], capture_output=True,
                              text=True).stdout.strip() for fs, path in images.items()}
    assert got == {"ext2": "ro", "ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery", "empty": "ro"}


def test_read_only_proof_refuses_a_disk_in_use_and_checks_setro():
    from vfio_certify.e2e.hotplug import HotplugError, read_only_proof

    script = read_only_proof("sdb", "data.txt")
    for promise in ("/proc/mounts /proc/swaps", "/proc/self/mountinfo", "$s/holders", "exit 5",
                    "blockdev --setro /dev/$n || {", '[ "$r" = 1 ] ||', 'echo "mount-failed /dev/$dev -o $o:" $err'):
        assert promise in script, promise
    with pytest.raises(HotplugError):
        read_only_proof("sdb; reboot")


def test_a_second_run_on_the_same_journal_fails_fast_naming_the_holder(tmp_path):
    pytest.importorskip("libvirt")
    journal = tmp_path / "j.jsonl"
    ChangeJournal(journal).open_change(kind="hostdev", libvirt_uri="test:///default", domain="test", alias="ua-first",
                                       device="004.002", xml="<hostdev/>")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from vfio_certify.e2e.journal import ChangeJournal; "
                               "ChangeJournal(sys.argv[1]).lock(); print('locked', flush=True); sys.stdin.read()",
                               str(journal)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "locked\n"
        config = E2EConfig(domain="test", guest="ssh://root@vm", libvirt_uri="test:///default", journal=str(journal))
        session = E2ESession(config, "local://", recollect=lambda: pytest.fail("nothing may be touched"))
        with pytest.raises(E2ESetupError, match=rf"journal {journal} is in use by another vfio-certify run \(pid {holder.pid}"):
            session.start()
        assert len(ChangeJournal(journal).leftovers()) == 1  # the first run's open change is left to it
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    session = E2ESession(config, "local://", recollect=lambda: pytest.fail("nothing may be touched")).start()
    assert session.recovered == ["recovered 004.002 on test: was no longer attached"]  # the holder is gone: ours now
    session.close()


def test_preflight_refuses_an_sriov_pf_with_vfs_enabled():
    facts = intel_host()
    facts.pci["0000:07:00.1"].sriov_totalvfs, facts.pci["0000:07:00.1"].sriov_numvfs = 7, 2
    spec = parse_device("07:00.1")
    refused = preflight(facts, spec, [spec], {})
    assert not refused.ok and "SR-IOV PF with sriov_numvfs=2" in refused.refusals[0]
    assert "--force overrides this" in refused.refusals[0]
    assert "echo 0 > /sys/bus/pci/devices/0000:07:00.1/sriov_numvfs" in refused.remediation[0]
    assert preflight(facts, spec, [spec], {}, force=True).ok
    facts.pci["0000:07:00.1"].sriov_numvfs = 0
    assert preflight(facts, spec, [spec], {}).ok


def test_preflight_says_a_named_group_sibling_on_its_host_driver_fails_the_attach():
    facts = intel_host(iommu_groups={48: ["0000:07:00.0", "0000:07:00.1"]})
    facts.pci["0000:07:00.0"].iommu_group = 48
    facts.pci["0000:07:00.1"].iommu_group = 48
    named = [parse_device("07:00.0"), parse_device("07:00.1")]
    result = preflight(facts, named[1], named, {})
    assert result.ok and any("attached one at a time" in e and "nodedev-detach pci_0000_07_00_0" in e
                             for e in result.evidence)


def test_an_interface_type_hostdev_holds_the_device():
    held = ("<domain><devices><interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' "
            "bus='0x07' slot='0x00' function='0x1'/></source></interface></devices></domain>")
    assert hostdev_matches(held, parse_device("07:00.1")) and not hostdev_matches(held, parse_device("07:00.0"))


def test_recovery_closes_its_connections_sets_keepalive_and_keeps_what_libvirt_cannot_tell(tmp_path):
    libvirt = pytest.importorskip("libvirt")
    from vfio_certify.e2e.flow import recover_leftovers

    opened = []

    class Recorded:
        """A test:///default connection that records setKeepAlive and close; lookupByName fails as on a dropped
        connection for the domain 'dropped'."""

        def __init__(self, uri):
            self.conn, self.keepalive, self.closed = libvirt.open(uri), None, False
            opened.append(self)

        def setKeepAlive(self, interval, count):
            self.keepalive = (interval, count)

        def lookupByName(self, name):
            if name == "dropped":
                raise libvirt.libvirtError("internal error: client socket is closed")
            return self.conn.lookupByName(name)

        def close(self):
            self.closed = True
            return self.conn.close()

    journal = ChangeJournal(tmp_path / "j")
    for domain in ("test", "dropped"):
        journal.open_change(kind="hostdev", libvirt_uri="test:///default", domain=domain, alias="ua-x", device="004.002",
                            xml="<hostdev/>")
    lines = recover_leftovers(journal, Recorded)
    assert lines[0] == "recovered 004.002 on test: was no longer attached"
    assert lines[1].startswith("COULD NOT RECOVER 004.002 on dropped")
    assert [c["domain"] for c in journal.leftovers()] == ["dropped"]
    assert len(opened) == 1 and opened[0].closed and opened[0].keepalive == (5, 3)


def test_preflight_refuses_pci_stub_and_a_nic_whose_host_use_is_unknown():
    stub = intel_host()
    stub.pci["0000:07:00.1"].driver = "pci-stub"
    pf = preflight(stub, parse_device("07:00.1"), [parse_device("07:00.1")], {})
    assert not pf.ok and any("held by pci-stub" in r for r in pf.refusals), pf.refusals
    assert any("driverctl set-override 0000:07:00.1 vfio-pci" in r for r in pf.remediation)
    unknown = intel_host(routes=None)  # `ip` missing on the host: whether it uses the NIC is not known
    pf = preflight(unknown, parse_device("07:00.1"), [parse_device("07:00.1")], {})
    assert not pf.ok and any("whether the host uses this NIC is unknown" in r for r in pf.refusals), pf.refusals
    assert preflight(unknown, parse_device("07:00.1"), [parse_device("07:00.1")], {}, force=True).ok


def test_which_devices_go_in_managed():
    """managed='yes' unless the device is kept off the host (vfio-pci, a vfio-pci variant, pci-stub); a device
    with no driver is managed: libvirt's re-probe after the detach finds it no driver again."""
    from vfio_certify.e2e.hostdev import managed_for

    assert managed_for("igb") and managed_for("")
    assert not any(managed_for(d) for d in ("vfio-pci", "mlx5_vfio_pci", "pci-stub"))


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, anywhere in it (also inside functions), relative imports resolved."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_the_product_never_runs_on_the_test_lab():
    """e2e/ is the product's hot-plug engine; lab/ is its test bed and imports e2e, never the reverse."""
    e2e = sorted((REPO / "vfio_certify" / "e2e").glob("*.py"))
    assert {p.name for p in e2e} >= {"hotplug.py", "undo.py", "guest.py", "connection.py", "flow.py"}
    for path in e2e:
        imports = _imported_modules(path, "vfio_certify.e2e")
        assert not [m for m in imports if m == "vfio_certify.lab" or m.startswith("vfio_certify.lab.")], (path, imports)
    lab_imports = set().union(*(_imported_modules(p, "vfio_certify.lab") for p in (REPO / "vfio_certify" / "lab").glob("*.py")))
    assert "vfio_certify.e2e.hotplug" in lab_imports and "vfio_certify.e2e.undo" in lab_imports


def test_the_lab_guest_and_a_users_vm_are_one_guest_interface(tmp_path):
    """The engine and the flow drive a Guest; the lab's guests and a user's DomainGuest both are one."""
    import typing

    from vfio_certify.e2e.guest import DomainGuest, Guest
    from vfio_certify.e2e.hotplug import Hotplugger
    from vfio_certify.lab.guest import LabGuest
    from vfio_certify.lab.nested import L2Guest

    assert typing.get_type_hints(run_device)["guest"] is Guest
    assert typing.get_type_hints(Hotplugger.__init__)["guest"] is Guest
    users_vm = DomainGuest(None, None, "ssh://root@vm")
    lab_guest = LabGuest(None, None, tmp_path)
    assert isinstance(users_vm, Guest) and isinstance(lab_guest, Guest)
    assert issubclass(L2Guest, LabGuest)
    members = {"run", "live_xml", "is_running", "console_tail", "measure_pace"}
    for cls in (DomainGuest, LabGuest):
        for name in members:
            assert list(inspect_params(getattr(cls, name)))[:2] == list(inspect_params(getattr(Guest, name)))[:2], (cls, name)


def inspect_params(function):
    import inspect

    return inspect.signature(function).parameters


def test_a_slow_guest_gets_deadlines_from_its_pace_and_the_result_says_so(tmp_path):
    pytest.importorskip("libvirt")
    from vfio_certify.e2e.guest import Pace

    dom = FakeDomain()
    result = _run(fake_guest(dom, proof=proof_output("sdb"), pace=Pace(38.0)), intel_host(usb=[USB]), "46f4:0001",
                  ChangeJournal(tmp_path / "j"))
    assert result.outcome is Outcome.PASSED and result.message.endswith("; the guest is slow (answered in 38 s)")
    evidence = "\n".join(result.evidence)
    # 3 x 38 s for each SSH connection; the waits in the guest stretched 38/5 times (0.2 s -> 1.5 s)
    assert "the guest ran `true` over SSH: slow (answered in 38 s); deadlines: SSH connection 114 s, device " \
           "visible 2 s, removed 2 s" in evidence, evidence


def test_a_dead_guest_is_said_and_nothing_is_attached(tmp_path):
    pytest.importorskip("libvirt")
    from vfio_certify.e2e.guest import Pace

    dom, journal = FakeDomain(), ChangeJournal(tmp_path / "j")
    result = _run(fake_guest(dom, pace=Pace(None, 300.0)), intel_host(usb=[USB]), "46f4:0001", journal)
    assert result.outcome is Outcome.ERROR and result.message == "the guest is dead (no answer for 300 s): nothing was attached"
    assert not dom.devices and not journal.path.exists()


class SlowBanner:
    """A TCP forwarder on 127.0.0.1 in front of a real sshd that holds every connection `delay` seconds
    before passing anything on (a guest too busy to send its SSH banner); delay None: never passes anything
    (a guest that accepts connections and then answers nothing)."""

    def __init__(self, target_port: int, delay):
        import socket
        import threading

        self.target_port, self.delay = target_port, delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.delay is not None:
                threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client):
        import socket
        import threading

        time.sleep(self.delay)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self.sockets.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self):
        for s in [self.server, *self.sockets]:
            s.close()


@pytest.fixture
def sshd():
    from support.sshd import LoopbackSshd

    reason = LoopbackSshd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with LoopbackSshd() as server:
        yield server


def test_a_banner_slower_than_the_connect_timeout_is_a_slow_guest_not_a_dead_one(sshd):
    """The nested lab under load: "Connection timed out during banner exchange" from a guest that was alive.
    The command had not started, so the guest is asked again, found slow, and the command runs once, with an
    SSH deadline derived from how long the guest took."""
    from vfio_certify.e2e.guest import DomainGuest

    proxy = SlowBanner(sshd.port, delay=2.0)
    try:
        guest = DomainGuest(None, None, f"ssh://root@127.0.0.1:{proxy.port}", sshd.ssh_config,
                            connect_timeout_s=1, dead_after_s=30, slow_after_s=1)
        p = guest.run("echo $((6 * 7))")
        assert p.stdout == "42\n" and p.stderr == ""
        assert guest.pace.slow and 2 <= guest.pace.answered_s < 10, guest.pace
        assert guest.pace.describe() == f"slow (answered in {guest.pace.answered_s:.0f} s)"
        assert guest.pace.connect_timeout_s >= 6  # the next connections wait three times as long as it took
        assert len(sshd.remote_commands()) == 2  # the measuring `true`, then the command: once
    finally:
        proxy.close()


def test_a_guest_that_never_answers_is_dead_after_the_bound(sshd):
    from vfio_certify.e2e.guest import DomainGuest, GuestError

    proxy = SlowBanner(sshd.port, delay=None)
    try:
        guest = DomainGuest(None, None, f"ssh://root@127.0.0.1:{proxy.port}", sshd.ssh_config,
                            connect_timeout_s=1, dead_after_s=3)
        began = time.monotonic()
        with pytest.raises(GuestError) as raised:
            guest.run("true")
        message = str(raised.value)
        assert message.startswith("the guest stopped answering over SSH: ") and "banner exchange" in message
        assert message.endswith("; the guest is dead (no answer for 3 s)"), message
        assert time.monotonic() - began < 15 and sshd.remote_commands() == []
    finally:
        proxy.close()
