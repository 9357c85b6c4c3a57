"""The end-to-end flow for one named device, as one check result (e2e.nic[...], e2e.usb[...]).

1. preflight on the host's facts (nothing is touched when it refuses);
2. the change is written to the on-disk journal, then the <hostdev> is attached live;
3. the guest proves it over SSH (PCI vendor:device, driver and link; USB disk read-only);
4. detach, wait for libvirt to remove it, prove it gone in the guest;
5. for PCI, the host is collected again, also after a failed step's undo: the device must be
   back on its original driver with its original driver_override (libvirt's managed re-bind;
   a device kept on vfio-pci or a variant of it is attached managed='no' and left as it is; pci-stub is refused);
6. the journal entry is closed once libvirt says the device is gone. Anything left attached, or
   whose state libvirt could not tell, is undone now or by the next run.
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..devices import DeviceSpec
from ..facts import HostFacts
from .connection import open_with_keepalive
from .hotplug import (HotplugError, HotplugResult, Hotplugger, Step, nic_probe, read_only_proof, usb_blocks,
                      usb_disk_probe)
from ..model import CheckResult, Outcome, Severity
from ..rules.device import usb_matches
from .guest import DEAD_AFTER_S, Guest
from .hostdev import alias_for, hostdev_matches, hostdev_xml, managed_for, nodedev_name
from .journal import ChangeJournal
from .preflight import preflight

PCI_PROBE = r"""
d=/sys/bus/pci/devices
found=0
for f in $d/*; do
  read -r v < $f/vendor; read -r p < $f/device
  [ "$v:$p" = "0x@V@:0x@D@" ] || continue
  drv=$(readlink $f/driver); drv=${drv##*/}
  echo "pci ${f##*/} @V@:@D@ driver=${drv:-none}"
  [ -n "$drv" ] && found=1 || found=2
