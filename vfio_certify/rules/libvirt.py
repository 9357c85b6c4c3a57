"""libvirt.*: what the host's libvirt and QEMU can do with a host device."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from . import remedy
from .catalog import NOT_APPLICABLE, REQUIRED, check, not_collected, result


@check("libvirt.hostdev", REQUIRED, "when libvirtd runs: virsh domcapabilities offers <hostdev> with the vfio PCI backend")
def hostdev(facts: HostFacts) -> CheckResult:
    lv = facts.libvirt
    if lv is None:
        return not_collected(hostdev.id, "virsh list --all")
    if not lv.virsh:
        return result(hostdev.id, Outcome.SKIPPED, "not applicable: libvirt is not installed (no virsh)",
                      skip_reason=NOT_APPLICABLE)
    if lv.domains is None:
        return result(hostdev.id, Outcome.SKIPPED, f"not applicable: libvirtd did not answer ({lv.list_error})",
                      skip_reason=NOT_APPLICABLE)
    evidence = list(lv.versions)
    caps = lv.domcaps
    if caps is None and not lv.domcaps_error:  # the reader names every failure; none: the command was not run
        return not_collected(hostdev.id, "virsh domcapabilities")
    if caps is None:
        return result(hostdev.id, Outcome.FAILED, f"virsh domcapabilities failed: {lv.domcaps_error}", evidence,
                      remedy.install_qemu(facts))
    evidence.insert(0, f"virsh domcapabilities: {caps.emulator or '?'} ({caps.machine or '?'}): hostdev supported="
                    f"{'yes' if caps.hostdev_supported else 'no'}, subsysType {', '.join(caps.subsys_types) or 'none'}, "
                    f"pciBackend {', '.join(caps.pci_backends) or 'none'}")
    if not caps.hostdev_supported or "vfio" not in caps.pci_backends:
        return result(hostdev.id, Outcome.FAILED,
                      "libvirt offers no VFIO PCI host device assignment with this QEMU (hostdev "
                      + ("unsupported" if not caps.hostdev_supported else "without the vfio pciBackend") + ")",
                      evidence, remedy.install_qemu(facts))
    if "usb" not in caps.subsys_types:
        return result(hostdev.id, Outcome.WARNING, "PCI host devices through VFIO, but no USB host devices",
                      evidence, remedy.install_qemu(facts))
    return result(hostdev.id, Outcome.PASSED, "libvirt assigns PCI devices through VFIO and USB devices", evidence)
