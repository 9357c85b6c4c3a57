"""Network interfaces (the device each sits on, its master and lowers), routes, addresses, and the SSH
session the collection ran over: what must not be assigned away from the host."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..ip import parse_ip_addr
from ..model import HostFacts, NetInterface

_LOWER_PREFIX = spec.NET_LOWERS.path.rsplit("/", 1)[1].rstrip("*")  # lower_


def _net_device(snap: Snapshot, facts: HostFacts, name: str) -> str:
    """The PCI address (or USB interface) a netdev sits on. A virtio NIC's netdev sits on virtioN, whose
    parent is the PCI function: found by the virtioN marker in that function's folder."""
    device = snap.link_name(spec.NET_DEVICE.at(name)) or ""
    if device.startswith("virtio"):
        parent = next((a for a in facts.pci or {} if snap.exists(spec.PCI_VIRTIO.at(a, device))), "")
        return parent or device
    return device


def read_net(snap: Snapshot, facts: HostFacts) -> None:
    names = snap.listdir(spec.NET_CLASS.path)
    if names is not None:
        facts.net = {
            n: NetInterface(
                n, _net_device(snap, facts, n), snap.link_name(spec.NET_MASTER.at(n)) or "",
                tuple(e[len(_LOWER_PREFIX):] for e in snap.listdir(spec.NET_LOWERS.folder(n)) or []
                      if e.startswith(_LOWER_PREFIX)),
            )
            for n in names
        }
    routes = []
    collected = False
    for command in (spec.IP_ROUTE, spec.IP_ROUTE6):
        out = snap.command(command.line)
        if out is not None and out.ok:
            collected = True
            routes.extend(line.strip() for line in out.stdout.splitlines() if line.strip())
    facts.routes = routes if collected else None
    out = snap.command(spec.IP_ADDR.line)
    if out is not None and out.ok:
        facts.addresses = parse_ip_addr(out.stdout)
    out = snap.command(spec.SSH_CONNECTION.line)
    if out is not None and out.ok:
        fields = out.stdout.split()
        facts.ssh_session_address = fields[2] if len(fields) == 4 else ""