done
[ $found = 1 ] && exit 0
[ $found = 0 ] && exit 1
exit 2
"""


@dataclass
class E2EOptions:
    known_file: str = ""  # a file on the USB disk to read back
    known_sha256: str = ""
    force: bool = False  # assign a NIC the host uses (never the default)
    persistent: bool = False  # also in the domain's persistent definition (virsh --config), removed again
    visible_timeout_s: float = 60.0  # stretched for a slow guest (Pace.slowdown)
    removal_timeout_s: float = 60.0
    guest_dead_after_s: float = DEAD_AFTER_S  # a guest that answers no SSH command for this long is dead


@dataclass
class DeviceRun:
    check_id: str
    result: Optional[HotplugResult] = None
    refused: list[str] = field(default_factory=list)


def usb_file_problem(value: str) -> str:
    """'' when --usb-file is a relative path on the disk, optionally :<sha256>; else what is wrong."""
    if not value:
        return ""
    path = value.split(":")[0]
    if not re.fullmatch(r"[A-Za-z0-9._+/-]+(:[0-9a-fA-F]{64})?", value) or ".." in path.split("/"):
        return f"--usb-file {value!r}: expected a relative path [A-Za-z0-9._+/-] and optionally :<sha256>"
    return ""


def check_id_for(spec: DeviceSpec, facts: HostFacts) -> str:
    if not spec.is_pci:
        return f"e2e.usb[{spec.key}]"
    device = facts.pci_device(spec.key)
    kind = "nic" if device is not None and device.class_pair[0] == 0x02 else "pci"
    return f"e2e.{kind}[{spec.key}]"


def _held_by(conn, spec: DeviceSpec, own_domain: str) -> dict[str, str]:
    held = {}
    for dom in conn.listAllDomains(0):
        if dom.name() == own_domain:
            continue
        try:
            if hostdev_matches(dom.XMLDesc(0), spec):
                held[dom.name()] = "running" if dom.isActive() else "in its persistent definition"
        except Exception:
            continue
    return held


def _probe_for(spec: DeviceSpec, facts: HostFacts) -> str:
    if spec.is_pci:
        device = facts.pci_device(spec.key)
        if device.class_pair[0] == 0x02:
            return nic_probe(device.vendor, device.device)
        return PCI_PROBE.replace("@V@", device.vendor).replace("@D@", device.device)
    usb = _usb_of(spec, facts)
    return usb_disk_probe(usb.vendor, usb.product, usb.serial)


def _usb_of(spec: DeviceSpec, facts: HostFacts):
    return usb_matches(facts.usb or [], spec)[0]


def run_device(guest: Guest, facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec], journal: ChangeJournal,
               libvirt_uri: str, recollect: Callable[[], HostFacts], options: E2EOptions) -> CheckResult:
    """Run the whole flow for one device against a Guest (a user's DomainGuest, or a lab guest)."""
    check_id = check_id_for(spec, facts)
    began = time.monotonic()
    pf = preflight(facts, spec, named, _held_by(guest.conn, spec, guest.dom.name()), options.force)
    preflight_seconds = time.monotonic() - began
    if not pf.ok:
        return CheckResult(check_id, Outcome.FAILED, Severity.REQUIRED,
                           "refused before touching anything: " + "; ".join(pf.refusals), pf.evidence,
                           "\n".join(pf.remediation) or "See the static checks for this device.",
                           time.monotonic() - began)
    original = facts.pci_device(spec.key) if spec.is_pci else None
    managed = managed_for(original.driver) if original else True
    if not managed:
        pf.evidence.append(f"{spec.key} is kept on {original.driver or 'no driver'}: attached managed='no', libvirt "
                           "leaves its binding as it is" + ("" if original.driver == "vfio-pci" else " (VFIO needs vfio-pci)"))
    xml = hostdev_xml(spec, managed)
    restore = _restore_by_hand(spec.key, original.driver, original.driver_override, libvirt_uri) if original else ""
    res = HotplugResult(check_id.split("[")[0].split(".")[1], alias_for(spec), xml)
    res.steps.append(Step("preflight", preflight_seconds, True, pf.evidence))
    pace = guest.measure_pace(options.guest_dead_after_s)  # a slow guest is not a dead one: deadlines follow it
    visible_timeout, removal_timeout = (options.visible_timeout_s * pace.slowdown,
                                        options.removal_timeout_s * pace.slowdown)
    res.steps.append(Step("guest-answers", pace.answered_s if pace.alive else pace.waited_s, pace.alive,
                          [f"the guest ran `true` over SSH: {pace.describe()}"
                           + (f"; deadlines: SSH connection {pace.connect_timeout_s:.0f} s, device visible "
                              f"{visible_timeout:.0f} s, removed {removal_timeout:.0f} s" if pace.alive else "")],
                          pace.describe()))
    if not pace.alive:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"the guest is {pace.describe()}: nothing was attached", res.summary().splitlines()[1:],
                           "Check that the VM runs and answers SSH at --guest (ssh <guest> true), then run again.",
                           time.monotonic() - began)
    change = journal.open_change(kind="hostdev", libvirt_uri=libvirt_uri, domain=guest.dom.name(), xml=xml,
                                 alias=res.alias, device=spec.key,
                                 host_driver=original.driver if original else "",
                                 host_driver_override=original.driver_override if original else "",
                                 managed=managed, persistent=options.persistent)
    hotplugger = Hotplugger(guest, visible_timeout=visible_timeout, removal_timeout=removal_timeout,
                            persistent=options.persistent)

    def prove_usb(r: HotplugResult) -> None:
        t = time.monotonic()
        usb = _usb_of(spec, facts)
        blocks = usb_blocks(r.step("absent-before").evidence, r.step("attach->visible").evidence, usb.vendor_product,
                            usb.serial)
        if len(blocks) != 1:
            raise HotplugError(f"{len(blocks)} new block devices in the guest are {usb.vendor_product}"
                               f"{' serial ' + usb.serial if usb.serial else ''} ({', '.join(blocks) or 'none'}): "
                               "expected exactly one")
        p = guest.run(read_only_proof(blocks[0], options.known_file), timeout=60, check=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()] + [f"stderr: {ln}" for ln in p.stderr.splitlines()]
        mounted = next((ln for ln in lines if ln.startswith("mounted ")), "")
        read_only = " ro," in f" {mounted.split()[-1]}," if mounted else False
        marked = next((ln.split()[1:] for ln in lines if ln.startswith("blockdev-ro ")), [])
        marked_ro = bool(marked) and all(m.endswith("=1") for m in marked)
        sums = [ln.split()[1] for ln in lines if ln.startswith("sha256 ")]
        ok = p.returncode == 0 and read_only and marked_ro and (not options.known_sha256 or sums == [options.known_sha256])
        problem = next((ln for ln in lines if ln.split()[0] in ("in-use", "not-ro", "no")), "")
        detail = (f"{blocks[0]} marked read-only={marked_ro}, mounted read-only={read_only}"
                  + (f", sha256 {'matches' if sums == [options.known_sha256] else 'MISMATCH'}" if options.known_sha256 else "")
                  + (f": {problem}" if problem else ""))
        r.steps.append(Step("read-only-proof", time.monotonic() - t, ok, lines, detail))
        if not ok:
            raise HotplugError(f"USB disk proof failed: {detail}")

    def host_restored(r: HotplugResult) -> None:
        t = time.monotonic()
        after = recollect().pci_device(spec.key)
        driver = after.driver if after else "(device gone)"
        override = after.driver_override if after else ""
        ok = after is not None and (driver, override) == (original.driver, original.driver_override)
        r.steps.append(Step("host-restored", time.monotonic() - t, ok,
                            [f"{spec.key}: driver {driver or 'none'} (was {original.driver or 'none'}), "
                             f"driver_override {override or 'clear'}"
                             + (f" (was {original.driver_override})" if original.driver_override else "")],
                            "" if ok else f"not back on {original.driver or 'no driver'}"))
        if not ok:
            raise HotplugError(
                f"{spec.key} is not back on {original.driver or 'no driver'}"
                f"{' with driver_override ' + original.driver_override if original.driver_override else ''} "
                f"(now {driver or 'none'}{', driver_override ' + override if override else ''}); "
                f"recover by hand: {restore}")

    try:
        hotplugger.run_device(res, _probe_for(spec, facts), prove_usb if not spec.is_pci else None,
                              host_restored if spec.is_pci else None)
    finally:
        hotplugger.close()
        attached = hotplugger.attached(res.alias)  # None: libvirt could not say; the entry stays for the next run
        if attached is False:
            journal.close_change(change, "detached" if res.ok else "undone after a failure")
    result = _result(check_id, res, attached, libvirt_uri, guest, time.monotonic() - began, options.persistent, restore)
    if pace.slow and "the guest is " not in result.message:
        result.message += f"; the guest is {pace.describe()}"
    return result


