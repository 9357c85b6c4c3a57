"""firmware.iommu_table: ACPI DMAR (VT-d) or IVRS (AMD-Vi)."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import firmware

test_firmware_iommu_table = per_host(firmware.iommu_table)
