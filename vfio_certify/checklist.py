"""checks/ in one line per check: the pytest test of a check registered in rules/ (rules/catalog.py).

    test_iommu_enabled = per_host(iommu.enabled)                              # rule(facts)
    test_kernel_config = per_host(kernel.config_option, over=CONFIG_OPTIONS)  # rule(facts, option), one per option
    test_device_present = per_device(device.present)                          # rule(facts, spec), one per --device
    test_iommu_group_isolated = per_device(iommu.group_isolated, kind="pci")  # rule(facts, spec, named): PCI only
    test_host_reachable = per_collection(host.reachable)                      # rule(name, facts, error, seconds, source)

The test is named after the id (`test_` + the id with '.' as '_'), carries the `check` marker that
plugin.py reads, and records the rule's result with the `certify` fixture. A device rule whose third
parameter is `named` also gets every device named on the command line. e2e.* checks run the end-to-end
session, not a rule: checks/test_e2e.py writes them out.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable, Optional

import pytest

from .rules.catalog import Check


def _as_test(rule: Check, test: Callable) -> Callable:
    test.__name__ = test.__qualname__ = "test_" + rule.id.replace(".", "_")
    test.__doc__ = f"{rule.id} ({rule.severity.value}): {rule.description}"
    return pytest.mark.check(rule.id)(test)


def per_host(rule: Check, over: Optional[Iterable[str]] = None) -> Callable:
    """A check of the host: rule(facts), or rule(facts, value) once per value of `over` (id[value])."""
    if over is None:
        def test(host_facts, certify):
            certify(rule(host_facts))
        return _as_test(rule, test)

    def test_each(host_facts, certify, value):
        certify(rule(host_facts, value))
    return _as_test(rule, pytest.mark.parametrize("value", list(over))(test_each))


def per_device(rule: Check, kind: Optional[str] = None) -> Callable:
    """A check of each device named with --device (id[device]); kind="pci" or "usb" keeps to those devices."""
    if "named" in inspect.signature(rule.judge).parameters:
        def test(host_facts, certify, device, named_devices):
            certify(rule(host_facts, device, named_devices))
    else:
        def test(host_facts, certify, device):
            certify(rule(host_facts, device))
    return _as_test(rule, pytest.mark.device_kind(kind)(test) if kind else test)


def per_collection(rule: Check) -> Callable:
    """A check of the collection itself, judged also when the host could not be collected (host.reachable)."""
    def test(collected, certify_target, certify):
        certify(rule(certify_target.name, collected.facts, collected.error, collected.seconds, certify_target.source))
    return _as_test(rule, test)