def _restore_by_hand(address: str, driver: str, override: str, uri: str) -> str:
    """The command that puts a PCI function back on the driver and driver_override it had before the run."""
    if driver and managed_for(driver) and not override:
        return f"virsh -c {uri} nodedev-reattach {nodedev_name(address)}"
    sysfs = f"/sys/bus/pci/devices/{address}"
    return (f"echo {shlex.quote(override)} > {sysfs}/driver_override; echo {address} > {sysfs}/driver/unbind"
            + (f"; echo {address} > /sys/bus/pci/drivers_probe" if driver else ""))


def _detach_by_hand(uri: str, domain: str, alias: str, persistent: bool) -> str:
    return f"virsh -c {uri} detach-device-alias {domain} {alias} --live{' --config' if persistent else ''}"


def _result(check_id: str, res: HotplugResult, attached: Optional[bool], uri: str, guest, seconds: float,
            persistent: bool, restore: str = "") -> CheckResult:
    timings = ", ".join(f"{s.name} {s.seconds:.2f} s" for s in res.steps if s.name in
                        ("attach->visible", "detach->gone-in-guest", "read-only-proof", "host-restored"))
    evidence = res.summary().splitlines()[1:]
    domain = guest.dom.name()
    if attached is None:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"unknown whether {res.alias} is still attached to {domain} (libvirt did not answer); the "
                           f"journal keeps it for the next run to undo: {res.error or 'the flow itself passed'}",
                           evidence, "; ".join(filter(None, [_detach_by_hand(uri, domain, res.alias, persistent),
                                                             restore])), seconds)
    if res.ok:
        return CheckResult(check_id, Outcome.PASSED, Severity.REQUIRED,
                           f"attached, proven in the guest, detached, gone ({timings})", evidence, "", seconds)
    if attached:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"could not be restored: {res.alias} is still attached to {domain}: {res.error}",
                           evidence, _detach_by_hand(uri, domain, res.alias, persistent), seconds)
    restored = next((s for s in res.steps if s.name == "host-restored"), None)
    if restored is not None and not restored.ok:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"detached, but the host is not restored: {res.error}", evidence, restore, seconds)
    tail = guest.console_tail(20)
    if tail:
        evidence += ["--- guest console ---", *tail.splitlines()]
    return CheckResult(check_id, Outcome.FAILED, Severity.REQUIRED, f"end-to-end failed: {res.error}", evidence,
                       "The device was detached again. See the steps above for where it failed.", seconds)


