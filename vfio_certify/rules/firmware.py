"""firmware.iommu_table: the ACPI table that tells the kernel an IOMMU exists."""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from .catalog import REQUIRED, check, not_collected, result
from .remedy import firmware_iommu


@check("firmware.iommu_table", REQUIRED, "the firmware describes an IOMMU (ACPI DMAR for VT-d, IVRS for AMD-Vi)")
def iommu_table(facts: HostFacts) -> CheckResult:
    tables = facts.acpi_tables
    dmesg = facts.dmesg
    if tables and (tables.get("DMAR") or tables.get("IVRS")):
        found = [name for name in ("DMAR", "IVRS") if tables.get(name)]
        evidence = [f"/sys/firmware/acpi/tables/{name} present" for name in found]
        if dmesg:
            evidence += dmesg.acpi_dmar[:1] + dmesg.acpi_ivrs[:1]
        kind = "Intel VT-d (ACPI DMAR)" if "DMAR" in found else "AMD-Vi (ACPI IVRS)"
        return result(iommu_table.id, Outcome.PASSED, f"firmware describes {kind}", evidence)
    if dmesg and (dmesg.acpi_dmar or dmesg.acpi_ivrs):
        kind = "Intel VT-d (ACPI DMAR)" if dmesg.acpi_dmar else "AMD-Vi (ACPI IVRS)"
        return result(iommu_table.id, Outcome.PASSED, f"firmware describes {kind} (seen in dmesg)",
                      dmesg.acpi_dmar[:1] + dmesg.acpi_ivrs[:1])
    if tables is None and dmesg is None:
        return not_collected(iommu_table.id, "/sys/firmware/acpi/tables and dmesg")
    evidence = []
    if tables is not None:
        evidence.append("/sys/firmware/acpi/tables has neither DMAR nor IVRS")
    if dmesg is not None:
        evidence.append(f"dmesg ({dmesg.lines_read} lines) has no 'ACPI: DMAR' or 'ACPI: IVRS' line")
        evidence += dmesg.amd_vi[:2]
    return result(iommu_table.id, Outcome.FAILED,
                  "no ACPI DMAR or IVRS table: the IOMMU (VT-d / AMD-Vi) is off or absent in the firmware",
                  evidence, firmware_iommu(facts))
