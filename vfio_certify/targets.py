"""The hosts a run certifies, from the command line: live hosts (testinfra specs; `ansible://GROUP` expands
to one target per inventory host), then snapshots (folders and bundles); with neither, this machine.

Light on purpose: the command makes its targets before pytest and the checks are imported, to start
collecting this machine at once (cli.collect_ahead); the plugin's session makes the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .collect.runner import Target, put_venv_on_path


@dataclass
class CertifyTarget:
    name: str  # as given on the command line
    source: str  # local, ssh, snapshot, ansible, ...
    spec: Optional[Target] = None  # live hosts
    snapshot_path: Optional[str] = None  # snapshot folders and bundles


def target_for(name: str, values: Any) -> Target:
    """How to reach the host `name` (a testinfra spec; no scheme means ssh://), from the option values
    (the command's argparse namespace or pytest's config.option)."""
    return Target(
        spec=name if "://" in name else f"ssh://{name}",
        ssh_config=getattr(values, "ssh_config", None),
        ssh_identity_file=getattr(values, "ssh_identity_file", None),
        ssh_extra_args=getattr(values, "ssh_extra_args", None),
        ansible_inventory=getattr(values, "ansible_inventory", None),
        sudo=bool(getattr(values, "sudo", False)),
        connect_timeout_s=values.connect_timeout,
        collect_timeout_s=values.collect_timeout,
    )


def expand_ansible(hosts: list[str], inventory: Optional[str]) -> list[str]:
    """ansible://GROUP or ansible://all becomes one ansible://HOST target per inventory host."""
    expanded: list[str] = []
    for spec in hosts:
        if not spec.startswith("ansible://"):
            expanded.append(spec)
            continue
        try:
            from testinfra.backend.ansible import AnsibleBackend

            put_venv_on_path()
            names = AnsibleBackend.get_hosts(spec[len("ansible://"):] or "all", ansible_inventory=inventory)
        except Exception:  # no ansible, bad inventory: the collection will say why, per host
            names = []
        expanded += [f"ansible://{n}" for n in names] or [spec]
    return list(dict.fromkeys(expanded))


def targets_from(hosts: list[str], snapshots: list[str], values: Any) -> list[CertifyTarget]:
    """The run's targets in command-line order: live hosts, then snapshots; the local host if none."""
    targets: list[CertifyTarget] = []
    for name in expand_ansible(hosts, getattr(values, "ansible_inventory", None)):
        spec = target_for(name, values)
        targets.append(CertifyTarget(name, spec.source, spec=spec))
    targets += [CertifyTarget(path, "snapshot", snapshot_path=path) for path in snapshots]
    if not targets:
        targets.append(CertifyTarget("local://", "local", spec=Target("local://")))
    return targets