def recover_leftovers(journal: ChangeJournal, open_connection: Callable[[str], object]) -> list[str]:
    """Undo what a killed run left attached. Returns one line per leftover: what was done."""
    lines, conns = [], {}
    try:
        for change in journal.leftovers():
            lines.append(_recover(journal, change, conns, open_connection))
    finally:
        for conn in conns.values():
            try:
                conn.close()
            except Exception:
                pass
    return lines


def _recover(journal: ChangeJournal, change: dict, conns: dict, open_connection: Callable[[str], object]) -> str:
    import libvirt

    uri, domain, alias = change.get("libvirt_uri", ""), change.get("domain", ""), change.get("alias", "")
    device = change.get("device", "")
    try:
        if uri not in conns:
            conns[uri] = open_with_keepalive(open_connection, uri)
        conn = conns[uri]
        try:
            dom = conn.lookupByName(domain)
            attached = dom.isActive() and alias in dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise  # libvirt could not say: the entry stays open
            dom, attached = None, False
        if attached:
            dom.detachDeviceFlags(change["xml"], libvirt.VIR_DOMAIN_AFFECT_LIVE)
            deadline = time.monotonic() + 60
            while alias in dom.XMLDesc(0) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alias in dom.XMLDesc(0):
                raise RuntimeError("still attached 60 s after the detach")
        if dom is not None and dom.isPersistent() and alias in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE):
            dom.detachDeviceFlags(change["xml"], libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            attached = True
        if device.count(":") == 2 and managed_for(change.get("host_driver", "")):
            node = conn.nodeDeviceLookupByName(nodedev_name(device))
            if f"<name>{change['host_driver']}</name>" not in node.XMLDesc(0):
                node.reAttach()  # back from vfio-pci to the host driver
        journal.close_change(change["id"], "recovered by a later run")
        return f"recovered {device} on {domain}: {'detached' if attached else 'was no longer attached'}"
    except Exception as exc:
        restore = (_restore_by_hand(device, change.get("host_driver", ""), change.get("host_driver_override", ""), uri)
                   if device.count(":") == 2 else "")
        return (f"COULD NOT RECOVER {device} on {domain} ({exc}); by hand: "
                + "; ".join(filter(None, [_detach_by_hand(uri, domain, alias, change.get("persistent")), restore])))
