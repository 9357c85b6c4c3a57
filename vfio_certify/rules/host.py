"""host.reachable: the host answered, and its facts were collected and read."""
from __future__ import annotations

from typing import Optional

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from .catalog import REQUIRED, check, result


def _nothing_collected(facts: HostFacts) -> bool:
    """None of the sources the checks judge is in the snapshot (an empty folder, a wrong bundle)."""
    sources = (facts.os, facts.cpu, facts.kernel_config, facts.cmdline, facts.dmesg, facts.acpi_tables,
               facts.iommu_units, facts.iommu_groups, facts.pci, facts.usb, facts.modules.loaded, facts.interrupts)
    return all(s is None for s in sources) and not facts.read_errors


@check("host.reachable", REQUIRED, "the host answered and its facts were collected")
def reachable(name: str, facts: Optional[HostFacts], error: str, seconds: float, source: str = "") -> CheckResult:
    if facts is None:
        return result(reachable.id, Outcome.FAILED, f"{name} could not be collected: {error}", [error],
                      "Make a new bundle on the host with `vfio-certify collect --host ... --output host.tar.gz` "
                      "(or `sh collect.sh host.tar.gz` there) and judge that one." if source == "snapshot" else
                      "Check that the host is up, reachable over SSH with key authentication, "
                      "and that the user can run /bin/sh.")
    identity = f"hostname {facts.hostname or '(unknown)'}, kernel {facts.kernel_release or '(unknown)'}"
    notes = [f"note: {n}" for n in facts.notes]
    if facts.read_errors:
        return result(reachable.id, Outcome.ERROR,
                      f"collected, but part of its facts could not be read: {'; '.join(facts.read_errors)}",
                      [identity, *[f"read error: {e}" for e in facts.read_errors], *notes],
                      "A bug in vfio-certify (its parsers must read any input): report it with this snapshot "
                      "(vfio-certify collect --output host.tar.gz). The checks above judged what could be read.")
    if _nothing_collected(facts):
        return result(reachable.id, Outcome.FAILED,
                      f"{name} holds none of the facts the checks judge (no /proc, /sys, /boot files or commands)",
                      [identity, *notes],
                      "Point --snapshot at the folder holding meta.json, root/ and commands/, or collect the host "
                      "again: vfio-certify collect --host ... --output host.tar.gz")
    return result(reachable.id, Outcome.PASSED, f"collected in {seconds:.2f} s", [identity, *notes])
