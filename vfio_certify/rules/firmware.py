"""firmware.iommu_table: the ACPI table that tells the kernel an IOMMU exists.

x86: DMAR (VT-d) or IVRS (AMD-Vi). arm64: the IORT's SMMU nodes; the IORT itself is on every GICv3-ITS
system, so only its nodes (or the SMMU the kernel probed from it) show an SMMU.
"""
from __future__ import annotations

from ..facts import HostFacts
from ..model import CheckResult, Outcome
from ..snapshot.reader import PathState
from .catalog import REQUIRED, check, not_collected, result
from .remedy import firmware_iommu

_KIND = {"DMAR": "Intel VT-d (ACPI DMAR)", "IVRS": "AMD-Vi (ACPI IVRS)"}


@check("firmware.iommu_table", REQUIRED,
       "the firmware describes an IOMMU (ACPI DMAR for VT-d, IVRS for AMD-Vi, IORT SMMU nodes on arm64)")
def iommu_table(facts: HostFacts) -> CheckResult:
    if facts.arch == "arm64":
        return _arm64_table(facts)
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


def smmu_units(facts: HostFacts) -> list[str]:
    """The SMMUs the kernel registered (/sys/class/iommu: smmu3.0x<base> for SMMUv3, smmu.0x<base> for v1/v2)."""
    return [u for u in facts.iommu_units or [] if u.startswith("smmu")]


def _devicetree_table(facts: HostFacts) -> CheckResult:
    """A device-tree host: an IOMMU node (#iommu-cells) serves PCIe only through a controller's iommu-map."""
    tree = facts.devicetree
    named = [f"{node} ({compatible or 'compatible not collected'})" for node, compatible in list(tree.iommus.items())[:4]]
    evidence = [f"device tree: {tree.model or 'model not read'}"] + [f"IOMMU node {n}" for n in named]
    if tree.pcie_iommu_maps:
        return result(iommu_table.id, Outcome.PASSED,
                      f"the device tree maps PCIe to an IOMMU (iommu-map in {', '.join(tree.pcie_iommu_maps[:4])})",
                      evidence + [f"{n}/iommu-map present" for n in tree.pcie_iommu_maps[:4]])
    what = (f"the device tree has IOMMUs for the SoC's own blocks ({', '.join(list(tree.iommus)[:3])}) but no PCIe "
            "controller with an iommu-map: PCI devices are not translated" if tree.iommus else
            "the device tree describes no IOMMU")
    return result(iommu_table.id, Outcome.FAILED, what, evidence + ["no node with an iommu-map"],
                  "PCI device assignment needs an SMMU that translates the PCIe controller: a device tree (or a "
                  "UEFI/ACPI firmware) from the board vendor that describes it, on a SoC that has one. Without "
                  "it this board cannot assign PCI devices to VMs.")


def _arm64_table(facts: HostFacts) -> CheckResult:
    tables, iort, dmesg = facts.acpi_tables, facts.iort, facts.dmesg
    if facts.devicetree is not None and facts.devicetree.present and not (tables and tables.get("IORT")):
        return _devicetree_table(facts)
    probed = smmu_units(facts)[:4] + (dmesg.smmu_probed[:1] if dmesg else [])
    listed = ["/sys/firmware/acpi/tables/IORT present"] if tables and tables.get("IORT") else []
    listed += dmesg.acpi_iort[:1] if dmesg else []
    if iort is not None and iort.smmus:
        return result(iommu_table.id, Outcome.PASSED,
                      f"firmware describes {iort.smmus} SMMU(s) (ACPI IORT)", [iort.summary()] + listed[1:] + probed[:1])
    if iort is not None and not iort.problem:
        return result(iommu_table.id, Outcome.FAILED,
                      "the ACPI IORT describes no SMMU (only the ITS for MSIs): the SMMU is off or absent in the firmware",
                      [iort.summary()] + ["no SMMU probed: /sys/class/iommu has no smmu unit"] * (not probed),
                      firmware_iommu(facts))
    if probed:  # the table's nodes were not read, or not whole; the kernel found an SMMU in it all the same
        return result(iommu_table.id, Outcome.PASSED, "firmware describes an SMMU (the kernel probed it)",
                      listed + probed + ([iort.summary()] if iort is not None else []))
    if listed:
        # A required check that cannot tell is not judged (the host is incomplete), never a warning that certifies.
        return result(iommu_table.id, Outcome.SKIPPED,
                      "not judged: an ACPI IORT exists, but its contents (/sys/firmware/acpi/tables/IORT) were not "
                      "collected, so whether it describes an SMMU is unknown (every GICv3-ITS system has an IORT, for "
                      "its MSIs), and no SMMU was probed",
                      listed + ([iort.summary()] if iort is not None else []),
                      "Re-collect with /sys/firmware/acpi/tables/IORT readable (as root) to judge its SMMU nodes.")
    if tables is None and dmesg is None:
        return not_collected(iommu_table.id, "/sys/firmware/acpi/tables and dmesg")
    if tables is None or facts.iort_state is PathState.NOT_COLLECTED:
        return result(iommu_table.id, Outcome.SKIPPED,
                      "not judged: /sys/firmware/acpi/tables/IORT was not collected and dmesg shows no IORT or SMMU",
                      [f"dmesg ({dmesg.lines_read} lines): no 'ACPI: IORT' or arm-smmu line"] if dmesg else [])
    if facts.devicetree is None:
        return result(iommu_table.id, Outcome.SKIPPED,
                      "not judged: no ACPI IORT, and the device tree (/sys/firmware/devicetree/base) was not collected",
                      ["/sys/firmware/acpi/tables has no IORT"])
    return result(iommu_table.id, Outcome.FAILED,
                  "no ACPI IORT table and no device tree: the firmware describes no SMMU for the kernel",
                  ["/sys/firmware/acpi/tables has no IORT"]
                  + ([f"dmesg ({dmesg.lines_read} lines): no 'ACPI: IORT' or arm-smmu line"] if dmesg else []),
                  firmware_iommu(facts))
