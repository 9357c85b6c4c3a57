"""A fleet of fake KVM hosts reachable over real SSH on loopback (no mocks).

Each host is its own OpenSSH server on 127.0.0.2, 127.0.0.3, ... (Linux routes all of
127/8 to lo), with its own host key and log. Its sessions go through a forced command
that logs the command, then ``chroot``s into a small fake root built from a snapshot
folder (specs/snapshot.md layout) and runs the command there, so the collection script
reads THAT host's /proc, /sys, /boot, /etc ... and its uname/dmesg/lspci/lsusb/ip/grubby
replay the snapshot's commands/ outputs::

    from support.fleet import FleetHost, LoopbackFleet, DENIED

    with LoopbackFleet([FleetHost("kvm-a", "fixtures/hosts/a"),
                        FleetHost.slow("kvm-b", "fixtures/hosts/b", delay_s=5),
                        FleetHost.down("kvm-c"),                  # connection refused
                        FleetHost.down("kvm-d", how=DENIED)]) as fleet:
        fleet.urls["kvm-a"]              # "ssh://root@127.0.0.2:40123"
        fleet.ssh_config                 # one client config for every host (and by name)
        fleet.ansible_inventory          # INI inventory of the same hosts
        ...
        fleet.remote_commands("kvm-a")   # one line per session, like LoopbackSshd
        fleet.handshakes("kvm-a")        # logins sshd accepted
    # stopped: no sshd, session or chrooted process left; folder removed

See fleet.py (hosts, lifecycle) and rootfs.py (what a fake root holds, and why its
/bin/sh is dash rather than busybox sh).
"""

from .fleet import (
    DENIED,
    REFUSED,
    SILENT,
    FleetError,
    FleetHost,
    LoopbackFleet,
)
from .rootfs import RootfsError

__all__ = [
    "DENIED",
    "REFUSED",
    "SILENT",
    "FleetError",
    "FleetHost",
    "LoopbackFleet",
    "RootfsError",
]
