"""Pure judgements: each function takes HostFacts (and a device) and returns a CheckResult.

Modules follow the check ids: iommu.enabled is rules/iommu.py:enabled, and its pytest
wrapper is checks/test_iommu.py.
"""
