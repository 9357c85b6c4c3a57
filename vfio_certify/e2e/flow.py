"""The end-to-end flow for one named device, as one check result (e2e.nic[...], e2e.usb[...]).

1. preflight on the host's facts (nothing is touched when it refuses);
2. the change is written to the on-disk journal, then the <hostdev> is attached live;
3. the guest proves it over SSH (PCI vendor:device, driver and link; USB disk read-only);
4. detach, wait for libvirt to remove it, prove it gone in the guest;
5. for PCI, the host is collected again: the device must be back on its original driver
   with driver_override clear (libvirt's managed re-bind);
6. the journal entry is closed. Anything left attached is undone, now or by the next run.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..devices import DeviceSpec
from ..facts import HostFacts
from ..lab.hotplug import HotplugError, HotplugResult, Hotplugger, Step, nic_probe, read_only_proof, usb_disk_probe
from ..model import CheckResult, Outcome, Severity
from ..rules.device import usb_matches
from .hostdev import alias_for, hostdev_matches, hostdev_xml, nodedev_name
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
    visible_timeout_s: float = 60.0
    removal_timeout_s: float = 60.0


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


def run_device(guest, facts: HostFacts, spec: DeviceSpec, named: list[DeviceSpec], journal: ChangeJournal,
               libvirt_uri: str, recollect: Callable[[], HostFacts], options: E2EOptions) -> CheckResult:
    """Run the whole flow for one device against a DomainGuest (or the lab's LabGuest)."""
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
    xml = hostdev_xml(spec)
    res = HotplugResult(check_id.split("[")[0].split(".")[1], alias_for(spec), xml)
    res.steps.append(Step("preflight", preflight_seconds, True, pf.evidence))
    change = journal.open_change(kind="hostdev", libvirt_uri=libvirt_uri, domain=guest.dom.name(), xml=xml,
                                 alias=res.alias, device=spec.key,
                                 host_driver=original.driver if original else "",
                                 host_driver_override=original.driver_override if original else "",
                                 persistent=options.persistent)
    hotplugger = Hotplugger(guest, visible_timeout=options.visible_timeout_s, removal_timeout=options.removal_timeout_s,
                            persistent=options.persistent)

    def prove_usb(r: HotplugResult) -> None:
        t = time.monotonic()
        block = next((line.split()[1] for line in r.step("attach->visible").evidence if line.startswith("block ")), None)
        if not block:
            raise HotplugError("no block device for the USB disk in the guest")
        p = guest.run(read_only_proof(block, options.known_file), timeout=60, check=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        mounted = next((ln for ln in lines if ln.startswith("mounted ")), "")
        read_only = " ro," in f" {mounted.split()[-1]}," if mounted else False
        sums = [ln.split()[1] for ln in lines if ln.startswith("sha256 ")]
        ok = p.returncode == 0 and read_only and (not options.known_sha256 or sums == [options.known_sha256])
        detail = f"mounted read-only={read_only}" + (f", sha256 {'matches' if ok else 'MISMATCH'}" if options.known_sha256 else "")
        r.steps.append(Step("read-only-proof", time.monotonic() - t, ok, lines, detail))
        if not ok:
            raise HotplugError(f"USB disk proof failed: {detail}")

    def host_restored(r: HotplugResult) -> None:
        t = time.monotonic()
        after = recollect().pci_device(spec.key)
        driver = after.driver if after else "(device gone)"
        override = after.driver_override if after else ""
        ok = after is not None and driver == original.driver and not override
        r.steps.append(Step("host-restored", time.monotonic() - t, ok,
                            [f"{spec.key}: driver {driver or 'none'} (was {original.driver or 'none'}), "
                             f"driver_override {override or 'clear'}"]))
        if not ok:
            raise HotplugError(
                f"{spec.key} is not back on {original.driver or 'no driver'} (now {driver or 'none'}"
                f"{', driver_override ' + override if override else ''}); recover by hand: "
                f"virsh -c {libvirt_uri} nodedev-reattach {nodedev_name(spec.key)}")

    try:
        hotplugger.run_device(res, _probe_for(spec, facts), prove_usb if not spec.is_pci else None,
                              host_restored if spec.is_pci else None)
    finally:
        hotplugger.close()
        still_attached = res.alias in _domain_xml_or_empty(guest, options.persistent)
        if not still_attached:
            journal.close_change(change, "detached" if res.ok else "undone after a failure")
    return _result(check_id, res, still_attached, libvirt_uri, guest, time.monotonic() - began, options.persistent)


def _domain_xml_or_empty(guest, persistent: bool) -> str:
    """The live XML, and with persistent the persistent definition too: where the device may still be."""
    import libvirt

    try:
        live = guest.live_xml() if guest.is_running() else ""
        return live + (guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else "")
    except Exception:
        return ""


def _result(check_id: str, res: HotplugResult, still_attached: bool, uri: str, guest, seconds: float,
            persistent: bool) -> CheckResult:
    timings = ", ".join(f"{s.name} {s.seconds:.2f} s" for s in res.steps if s.name in
                        ("attach->visible", "detach->gone-in-guest", "read-only-proof", "host-restored"))
    evidence = res.summary().splitlines()[1:]
    if res.ok:
        return CheckResult(check_id, Outcome.PASSED, Severity.REQUIRED,
                           f"attached, proven in the guest, detached, gone ({timings})", evidence, "", seconds)
    if still_attached:
        return CheckResult(check_id, Outcome.ERROR, Severity.REQUIRED,
                           f"could not be restored: {res.alias} is still attached to {guest.dom.name()}: {res.error}",
                           evidence, f"virsh -c {uri} detach-device-alias {guest.dom.name()} {res.alias} --live"
                           f"{' --config' if persistent else ''}", seconds)
    tail = guest.console_tail(20)
    if tail:
        evidence += ["--- guest console ---", *tail.splitlines()]
    return CheckResult(check_id, Outcome.FAILED, Severity.REQUIRED, f"end-to-end failed: {res.error}", evidence,
                       "The device was detached again. See the steps above for where it failed.", seconds)


def recover_leftovers(journal: ChangeJournal, open_connection: Callable[[str], object]) -> list[str]:
    """Undo what a killed run left attached. Returns one line per leftover: what was done."""
    import libvirt

    lines = []
    for change in journal.leftovers():
        uri, domain, alias = change.get("libvirt_uri", ""), change.get("domain", ""), change.get("alias", "")
        try:
            conn = open_connection(uri)
            try:
                dom = conn.lookupByName(domain)
                attached = dom.isActive() and alias in dom.XMLDesc(0)
            except libvirt.libvirtError:
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
            if change.get("device", "").count(":") == 2 and change.get("host_driver"):
                node = conn.nodeDeviceLookupByName(nodedev_name(change["device"]))
                if f"<name>{change['host_driver']}</name>" not in node.XMLDesc(0):
                    node.reAttach()  # back from vfio-pci to the host driver
            journal.close_change(change["id"], "recovered by a later run")
            lines.append(f"recovered {change.get('device')} on {domain}: "
                         f"{'detached' if attached else 'was no longer attached'}")
        except Exception as exc:
            lines.append(f"COULD NOT RECOVER {change.get('device')} on {domain} ({exc}); by hand: "
                         f"virsh -c {uri} detach-device-alias {domain} {alias} --live"
                         f"{' --config' if change.get('persistent') else ''}; "
                         f"virsh -c {uri} nodedev-reattach {nodedev_name(change.get('device', ''))}")
    return lines
