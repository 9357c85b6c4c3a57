"""The hot-plug engine: attach a device XML to a running domain, prove it in the guest, detach it,
prove it gone, timed step by step, with every change on an undo stack.

For each device:

1. look in the guest: the device is not there yet;
2. ``attachDeviceFlags(xml, VIR_DOMAIN_AFFECT_LIVE)`` (and ``AFFECT_CONFIG`` with persistent);
3. prove it in the guest over SSH (one SSH command that polls in the guest,
   so the timing is not a multiple of an SSH round trip), then the caller's proof
   (flow.py: the NIC's driver and link, the USB disk read back read-only);
4. ``detachDeviceFlags`` and wait (bounded) for libvirt's DEVICE_REMOVED event
   for the device alias -- or, failing that, for the alias to leave the live XML;
5. prove it is gone in the guest.

The attach registers an undo (detach) in the :class:`~vfio_certify.e2e.undo.UndoJournal`
first, so a failure anywhere leaves no device behind. The device is never written to.
The guest is anything that satisfies :class:`~vfio_certify.e2e.guest.Guest`: a user's VM
(DomainGuest) or the test lab's guest.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import threading
import time
from typing import Callable, Dict, List, Optional

from .guest import Guest, GuestError
from .undo import UndoJournal

MOUNT_POINT = "/mnt/lab-usb"


class HotplugError(RuntimeError):
    pass


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    evidence: List[str] = dataclasses.field(default_factory=list)
    detail: str = ""


@dataclasses.dataclass
class HotplugResult:
    device: str                      # "nic" | "usb-disk"
    alias: str
    xml: str
    steps: List[Step] = dataclasses.field(default_factory=list)
    removal_via: Optional[str] = None   # "event" | "live-xml"
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.steps) and all(s.ok for s in self.steps)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def durations(self) -> Dict[str, float]:
        return {s.name: round(s.seconds, 3) for s in self.steps}

    def summary(self) -> str:
        lines = [f"{self.device} ({self.alias}): {'OK' if self.ok else 'FAILED'}"
                 + (f" removal via {self.removal_via}" if self.removal_via else "")]
        for s in self.steps:
            lines.append(f"  {s.name:<22} {s.seconds:7.3f}s {'ok' if s.ok else 'FAIL'}"
                         + (f"  {s.detail}" if s.detail else ""))
            lines += [f"      | {e}" for e in s.evidence]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


# --------------------------------------------------------------------------
# guest-side probes (busybox sh). Each prints evidence lines and exits
#   0 -- fully present (NIC: PCI function bound to its driver, with a netdev
#        that `ip -o link` shows; disk: USB device + block device node),
#   1 -- entirely absent (no trace in sysfs or `ip -o link`),
#   2 -- partly there (e.g. PCI function without driver, USB device without
#        its block device yet): neither "visible" nor "gone".

_NIC_PROBE = r"""
full=0; any=0
for d in /sys/bus/pci/devices/*; do
  read -r v < $d/vendor; read -r p < $d/device
  [ "$v:$p" = "0x@V@:0x@D@" ] || continue
  any=1
  drv=$(readlink $d/driver); drv=${drv##*/}
  ifs=; for n in $d/net/*; do [ -e "$n" ] && ifs="$ifs ${n##*/}"; done; ifs=${ifs# }
  echo "pci ${d##*/} @V@:@D@ driver=${drv:-none} net=$ifs"
  for i in $ifs; do ip -o link show dev $i | sed 's/\\\s*/ /; s/^/link /'; done
  [ -n "$drv" ] && [ -n "$ifs" ] && ip -o link show dev ${ifs%% *} >/dev/null 2>&1 && full=1
done
@MACLINE@
[ $full = 1 ] && exit 0
[ $any = 0 ] && exit 1
exit 2
"""


def nic_probe(vendor: str, device: str, mac: str = "") -> str:
    """Guest probe for a PCI NIC by vendor:device (and, when known, its MAC in `ip -o link`)."""
    mac_line = f"if ip -o link | grep -qi {shlex.quote(mac)}; then any=1; fi" if mac else ""
    return _NIC_PROBE.replace("@V@", vendor).replace("@D@", device).replace("@MACLINE@", mac_line)


_USB_PROBE = r"""
full=0; any=0
for u in /sys/bus/usb/devices/*; do
  [ -f $u/idVendor ] || continue
  read -r v < $u/idVendor; read -r p < $u/idProduct
  [ "$v:$p" = "@V@:@P@" ] || continue
  any=1; s=; pr=
  [ -f $u/serial ] && read -r s < $u/serial; [ -f $u/product ] && read -r pr < $u/product
  echo "usb ${u##*/} @V@:@P@ serial=$s product=$pr"
