"""firmware.iommu_table: ACPI DMAR (VT-d) or IVRS (AMD-Vi)."""
import pytest

from vfio_certify.rules import firmware


@pytest.mark.check("firmware.iommu_table")
def test_firmware_iommu_table(host_facts, certify):
    certify(firmware.iommu_table(host_facts))
