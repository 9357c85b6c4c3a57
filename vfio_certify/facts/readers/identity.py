"""Who the host is: its OS, its CPU and architecture, /dev/kvm and the VFIO container, a Proxmox boot tool."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..cpuinfo import parse_cpuinfo
from ..model import HostFacts
from ..osrelease import parse_os_release


def read_identity(snap: Snapshot, facts: HostFacts) -> None:
    facts.notes.extend(snap.notes)
    if snap.meta_problem:
        facts.notes.append(snap.meta_problem)
    text = snap.read_text(spec.OS_RELEASE.path)
    facts.os = parse_os_release(text) if text is not None else None
    text = snap.read_text(spec.PROC_CPUINFO.path)
    facts.cpu = parse_cpuinfo(text) if text is not None else None
    facts.kvm_device = snap.state(spec.DEV_KVM.path)
    facts.vfio_container = snap.state(spec.DEV_VFIO_NODES.at("vfio"))
    facts.proxmox_boot_tool = snap.exists(spec.PROXMOX_BOOT_TOOL.path)
    machine = snap.command(spec.UNAME_M.line)
    facts.machine = machine.stdout.strip() if machine is not None and machine.ok else ""
