"""Root causes and the fix plan of one host: what to do, in what order, and how many reboots it costs.

Both are pure functions of the host's results (and of its BootSetup, from its facts). A check says
what it follows from (`caused_by`, set by the rule that judged it); a check's remediation says what
it changes (`fix`, set by rules/remedy.py). Nothing here knows a check id: a new rule that writes
its fix with remedy.py and names its causes takes part without a change here.

The plan: firmware settings first (one visit to the setup), then one kernel built with every
missing option, then every kernel argument in one command for the distro (after the kernel, so
that grubby's ALL includes it), then modules, then what can only be said in words, then one
reboot when the kernel or its command line changed, then run vfio-certify again. Waived checks
are not failures, so they never enter it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model import CheckResult, FixStep, HostResult, Outcome, spoken_list
from ..rules.remedy import kernel_args_change, load_module_commands

_FAILING = (Outcome.FAILED, Outcome.ERROR)


@dataclass
class RootCause:
    """A failed check nothing else explains, and the blocking checks that follow from it."""

    check: CheckResult
    consequences: list[CheckResult] = field(default_factory=list)


def _failing(host: HostResult) -> dict[str, CheckResult]:
    return {c.id: c for c in host.checks if c.outcome in _FAILING}


def causes(check: CheckResult, failing: dict[str, CheckResult]) -> list[str]:
    """The check's causes that did fail on this host (a cause waived, skipped or not run explains nothing)."""
    return [c for c in check.caused_by if c in failing and c != check.id]


def _roots_of(check_id: str, failing: dict[str, CheckResult], seen: frozenset = frozenset()) -> list[str]:
    up = [c for c in causes(failing[check_id], failing) if c not in seen]
    if not up:
        return [check_id]
    roots: list[str] = []
    for cause in up:
        roots += [r for r in _roots_of(cause, failing, seen | {check_id}) if r not in roots]
    return roots


def root_causes(host: HostResult) -> list[RootCause]:
    """The root causes of what blocks certification, in checklist order, each with its consequences."""
    failing = _failing(host)
    found: dict[str, RootCause] = {}
    for check in host.checks:
        if not check.blocks_certification:
            continue
        for root in _roots_of(check.id, failing):
            entry = found.setdefault(root, RootCause(failing[root]))
            if root != check.id:
                entry.consequences.append(check)
    order = {c.id: i for i, c in enumerate(host.checks)}
    return sorted(found.values(), key=lambda r: order[r.check.id])


def fix_plan(host: HostResult) -> list[FixStep]:
    """The ordered steps that make the host certifiable; [] when nothing blocks it."""
    roots = root_causes(host)
    if not roots:
        return []
    firmware: list[str] = []
    add: list[str] = []
    remove: list[str] = []
    modules: list[str] = []
    options: list[str] = []
    fixes: dict[str, list[str]] = {"firmware": [], "kernel-config": [], "kernel-args": [], "module": []}
    in_words: list[FixStep] = []
    for root in roots:
        ids = [root.check.id] + [c.id for c in root.consequences]
        action = root.check.fix
        kind = action.kind if action else ""
        if kind == "firmware":
            firmware += [action.text] if action.text not in firmware else []
        elif kind == "kernel-config":
            options += [o for o in action.options if o not in options]
        elif kind == "kernel-args":
            add += [a for a in action.add if a not in add]
            remove += [r for r in action.remove if r not in remove]
        elif kind == "module":
            modules += [action.module] if action.module not in modules else []
        else:
            text = root.check.remediation or f"Fix {root.check.id}: {root.check.message}"
            same = next((s for s in in_words if s.step == text), None)  # five options cut short: one re-collection
            if same is None:
                in_words.append(FixStep(text, fixes=ids))
            else:
                same.fixes += [i for i in ids if i not in same.fixes]
            continue
        fixes[kind] += [i for i in ids if i not in fixes[kind]]
    steps: list[FixStep] = []
    if firmware:
        steps.append(FixStep("\n".join(firmware), reboot=True, fixes=fixes["firmware"]))
    if options:
        steps.append(FixStep(kernel_build_step(options), fixes=fixes["kernel-config"]))
    if add or remove:
        what, commands = kernel_args_change(host.overview.boot, add, remove)
        steps.append(FixStep(what, commands, fixes=fixes["kernel-args"]))
    if modules:
        commands = [line for m in modules for line in load_module_commands(m) if not line.startswith("#")]
        steps.append(FixStep(f"Load {', '.join(modules)} now and at every boot", commands, fixes=fixes["module"]))
    steps += in_words
    if options or add or remove:
        into = ("the new kernel and its command line" if options and (add or remove)
                else "the new kernel" if options else "the new kernel command line")
        steps.append(FixStep(f"Reboot into {into}", ["reboot"], reboot=True))
    steps.append(FixStep("Run vfio-certify again, with the same options, to confirm"))
    return steps


def kernel_build_step(options: list[str]) -> str:
    """One kernel for every missing option, booted by the plan's reboot."""
    each, them = ("=y or =m", "it") if len(options) == 1 else ("each =y or =m", "them")
    return (f"Install a kernel built with {spoken_list(options)}, {each} (a distribution's standard kernel has {them}), "
            "as the default boot entry")


def plan_summary(steps: list[FixStep]) -> str:
    """'3 steps, 1 reboot'."""
    reboots = sum(1 for s in steps if s.reboot)
    return (f"{len(steps)} step{'' if len(steps) == 1 else 's'}, "
            f"{reboots or 'no'} reboot{'' if reboots == 1 else 's'}")
