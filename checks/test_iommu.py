"""iommu.*: enabled by the kernel, interrupt remapping, groups, isolation of named devices."""
import pytest

from vfio_certify.rules import iommu


@pytest.mark.check("iommu.enabled")
def test_iommu_enabled(host_facts, certify):
    certify(iommu.enabled(host_facts))


@pytest.mark.check("iommu.irq_remapping")
def test_iommu_irq_remapping(host_facts, certify):
    certify(iommu.irq_remapping(host_facts))


@pytest.mark.check("iommu.groups")
def test_iommu_groups(host_facts, certify):
    certify(iommu.groups(host_facts))


@pytest.mark.check("iommu.group_isolated")
@pytest.mark.device_kind("pci")
def test_iommu_group_isolated(host_facts, certify, device, named_devices):
    certify(iommu.group_isolated(host_facts, device, named_devices))
