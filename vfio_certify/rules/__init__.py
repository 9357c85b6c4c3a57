"""Pure judgements: each function takes HostFacts (and a device) and returns a CheckResult.

Modules follow the check ids: iommu.enabled is rules/iommu.py:enabled, registered there with
@check(id, severity, description) (rules/catalog.py is the registry), and its line in the
checklist is checks/test_iommu.py:test_iommu_enabled.
"""
