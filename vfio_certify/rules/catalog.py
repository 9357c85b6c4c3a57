"""The registry of public checks: each check is registered once, beside its judgement.

A rule module registers a check with `@check(id, severity, description)` on its function:

    @check("iommu.enabled", REQUIRED, "the kernel runs the IOMMU: units in /sys/class/iommu, populated groups")
    def enabled(facts: HostFacts) -> CheckResult:
        ...
        return result(enabled.id, Outcome.PASSED, "IOMMU enabled", evidence)

The decorator returns a Check: it is called as the function was (`iommu.enabled(facts)`) and carries
`.id`, `.severity` and `.description`. checks/ turns it into its pytest test in one line
(vfio_certify/checklist.py). Checks judged outside rules/ (e2e/) are declared without a function,
in the rule module of their id prefix (rules/e2e.py).

Ids appear in summary.json, waivers and dashboards: they never change meaning once
released, and a retired id is never reused. Parametrized checks add [param].
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

from ..model import CheckResult, Outcome, Severity, SkipReason

REQUIRED, RECOMMENDED, INFO = Severity.REQUIRED, Severity.RECOMMENDED, Severity.INFO
NOT_APPLICABLE = SkipReason.NOT_APPLICABLE  # result(..., Outcome.SKIPPED, ..., skip_reason=NOT_APPLICABLE)


@dataclass(frozen=True)
class Check:
    id: str  # public: summary.json, waivers, JUnit
    severity: Severity
    description: str  # one line: what a pass certifies
    judge: Optional[Callable[..., CheckResult]] = None  # None: judged outside rules/ (the e2e flow)

    def __call__(self, *args, **kwargs) -> CheckResult:
        if self.judge is None:
            raise TypeError(f"{self.id} is judged outside rules/ and has no rule function")
        return self.judge(*args, **kwargs)


_REGISTRY: dict[str, Check] = {}


def declare(check_id: str, severity: Severity, description: str,
            judge: Optional[Callable[..., CheckResult]] = None) -> Check:
    """Register a check id; an id registered twice for different checks is a bug, refused at import."""
    entry = Check(check_id, severity, description, judge)
    known = _REGISTRY.get(check_id)
    if known is not None and (known.severity, known.description, _origin(known.judge)) != (
            severity, description, _origin(judge)):
        raise ValueError(f"check id {check_id!r} is registered twice")
    _REGISTRY[check_id] = entry
    return entry


def _origin(judge: Optional[Callable]) -> tuple[str, str]:
    return (judge.__module__, judge.__qualname__) if judge is not None else ("", "")


def check(check_id: str, severity: Severity, description: str) -> Callable[[Callable[..., CheckResult]], Check]:
    """Decorator: the rule function below is the judgement of `check_id`."""
    def register(judge: Callable[..., CheckResult]) -> Check:
        return declare(check_id, severity, description, judge)
    return register


def registered() -> dict[str, Check]:
    """Every check, by id: each module of rules/ is imported (once), so a new module needs no listing."""
    package = __name__.rsplit(".", 1)[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    return dict(_REGISTRY)


def severity_of(check_id: str) -> Severity:
    base = check_id.split("[", 1)[0]
    known = _REGISTRY.get(base) or registered()[base]
    return known.severity


def result(check_id: str, outcome: Outcome, message: str, evidence: list[str] | None = None,
           remediation: str = "", caused_by: list[str] | None = None,
           skip_reason: SkipReason | None = None) -> CheckResult:
    """A skipped result is not-collected unless skip_reason says the check does not apply (NOT_APPLICABLE);
    caused_by: the failed checks this outcome follows from, when the rule knows (root causes have none)."""
    return CheckResult(
        id=check_id,
        outcome=outcome,
        severity=severity_of(check_id),
        message=message,
        evidence=[e for e in (evidence or []) if e],
        remediation=remediation,
        skip_reason=(skip_reason or SkipReason.NOT_COLLECTED) if outcome is Outcome.SKIPPED else None,
        caused_by=[c for c in caused_by or [] if c != check_id],
        fix=getattr(remediation, "action", None),  # a remedy.Remedy says what it changes
    )


def not_collected(check_id: str, what: str) -> CheckResult:
    """What was not collected is skipped with the reason, never failed. `what` names the paths and commands
    ("/sys/class/iommu, /sys/kernel/iommu_groups and dmesg"): the reports list them under "to finish, collect"."""
    return result(check_id, Outcome.SKIPPED, f"not judged: {what} was not collected",
                  skip_reason=SkipReason.NOT_COLLECTED)
