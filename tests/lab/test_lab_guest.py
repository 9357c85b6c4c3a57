"""The lab end to end: private libvirtd, a TCG guest booted from the host's
kernel + our initramfs, SSH into it, hot-plug an e1000e NIC and a USB disk,
prove them in the guest, detach, prove them gone, leave nothing behind.

Runs for real (no mocks). Skips -- naming the Debian package -- only when a
needed binary is missing; set VFIO_CERTIFY_SKIP_LAB=1 to skip on purpose.
Timings are printed (run with -s to see them) and attached to the report as
user properties.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest

from vfio_certify.lab import templates, tools
from vfio_certify.lab.daemons import _ns_of
from vfio_certify.lab.guest import Lab
from lab_helpers import _lab_processes_snapshot, _pids_alive, _skip_unless_lab
from vfio_certify.lab.hotplug import (NIC_DEVICE, NIC_VENDOR, USB_PRODUCT,
                                      USB_SERIAL, USB_VENDOR, LabHotplugger)

BOOT_BUDGET_S = 120.0


@pytest.fixture(scope="session")
def hotplugger(lab):
    hp = LabHotplugger(lab.guest)
    yield hp
    hp.close()


# --------------------------------------------------------------------------

def test_domain_and_device_xml_validate():
    gone = tools.missing(tools.VALIDATE_BINARIES)
    if gone:
        pytest.skip(f"needs {gone[0][1]} for {gone[0][0]} (scripts/setup.sh installs it)")
    dom = templates.domain_xml(name="vfio-certify-lab-xml", kernel="/boot/vmlinuz",
                               initrd="/tmp/initrd.gz", console_log="/tmp/console.log",
                               ssh_port=2222)
    for what, xml in [
        ("domain", dom),
        ("domain+nic", templates.wrap_device(dom, templates.nic_xml())),
        ("domain+usb-disk", templates.wrap_device(
            dom, templates.usb_disk_xml(source="/tmp/disk.raw"))),
    ]:
        res = templates.validate(xml)
        assert res.returncode == 0, f"{what} does not validate:\n{res.stdout}\n{xml}"
    # what the template promises
    assert "type='qemu'" in dom and "machine='q35'" in dom
    assert dom.count("model='pcie-root-port'") >= 4
    assert "model='qemu-xhci'" in dom
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in dom


def test_templates_escape_values():
    xml = templates.usb_disk_xml(source="/tmp/a'b<c>&d.raw")
    assert "a&#39;b&lt;c&gt;&amp;d.raw" in xml


def test_live_domain_xml_validates(lab):
    gone = tools.missing(tools.VALIDATE_BINARIES)
    if gone:
        pytest.skip(f"needs {gone[0][1]} for {gone[0][0]} (scripts/setup.sh installs it)")
    live = lab.guest.live_xml()
    res = templates.validate(live)
    assert res.returncode == 0, res.stdout


def test_guest_answers_ssh(lab, record_property):
    record_property("boot_to_ssh_seconds", round(lab.timings["boot_to_ssh_seconds"], 3))
    assert lab.timings["boot_to_ssh_seconds"] < BOOT_BUDGET_S
    p = lab.guest.run("uname -r; cat /proc/uptime; cat /run/lab-mgmt-nic")
    kver, uptime, mgmt = p.stdout.split("\n")[:3]
    assert kver == lab.image.kernel_version
    assert mgmt.startswith("eth")
    # the busybox link named "busybox" must not exist besides the binary
    p = lab.guest.run("ls -l /bin/busybox; [ -L /bin/busybox ] && echo LINK || echo FILE; "
                      "readlink /bin/sh; readlink /sbin/ip")
    assert "FILE" in p.stdout and p.stdout.count("/bin/busybox") >= 2
    # the testinfra ssh backend works with the same ssh_config
    host = lab.guest.testinfra_host()
    assert host.file("/etc/hostname").content_string.strip() == "lab-guest"


def test_nic_hotplug(hotplugger, record_property):
    res = hotplugger.nic()
    print("\n" + res.summary())
    for k, v in res.durations().items():
        record_property(f"nic:{k}", v)
    assert res.ok, res.summary()
    visible = res.step("attach->visible").evidence
    assert any(f"{NIC_VENDOR}:{NIC_DEVICE} driver=e1000e" in l for l in visible), visible
    assert any(l.startswith("link ") and "52:54:00:e1:00:0e" in l for l in visible), visible
    assert res.removal_via in ("event", "live-xml")
    assert res.step("detach->gone-in-guest").ok
    assert not [k for k in hotplugger.journal.pending if k.startswith("hotplug:")]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_usb_disk_hotplug(lab, hotplugger, record_property):
    image_before = _sha256(lab.disk.path)
    res = hotplugger.usb_disk(lab.disk)
    print("\n" + res.summary())
    for k, v in res.durations().items():
        record_property(f"usb:{k}", v)
    assert res.ok, res.summary()
    visible = res.step("attach->visible").evidence
    assert any(f"{USB_VENDOR}:{USB_PRODUCT} serial={USB_SERIAL}" in l for l in visible), visible
    rb = res.step("read-only-checksum")
    assert any(" ro," in l or l.split()[3].startswith("ro") for l in rb.evidence
               if "/mnt/lab-usb" in l and l.startswith("/dev/")), rb.evidence
    assert any(lab.disk.sha256 in l for l in rb.evidence), rb.evidence
    assert res.step("detach->gone-in-guest").ok
    # never written: the backing image is bit-for-bit unchanged
    assert _sha256(lab.disk.path) == image_before


def test_guest_that_stops_answering_is_reported_with_console(lab):
    """Pause the vCPU: a guest command must fail at its bounded timeout with
    the serial console tail in the error, and work again after resume."""
    from vfio_certify.e2e.guest import GuestError

    lab.guest.dom.suspend()
    try:
        t0 = time.monotonic()
        with pytest.raises(GuestError) as err:
            lab.guest.run("true", timeout=3)
        elapsed = time.monotonic() - t0
        msg = str(err.value)
        assert elapsed < 10, (elapsed, msg)
        assert "timed out after 3" in msg, msg
        assert "serial console tail" in msg, msg
    finally:
        lab.guest.dom.resume()
    back = lab.guest.run("echo back", timeout=30)
    assert back.stdout.strip() == "back", (back, lab.guest.console_tail())


def test_teardown_after_failure_leaves_nothing():
    """A second, short-lived lab: attach a NIC, fail mid-way (device still
    attached), and check that the teardown detached it, destroyed the guest,
    stopped the daemons and left no process (QEMU, libvirtd, virtlogd, the
    namespace holder, the ssh master) behind."""
    _skip_unless_lab()
    import libvirt

    lab = Lab()
    procs = {}
    with pytest.raises(RuntimeError, match="simulated failure"):
        with lab:
            procs = _lab_processes_snapshot(lab)
            assert any(c.startswith("qemu-system") for c in procs.values()), procs
            assert {"libvirtd", "virtlogd"} <= set(procs.values()), procs
            ns = lab.daemons.namespace
            assert ns and ns != _ns_of(os.getpid())
            lab.guest.dom.attachDeviceFlags(templates.nic_xml(alias="ua-labnicfail"),
                                            libvirt.VIR_DOMAIN_AFFECT_LIVE)
            lab.journal.push_undo("hotplug:ua-labnicfail", "detach",
                                  lambda: lab.guest.dom.detachDeviceFlags(
                                      templates.nic_xml(alias="ua-labnicfail"),
                                      libvirt.VIR_DOMAIN_AFFECT_LIVE))
            raise RuntimeError("simulated failure with a device attached")
    deadline = time.monotonic() + 5
    while _pids_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pids_alive(procs), f"survivors: {_pids_alive(procs)}\n{lab.journal.text()}"
    assert lab.leftover_processes == {}
    assert not lab.teardown_errors, lab.teardown_errors
    undone = [e.detail for e in lab.journal.entries if e.action == "undo" and e.ok]
    assert [d.split(":")[0] for d in undone] == [
        "hotplug", "ssh-master", "domain", "daemons"], lab.journal.text()
    shutil.rmtree(lab.workdir, ignore_errors=True)  # kept because it "failed"


def test_ssh_timeout_reports_the_serial_console():
    """A guest whose SSH never comes up (init is a shell on the console, no
    network, no dropbear): boot() must give up at the bounded timeout with an
    error carrying the serial console tail -- and still tear everything down."""
    _skip_unless_lab()
    from vfio_certify.lab.guest import SshTimeout

    lab = Lab(ssh_timeout=12.0, cmdline=templates.DEFAULT_CMDLINE.replace(
        "rdinit=/init", "rdinit=/bin/sh") + " loglevel=6")
    t0 = time.monotonic()
    with pytest.raises(SshTimeout) as err:
        lab.start()
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert "within 12s" in msg
    assert "serial console tail" in msg, msg
    # the console's last lines at the time (the shell's banner on an idle machine, kernel lines on a busy one)
    tail = msg.split("--- serial console tail", 1)[1].splitlines()[1:-1]
    console = lab.guest.console_log.read_text(errors="replace").replace("\r", "").splitlines()
    assert tail and console[console.index(tail[0]):][:len(tail)] == tail, (tail, console[-len(tail):])
    assert "never printed 'lab-init: starting busybox init'" in msg, msg
    assert elapsed < 40, elapsed
    assert lab.leftover_processes == {}
    assert not lab.teardown_errors, lab.teardown_errors
    shutil.rmtree(lab.workdir, ignore_errors=True)
