"""The end-to-end engine's parts that need no guest: hostdev XML, preflight, the journal, libvirt lookups.

libvirt's built-in test driver (test:///default: an in-memory hypervisor shipped with libvirt)
stands in for a host's libvirtd where only its API is exercised; the hot-plug flow itself is
tested in the lab (tests/lab)."""
import json
import shutil
import subprocess
import sys
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
