"""iommu.*: enabled by the kernel, interrupt remapping, groups, isolation of named devices."""
from vfio_certify.checklist import per_device, per_host
from vfio_certify.rules import iommu

test_iommu_enabled = per_host(iommu.enabled)
test_iommu_irq_remapping = per_host(iommu.irq_remapping)
test_iommu_groups = per_host(iommu.groups)
test_iommu_group_isolated = per_device(iommu.group_isolated, kind="pci")
