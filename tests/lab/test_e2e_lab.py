"""End to end in the lab: `vfio-certify --e2e` on the nested lab, and a run killed mid-attach undone by the next."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path


from lab_helpers import _skip_unless_lab
from vfio_certify.e2e.flow import recover_leftovers
from vfio_certify.e2e.journal import ChangeJournal
from vfio_certify.lab import templates
from vfio_certify.lab.nested import L1_NIC_ADDRESS as NIC, USB_VENDOR_PRODUCT as USB

REPO = Path(__file__).resolve().parents[2]


def test_cli_e2e_alone_certifies_the_nested_lab_and_assigns_its_devices_as_hostdev(tmp_path):
    """`vfio-certify --e2e` with nothing named: the nested lab's L1, a real VT-d host, is certified over SSH
    and its e1000e (PCI, vfio-pci in L1) and USB disk go to L2 as <hostdev> and come back -- through the same
    checks and flow as a user's host; every e2e result says it was the lab."""
    _skip_unless_lab()
    journal = tmp_path / "journal.jsonl"
    before = _lab_pids()  # other labs of this session (the `lab` fixture) may be up
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--e2e", "--journal", journal,
                           "--output", tmp_path / "out"], capture_output=True, text=True, cwd=REPO, timeout=900)
    [host] = json.loads((tmp_path / "out" / "summary.json").read_text())["hosts"]
    checks = {c["id"]: c for c in host["checks"]}
    not_passed = {i: c["message"] for i, c in checks.items() if c["outcome"] in ("failed", "error")}
    assert proc.returncode == 0 and host["verdict"] == "certified", (not_passed, proc.stdout[-3000:], proc.stderr[-2000:])

    # statically: a real VT-d host (vendor from the DMAR table, although its CPU shows svm), its NIC alone in its group
    assert checks["firmware.iommu_table"]["outcome"] == "passed" and "DMAR" in checks["firmware.iommu_table"]["message"]
    assert checks["kernel.config[CONFIG_AMD_IOMMU]"]["outcome"] == "skipped"
    assert checks[f"iommu.group_isolated[{NIC}]"]["outcome"] == "passed"
    # end to end, each result saying which lab ran
    e2e = {i: c for i, c in checks.items() if i.startswith("e2e.")}
    assert set(e2e) == {"e2e.leftovers", f"e2e.nic[{NIC}]", f"e2e.usb[{USB}]"}
    for check in e2e.values():
        assert check["outcome"] == "passed" and check["evidence"][0].startswith("nested lab: the host is L1"), check
    nic = "\n".join(e2e[f"e2e.nic[{NIC}]"]["evidence"])
    assert "8086:10d3 driver=e1000e" in nic and "host-restored" in nic
    assert f"{NIC}: driver e1000e (was e1000e), driver_override clear" in nic
    usb = "\n".join(e2e[f"e2e.usb[{USB}]"]["evidence"])
    assert "sha256 matches" in usb and "ro," in usb
    assert "marked read-only=True, mounted read-only=True" in usb and "blockdev-ro sd" in usb
    assert ChangeJournal(journal).leftovers() == []
    left = _lab_pids() - before
    assert not left, f"lab processes left behind: {left}"


def _lab_pids() -> set:
    return set(subprocess.run(["pgrep", "-f", "vfio-certify-(lab|nested)-"], capture_output=True, text=True).stdout.split())


KILLED_MID_ATTACH = textwrap.dedent("""
    import os, signal, sys, libvirt
    from vfio_certify.e2e.journal import ChangeJournal
    uri, domain, xml, alias, journal = sys.argv[1:6]
    conn = libvirt.open(uri)
    dom = conn.lookupByName(domain)
    ChangeJournal(journal).open_change(kind="hostdev", libvirt_uri=uri, domain=domain, xml=xml, alias=alias,
                                       device="lab-nic", host_driver="")
    dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run: no teardown, no journal close
""")


def test_a_run_killed_mid_attach_is_undone_by_the_next_run(lab, tmp_path):
    import libvirt

    alias = "ua-killed-mid-attach"
    xml = templates.nic_xml(mac="52:54:00:de:ad:01", alias=alias)
    journal = tmp_path / "journal.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_ATTACH, lab.daemons.uri, lab.guest.dom.name(), xml, alias,
                           str(journal)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert alias in lab.guest.live_xml()  # the killed run left the device attached
    assert len(ChangeJournal(journal).leftovers()) == 1

    lines = recover_leftovers(ChangeJournal(journal), libvirt.open)  # what the next run does first
    assert lines == [f"recovered lab-nic on {lab.guest.dom.name()}: detached"]
    assert alias not in lab.guest.live_xml()
    assert ChangeJournal(journal).leftovers() == []
    assert recover_leftovers(ChangeJournal(journal), libvirt.open) == []  # nothing twice


def test_libvirt_refusing_the_attach_surfaces_its_message_and_leaves_nothing(lab):
    from vfio_certify.devices import parse_device
    from vfio_certify.e2e.hostdev import alias_for, hostdev_xml
    from vfio_certify.e2e.hotplug import HotplugResult, Hotplugger, nic_probe

    spec = parse_device("0000:7f:1f.7")  # no such device on this machine, and no IOMMU to assign it with
    res = HotplugResult("nic", alias_for(spec), hostdev_xml(spec))
    hotplugger = Hotplugger(lab.guest, visible_timeout=5)
    try:
        hotplugger.run_device(res, nic_probe("8086", "1521"))
    finally:
        hotplugger.close()
    assert not res.ok and "libvirtError" in res.error  # libvirt's own words, not a guess of ours
    assert len(res.error.split("libvirtError: ", 1)[1]) > 10, res.error
    assert res.alias not in lab.guest.live_xml()
    assert "hotplug:" + res.alias not in lab.journal.pending


def test_a_detach_the_guest_never_acknowledges_is_retried_then_reported(lab):
    import time

    from vfio_certify.e2e.hotplug import HotplugResult, Hotplugger, nic_probe

    mac, alias = "52:54:00:de:ad:02", "ua-never-detached"
    res = HotplugResult("nic", alias, templates.nic_xml(mac=mac, alias=alias))
    hotplugger = Hotplugger(lab.guest, visible_timeout=30, removal_timeout=2)
    try:
        # Proven in the guest, then the guest freezes: it can no longer acknowledge the unplug.
        hotplugger.run_device(res, nic_probe("8086", "10d3", mac), prove=lambda r: lab.guest.dom.suspend())
    finally:
        hotplugger.close()
        lab.guest.dom.resume()
    assert not res.ok and "still attached after the detach and one retry" in res.error
    assert any(s.name == "detach->removed" and not s.ok and "retried" in s.detail for s in res.steps)
    assert "undo failed" in res.error  # teardown tried too, and said so: never a silent leftover
    deadline = time.monotonic() + 30  # resumed, the guest completes the pending unplug by itself
    while alias in lab.guest.live_xml() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alias not in lab.guest.live_xml()
    lab.guest.run("true")  # and the lab guest is fine for the tests after this one
