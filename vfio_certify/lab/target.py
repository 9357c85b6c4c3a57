"""`vfio-certify --e2e` with no --domain: the suite's own nested lab is the host under test.

L1, a TCG guest on this machine with an Intel vIOMMU (VT-d) and its own libvirtd, is certified
over SSH like any host; its emulated e1000e and USB disk are assigned as <hostdev> to L2, L1's
running guest, and proven, detached and restored by the same flow a real host gets. Only the
target differs: this module fills in the arguments a user would give for their own host.
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Iterator

NESTED_LAB_NOTE = ("nested lab: the host is L1, a TCG q35 guest of this machine with an Intel vIOMMU (VT-d) "
                   "and its own libvirtd; the VM is L2, L1's guest; the devices are L1's emulated e1000e "
                   "and USB disk, assigned as <hostdev>")


class NestedLabRunError(Exception):
    """The nested lab did not come up, or did not go away cleanly; str() is one line naming its logs."""


@contextmanager
def nested_lab_target(args: argparse.Namespace) -> Iterator[argparse.Namespace]:
    """Boot the nested lab, point `args` at it for the run, tear it down afterwards (also on Ctrl-C)."""
    from . import tools
    from .nested import NestedLab

    reason = tools.unavailable_reason()
    if reason:
        raise NestedLabRunError(f"the nested lab cannot run here: {reason}")
    lab = NestedLab()
    began = time.monotonic()
    try:
        lab.start()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NestedLabRunError(f"the nested lab did not start: {first} (its logs: {lab.workdir})") from None
    try:
        args.host = [lab.l1_ssh_url]
        args.ssh_config = str(lab.ssh_config)
        args.device = [lab.nic_address, lab.usb_vendor_product]
        args.domain, args.guest, args.guest_ssh_config = lab.domain, lab.l2_ssh_url, str(lab.ssh_config)
        args.libvirt_uri = lab.libvirt_uri
        args.usb_file = f"{lab.disk_known_file}:{lab.disk_sha256}"
        args.journal = args.journal or str(lab.workdir / "journal.jsonl")  # the lab's changes die with the lab
        args.e2e_lab = NESTED_LAB_NOTE + (f" (L2 under {'KVM in L1' if lab.l2_virt_type == 'kvm' else 'TCG'}"
                                          + (f"; {lab.fallbacks[0]}" if lab.fallbacks else "") + ")")
        print(f"vfio-certify: nested lab up in {time.monotonic() - began:.0f} s: "
              f"host L1 {lab.l1_ssh_url}, VM {lab.domain} ({lab.l2_virt_type}) at {lab.l2_ssh_url}, "
              f"devices {lab.nic_address} (e1000e) and {lab.usb_vendor_product} (USB disk)", flush=True)
        yield args
    finally:
        lab.close()
    if lab.teardown_errors or lab.leftover_processes:  # the reports are complete; this machine is not as found
        raise NestedLabRunError(f"the nested lab's teardown was not clean: "
                                f"{(lab.teardown_errors or [lab.leftover_processes])[0]} (its logs: {lab.workdir})")
