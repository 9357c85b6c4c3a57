"""firmware.iommu_table: the ACPI table that tells the kernel an IOMMU exists."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from .catalog import REQUIRED, check, not_collected, result
from .remedy import firmware_iommu

_KIND = {"DMAR": "Intel VT-d (ACPI DMAR)", "IVRS": "AMD-Vi (ACPI IVRS)"}


@check("firmware.iommu_table", REQUIRED, "the firmware describes an IOMMU (ACPI DMAR for VT-d, IVRS for AMD-Vi)")
def iommu_table(facts: HostFacts) -> CheckResult:
    table = facts.iommu_table  # every source that proves it, the strongest first
    if table.present:
        proofs = facts.iommu_table_proofs()
        how = "" if proofs[0][1].startswith("/sys/firmware/") else f" (shown by {proofs[0][1].split(' (', 1)[0]})"
        return result(iommu_table.id, Outcome.PASSED, f"firmware describes {_KIND[table.value]}{how}",
                      [line for _, line in proofs[:4]])
    if table.unknown:
        if facts.dmesg is None:
            return not_collected(iommu_table.id, "/sys/firmware/acpi/tables and dmesg")
        return result(iommu_table.id, Outcome.SKIPPED, "not judged: /sys/firmware/acpi/tables was not collected and "
                      + facts.dmesg.not_covering(through_iommu_init=False))
    evidence = [table.source]
    if facts.dmesg is not None and facts.acpi_tables is not None:
        gap = facts.dmesg.not_covering(through_iommu_init=False)
        evidence.append(gap or f"dmesg ({facts.dmesg.lines_read} lines, from boot) has no 'ACPI: DMAR' or 'ACPI: IVRS' line")
    if facts.dmesg is not None:
        evidence += facts.dmesg.amd_vi[:2]
    return result(iommu_table.id, Outcome.FAILED,
                  "no ACPI DMAR or IVRS table: the IOMMU (VT-d / AMD-Vi) is off or absent in the firmware",
                  evidence, firmware_iommu(facts))
