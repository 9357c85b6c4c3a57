"""One place per check: its registration in rules/ (id, severity, description, function), one line in
checks/, and its row in the README's check table; each checked against the others here."""
import importlib.util
import re
from pathlib import Path

import pytest

from vfio_certify.model import Outcome, Severity
from vfio_certify.rules import catalog, iommu
from vfio_certify.rules.catalog import registered, result, severity_of
from support.hosts import intel_host

ROOT = Path(__file__).resolve().parent.parent


def checklist_ids() -> dict[str, str]:
    """Every test of checks/ with the check id its `check` marker reports under: {test name: id}."""
    found = {}
    for path in sorted((ROOT / "checks").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"checklist_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, test in vars(module).items():
            if name.startswith("test_") and callable(test):
                marks = [m.args[0] for m in getattr(test, "pytestmark", []) if m.name == "check"]
                assert len(marks) == 1, f"checks/{path.name}::{name} needs exactly one check marker, has {marks}"
                found[name] = marks[0]
    return found


def readme_table_ids() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## What is certified", 1)[1].split("\n\n", 2)[1]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    return {m.split("[", 1)[0] for cell in first_cells for m in re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+[^`]*)`", cell)}


def test_every_check_in_checks_is_registered_and_named_after_its_id():
    registry = registered()
    for name, check_id in checklist_ids().items():
        assert check_id in registry, f"{name} reports under {check_id}, which no rule module registers"
        assert name == "test_" + check_id.replace(".", "_"), f"{name} should be named after {check_id}"


def test_every_rule_function_has_its_line_in_checks():
    in_checklist = set(checklist_ids().values())
    missing = [i for i, c in registered().items() if c.judge is not None and i not in in_checklist]
    assert missing == []


def test_every_registered_id_is_in_the_readme_table_and_nothing_else_is():
    assert readme_table_ids() == set(registered())


def test_every_id_has_its_severity_and_results_carry_it():
    registry = registered()
    assert {"host.reachable", "e2e.leftovers", "e2e.nic", "e2e.pci", "e2e.usb", "e2e.device"} <= set(registry)
    for check_id, entry in registry.items():
        assert severity_of(f"{check_id}[0000:07:00.1]") is entry.severity
        assert result(check_id, Outcome.PASSED, "ok").severity is entry.severity
        assert catalog.not_collected(check_id, "/proc/x").outcome is Outcome.SKIPPED
        assert entry.description and "\n" not in entry.description
    assert severity_of("device.live_migration[004.002]") is Severity.INFO
    with pytest.raises(KeyError):
        severity_of("no.such_check")


def test_a_registered_check_is_called_as_its_rule_and_knows_its_id():
    assert iommu.enabled.id == "iommu.enabled" and iommu.enabled.severity is Severity.REQUIRED
    assert iommu.enabled(intel_host()).id == "iommu.enabled"


def test_an_id_registered_twice_is_refused():
    def judge(facts):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="iommu.enabled"):
        catalog.check("iommu.enabled", Severity.INFO, "another meaning")(judge)
    assert registered()["iommu.enabled"] is iommu.enabled