done
for b in /sys/block/sd*; do
  [ -e "$b" ] || continue
  d=$(readlink -f $b/device)
  while [ -n "$d" ] && [ ! -f "$d/idVendor" ]; do d=${d%/*}; done
  [ -n "$d" ] || continue
  read -r v < $d/idVendor; read -r p < $d/idProduct; s=; [ -f $d/serial ] && read -r s < $d/serial
  read -r ro < $b/ro; read -r size < $b/size
  echo "block ${b##*/} usb=${d##*/} $v:$p serial=$s ro=$ro sectors=$size"
  if [ "$v:$p" = "@V@:@P@" ]; then
    any=1
    { [ -z @S@ ] || [ "$s" = @S@ ]; } && [ -b /dev/${b##*/} ] && full=1
  fi
done
[ $full = 1 ] && exit 0
[ $any = 0 ] && exit 1
exit 2
"""


def usb_disk_probe(vendor: str, product: str, serial: str = "") -> str:
    """Guest probe for a USB disk by vendor:product (and serial when given) with its block device.
    The serial is the device's own string: shell-quoted, never pasted into the script as code."""
    return _USB_PROBE.replace("@V@", vendor).replace("@P@", product).replace("@S@", shlex.quote(serial))


_BLOCK_LINE = re.compile(r"block (sd[a-z]+) usb=\S+ ([0-9a-f]{4}:[0-9a-f]{4}) serial=(.*) ro=\d+ sectors=\d+$")


def usb_blocks(before: List[str], after: List[str], vendor_product: str, serial: str = "") -> List[str]:
    """From the probe's lines before and after the attach: the block devices that are this USB disk --
    its vendor:product, its serial when it has one, and not there before the attach."""
    def disks(lines: List[str]):
        return [m.groups() for m in map(_BLOCK_LINE.match, lines) if m]

    old = {name for name, _, _ in disks(before)}
    return [name for name, vp, s in disks(after) if vp == vendor_product and (not serial or s == serial) and name not in old]



# Mount options that replay nothing, from the superblock (read, never written): ext3/4 with a journal
# get noload, xfs norecovery -- a dirty journal is not replayed onto the device.
RO_MOUNT_OPTIONS = r"""
ro_opts() {
  m=$(dd if=$1 bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
  c=$(dd if=$1 bs=1 skip=1116 count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
  if [ "$m" = 53ef ] && [ $(( ${c:-0} & 4 )) != 0 ]; then echo ro,noload
  elif [ "$(dd if=$1 bs=4 count=1 2>/dev/null)" = XFSB ]; then echo ro,norecovery
  else echo ro; fi
}
"""


def read_only_proof(block: str, known_file: str = "", sha256: str = "", mount_point: str = MOUNT_POINT) -> str:
    """Guest script: refuse a disk already mounted, swapped on or held (an automounter's rw mount would make
    a second read-only mount succeed), mark it and its partitions read-only in the kernel and check that
    they are (ro=1), mount the first mountable one READ-ONLY without a journal replay, show what is there,
    read the known file's checksum back, unmount. Never writes to the device. Exit 4: no filesystem
    mounted (mount's stderr shown), 5: in use, 6: not read-only."""
    if not re.fullmatch(r"sd[a-z]+", block):
        raise HotplugError(f"not a guest disk name: {block!r}")
    mp, file = shlex.quote(mount_point), shlex.quote(f"{mount_point}/{known_file}")
    check = (f'echo "sha256 $(sha256sum {file} | cut -d" " -f1) {known_file}"'
             if known_file else f'ls -1 {mp} | head -20 | sed "s/^/file /"')
    return (
        RO_MOUNT_OPTIONS + f"mkdir -p {mp}\n"
        f'grep -q " {mount_point} " /proc/mounts && {{ echo "in-use {mount_point} is already a mount point"; exit 5; }}\n'
        f"for s in /sys/block/{block} /sys/block/{block}/{block}*; do\n"
        "  [ -f $s/dev ] || continue; n=${s##*/}; read -r mm < $s/dev\n"
        '  if grep -q "^/dev/$n " /proc/mounts /proc/swaps || cut -d" " -f3 /proc/self/mountinfo | grep -qx "$mm"; then\n'
        '    echo "in-use /dev/$n is already mounted or swapped on"; exit 5; fi\n'
        '  h=$(ls $s/holders 2>/dev/null); [ -z "$h" ] || { echo "in-use /dev/$n is held by" $h; exit 5; }\n'
        "done\n"
        # The kernel then refuses every write, a journal replay on mount included.
        "ro=\n"
        f"for s in /sys/block/{block} /sys/block/{block}/{block}*; do\n"
        "  [ -f $s/ro ] || continue; n=${s##*/}\n"
        '  blockdev --setro /dev/$n || { echo "not-ro blockdev --setro /dev/$n failed"; exit 6; }\n'
        '  read -r r < $s/ro; ro="$ro $n=$r"; [ "$r" = 1 ] || { echo "not-ro /dev/$n: ro=$r after setro"; exit 6; }\n'
        "done\n"
        'echo "blockdev-ro${ro}"\n'
        f"for dev in $(ls -d /sys/block/{block}/{block}* 2>/dev/null | sed 's|.*/||') {block}; do\n"
        f"  o=$(ro_opts /dev/$dev); err=$(mount -o $o /dev/$dev {mp} 2>&1) && break\n"
        '  echo "mount-failed /dev/$dev -o $o:" $err; dev=\n'
        "done\n"
        '[ -n "$dev" ] || { echo "no mountable filesystem on ' + block + '"; exit 4; }\n'
        f"trap 'umount {mp}' EXIT\n"
        f'echo "mounted /dev/$dev (-o $o) $(grep " {mount_point} " /proc/mounts | cut -d" " -f3,4)"\n'
        f"{check}\n"
    )


def _wait_script(probe: str, present: bool, timeout: float) -> str:
    """Poll probe in the guest until it reports fully present (exit 0) or
    entirely absent (exit 1); bounded by timeout seconds of guest uptime."""
    want = "0" if present else "1"
    return (
        f"probe() {{ {probe}\n}}\n"
        "t0=$(cut -d' ' -f1 /proc/uptime); n=0\n"
        f"end=$(( ${{t0%.*}} + {max(1, int(round(timeout)))} ))\n"
        "while :; do\n"
        "  out=$(probe); rc=$?\n"
        f"  if [ $rc = {want} ]; then echo \"$out\"; "
        "echo \"guest-uptime $t0 -> $(cut -d' ' -f1 /proc/uptime) polls=$n\"; exit 0; fi\n"
        "  now=$(cut -d' ' -f1 /proc/uptime)\n"
        "  if [ ${now%.*} -ge $end ]; then echo \"$out\"; echo \"timeout (probe exit $rc)\"; exit 3; fi\n"
        "  n=$((n+1)); sleep 0.05\n"
        "done\n")


class _RemovalWatch:
    """DEVICE_REMOVED events of one domain, by alias."""

    def __init__(self, conn, dom):
        import libvirt

        self.conn = conn
        self._events: Dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.cb_id = None
        try:
            self.cb_id = conn.domainEventRegisterAny(
                dom, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._cb, None)
        except libvirt.libvirtError:
            self.cb_id = None  # no event loop: fall back to the live XML

    def _cb(self, _conn, _dom, alias, _opaque) -> None:
        self.event(alias).set()

    def event(self, alias: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(alias, threading.Event())

    def close(self) -> None:
        if self.cb_id is not None:
            try:
                self.conn.domainEventDeregisterAny(self.cb_id)
            except Exception:
                pass
            self.cb_id = None


class Hotplugger:
    """Runs the flow against one running domain and its guest."""

    def __init__(self, guest: Guest, journal: Optional[UndoJournal] = None,
                 visible_timeout: float = 30.0, removal_timeout: float = 30.0, persistent: bool = False):
        """persistent: attach and detach in the domain's persistent definition too (virsh --live
        --config), proven there after each; otherwise live only (virt-xml --update)."""
        import libvirt

        self.guest = guest
        self.journal = journal or guest.journal
        self.visible_timeout = visible_timeout
        self.removal_timeout = removal_timeout
        self.persistent = persistent
        self.flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else 0)
        self.flags_text = "AFFECT_LIVE|AFFECT_CONFIG" if persistent else "AFFECT_LIVE"
        self.watch = _RemovalWatch(guest.conn, guest.dom)

    def close(self) -> None:
        self.watch.close()

    # -- building blocks -------------------------------------------------------
    def _guest_wait(self, probe: str, present: bool, timeout: float):
        t = time.monotonic()
        p = self.guest.run(_wait_script(probe, present, timeout),
                           timeout=timeout + 20, check=False)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        return p.returncode == 0, lines, time.monotonic() - t

    def _in_live_xml(self, alias: str) -> bool:
        xml = self.guest.live_xml()
        return f"'{alias}'" in xml or f'"{alias}"' in xml

    def _in_persistent_xml(self, alias: str) -> bool:
        import libvirt

        xml = self.guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        return f"'{alias}'" in xml or f'"{alias}"' in xml

    def _persistent_step(self, res: HotplugResult, name: str, want: bool) -> None:
        """With persistent=True: the alias is (want) or is not in the persistent definition."""
        if not self.persistent:
            return
        there = self._in_persistent_xml(res.alias)
        res.steps.append(Step(name, 0.0, there == want,
                              [f"{res.alias} {'in' if there else 'not in'} the persistent definition"]))
        if there != want:
            raise HotplugError(f"{res.alias} {'missing from' if want else 'still in'} the domain's persistent definition")

    def _attach(self, res: HotplugResult, key: str) -> float:
        # The undo first: a Ctrl-C raised as the call returns must not leave the device attached with
        # nothing to undo it (the undo reads the XML first: undoing a device never attached does nothing).
        self.journal.push_undo(key, f"detach {res.device} {res.alias}",
                               lambda: self._detach_for_undo(res))
        t0 = time.monotonic()
        self.guest.dom.attachDeviceFlags(res.xml, self.flags)
        dt = time.monotonic() - t0
        self.journal.record("attach", f"{res.device} {res.alias} ({dt:.3f}s)")
        res.steps.append(Step("attach-call", dt, True, detail=f"attachDeviceFlags({self.flags_text})"))
        return t0

    def _active(self) -> Optional[bool]:
        """Whether the domain runs; None when it no longer exists. Raises when libvirt cannot say (a dropped
        connection): an unknown state is never taken for a detached device."""
        import libvirt

        try:
            return bool(self.guest.dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def attached(self, alias: str) -> Optional[bool]:
        """Whether alias is still in the domain (live, and with persistent in its definition); None: unknown."""
        try:
            active = self._active()
            return bool(active and self._in_live_xml(alias)
                        or active is not None and self.persistent and self._in_persistent_xml(alias))
        except Exception:
            return None

    def _detach_for_undo(self, res: HotplugResult) -> None:
        import libvirt

        active = self._active() if self.guest.dom is not None else None
        if active is None:
            return  # the domain is gone: nothing to detach
        if active and self._in_live_xml(res.alias):
            self.guest.dom.detachDeviceFlags(res.xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            self._wait_removed(res.alias, time.monotonic() + self.removal_timeout)
        if self.persistent and self._in_persistent_xml(res.alias):
            self.guest.dom.detachDeviceFlags(res.xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def _wait_removed(self, alias: str, deadline: float) -> str:
        ev = self.watch.event(alias)
        while time.monotonic() < deadline:
            if ev.wait(0.05):
                return "event"
            if not self._in_live_xml(alias):
                # the event may be a hair behind the XML; prefer reporting it
                return "event" if ev.wait(0.05) else "live-xml"
        raise HotplugError(f"{alias} still in the live XML after the detach timeout")

    def _detach(self, res: HotplugResult, key: str, gone_probe: str) -> None:
        import libvirt

        ev = self.watch.event(res.alias)
        ev.clear()
        t0 = time.monotonic()
        self.guest.dom.detachDeviceFlags(res.xml, self.flags)
        res.steps.append(Step("detach-call", time.monotonic() - t0, True, detail=f"detachDeviceFlags({self.flags_text})"))
        try:
            res.removal_via = self._wait_removed(res.alias, t0 + self.removal_timeout)
        except HotplugError:
            # The guest did not acknowledge the unplug (busy, paused, no hotplug driver): ask once more.
            res.steps.append(Step("detach->removed", time.monotonic() - t0, False,
                                  detail=f"not removed within {self.removal_timeout:.0f}s; detach retried"))
            self.journal.record("detach-retry", f"{res.device} {res.alias}")
            try:
                self.guest.dom.detachDeviceFlags(res.xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # the live side is what hangs
            except libvirt.libvirtError as exc:  # e.g. the first unplug request is still pending
                res.steps[-1].evidence.append(f"retry: {exc.get_error_message()}")
            try:
                res.removal_via = self._wait_removed(res.alias, time.monotonic() + self.removal_timeout)
            except HotplugError:
                raise HotplugError(f"{res.alias} still attached after the detach and one retry "
                                   f"({2 * self.removal_timeout:.0f}s): the guest does not release it") from None
        t_removed = time.monotonic()
        res.steps.append(Step("detach->removed", t_removed - t0, True,
                              detail=f"libvirt ({res.removal_via})"))
        self._persistent_step(res, "detach->persistent-removed", want=False)
        self.journal.discard_undo(key)
        self.journal.record("detached", f"{res.device} {res.alias} via {res.removal_via}"
                            f" ({t_removed - t0:.3f}s)")
        ok, lines, _ = self._guest_wait(gone_probe, present=False,
                                        timeout=self.visible_timeout)
        res.steps.append(Step("detach->gone-in-guest", time.monotonic() - t0, ok, lines))
        if not ok:
            raise HotplugError(f"{res.device} still visible in the guest after detach")

    def run_device(self, res: HotplugResult, probe: str, prove: Optional[Callable[[HotplugResult], None]] = None,
                   after_detach: Optional[Callable[[HotplugResult], None]] = None) -> HotplugResult:
        """The whole flow for any device XML: absent, attach, visible, prove, detach, gone, then
        after_detach (e.g. the host-side driver restore check); undone on any failure."""
        return self._run(res, f"hotplug:{res.alias}", probe, prove, after_detach)

    def _run(self, res: HotplugResult, key: str, probe: str,
             prove: Optional[Callable[[HotplugResult], None]] = None,
             after_detach: Optional[Callable[[HotplugResult], None]] = None) -> HotplugResult:
        tried = False  # the attach was called: after_detach then runs after the detach, or after the undo
        try:
            ok, lines, dt = self._guest_wait(probe, present=False, timeout=1)
            res.steps.append(Step("absent-before", dt, ok, lines))
            if not ok:
                raise HotplugError(f"a matching {res.device} is already in the guest")
            if self._in_live_xml(res.alias):
                raise HotplugError(f"alias {res.alias} already in the live XML")
            tried = True
            t0 = self._attach(res, key)
            ok, lines, _ = self._guest_wait(probe, present=True,
                                            timeout=self.visible_timeout)
            res.steps.append(Step("attach->visible", time.monotonic() - t0, ok, lines))
            self.journal.record("visible", f"{res.device} ok={ok}")
            self._persistent_step(res, "attach->persistent", want=True)
            if not ok:
                raise HotplugError(f"{res.device} not visible in the guest within "
                                   f"{self.visible_timeout:.0f}s")
            if prove:
                prove(res)
            self._detach(res, key, probe)
        except (HotplugError, GuestError, Exception) as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            self.journal.record("hotplug-failed", f"{res.device}: {res.error}", ok=False)
        finally:
            if key in self.journal.pending:  # still attached: undo now
                for err in self.journal.undo(key):
                    res.error = (res.error or "") + f"; undo failed: {err}"
                    tried = False  # still attached: the host side is not back to judge
        if tried and after_detach:  # detached, by the flow or by the undo: the host side is judged either way
            try:
                after_detach(res)
            except Exception as exc:
                res.error = (f"{res.error}; then " if res.error else "") + f"{type(exc).__name__}: {exc}"
                self.journal.record("hotplug-failed", f"{res.device}: {exc}", ok=False)
        return res
