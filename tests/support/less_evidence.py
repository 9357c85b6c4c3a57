"""Less evidence never looks better: mutate one path of a fixture host's snapshot and judge it again.

A mutation removes a file or a folder, cuts a file to its first half, keeps only its last tenth (a
wrapped ring buffer), empties it or garbles it (binary bytes). The host is judged in-process as the
checklist judges it (read_host_facts, then every check of checks/ with its values and devices), and
the mutated judgement is compared with the whole one:

- no check may improve (passed > warning > skipped > failed/error), except failed -> skipped: a check
  whose evidence is gone is not judged;
- the host verdict may not improve (certified > incomplete > not-certified), except
  not-certified -> incomplete, for the same reason;
- no failed result may carry a fix for something the mutated snapshot still shows (`unfounded`);
- every reader reads the mutated snapshot without raising (host.reachable is never an error).
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from vfio_certify.devices import DeviceSpec, parse_devices
from vfio_certify.facts import read_host_facts
from vfio_certify.model import CheckResult, Outcome, Severity
from vfio_certify.rules.catalog import registered
from vfio_certify.snapshot.reader import Snapshot

from .snapshot_shows import Shown, unfounded

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ROOT / "fixtures" / "hosts"
FILE_KINDS = ("remove", "first-half", "last-tenth", "empty", "garble")


def fixture_devices() -> dict[str, list[str]]:
    """The devices each fixture host is judged with (scripts/fixture_summaries.py keeps the list)."""
    spec = importlib.util.spec_from_file_location("fixture_summaries", ROOT / "scripts" / "fixture_summaries.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEVICES


# -- mutations ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mutation:
    path: str  # relative to the snapshot folder: "root/proc/modules", "commands/dmesg"
    kind: str  # "remove" (a file, link or folder) or one of FILE_KINDS for a regular file

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def mutations_of(host: Path) -> list[Mutation]:
    """Every mutation of one snapshot, in a stable order: each folder and link removed, each file five ways
    (less the ways that leave it as it was or as another way left it).
    Markers that keep empty folders in git (.snapshot-*) are not evidence and are left alone."""
    found = []
    for folder, dirs, files in os.walk(host):
        dirs.sort()
        base = Path(folder)
        for name in dirs:
            found.append(Mutation(str((base / name).relative_to(host)), "remove"))
        for name in sorted(files):
            if name.startswith(".snapshot"):
                continue
            path = base / name
            relative = str(path.relative_to(host))
            found.append(Mutation(relative, "remove"))
            if not path.is_symlink():
                found += [Mutation(relative, kind) for kind in _changing_kinds(path.read_bytes(), relative)]
    return found


def _changing_kinds(data: bytes, seed: str) -> list[str]:
    """The kinds of FILE_KINDS (after remove) that make new content: a short file cut in half may be empty."""
    seen, kinds = {data}, []
    for kind in FILE_KINDS[1:]:
        changed = mutated_bytes(data, kind, seed)
        if changed not in seen:
            seen.add(changed)
            kinds.append(kind)
    return kinds


# Folders of many like entries (one per device, group, table): each entry's own files are "details".
_MANY = re.compile(r"^root/sys/(?:bus/(?:pci|usb)/devices|kernel/iommu_groups|firmware/acpi/tables|class/net)/([^/]+)/")


def split_by_scope(host: Path, devices: list[DeviceSpec]) -> tuple[list[Mutation], list[Mutation]]:
    """(the core: every mutation of the host's sources, and the removal of anything of the named devices, their
    IOMMU groups and group mates (a folder, an attribute, the driver or iommu_group link, a group member); the
    details: every other entry of the folders of many like entries, and the other mutations of their files)."""
    keep = {d.key for d in devices if d.is_pci}
    groups = host / "root/sys/kernel/iommu_groups"
    for group in (os.listdir(groups) if groups.is_dir() else []):
        members = set(os.listdir(groups / group / "devices")) if (groups / group / "devices").is_dir() else set()
        if members & keep:
            keep |= members | {group}
    core, details = [], []
    for mutation in mutations_of(host):
        entry = _MANY.match(mutation.path + "/")
        kept = entry and entry.group(1) in keep and mutation.kind == "remove"
        (details if entry and not kept else core).append(mutation)
    return core, details


def mutated_bytes(data: bytes, kind: str, seed: str) -> bytes:
    if kind == "first-half":
        return data[: len(data) // 2]
    if kind == "last-tenth":
        return data[len(data) - len(data) // 10:]
    if kind == "empty":
        return b""
    if kind == "garble":
        return random.Random(seed).randbytes(max(64, len(data)))
    raise ValueError(kind)


class MutableCopy:
    """A private copy of a snapshot, mutated one path at a time and restored after each judgement."""

    def __init__(self, host: Path, workdir: Path):
        self.path = workdir / host.name
        self._aside = workdir / ".aside"
        shutil.copytree(host, self.path, symlinks=True)

    @contextlib.contextmanager
    def applied(self, mutation: Mutation) -> Iterator[Path]:
        target = self.path / mutation.path
        if mutation.kind == "remove":
            os.rename(target, self._aside)
            try:
                yield self.path
            finally:
                os.rename(self._aside, target)
            return
        original = target.read_bytes()
        target.write_bytes(mutated_bytes(original, mutation.kind, mutation.path))
        try:
            yield self.path
        finally:
            target.write_bytes(original)


# -- judging, as the checklist does -----------------------------------------------------------------

@dataclass(frozen=True)
class ChecklistEntry:
    check_id: str
    values: Optional[list[str]]  # per_host(rule, over=...): one result per value
    device_kind: Optional[str]  # per_device(rule, kind=...): "pci", "usb" or None (every device)
    per_device: bool


def checklist() -> list[ChecklistEntry]:
    """The checks checks/ runs, read from its test functions' marks (the checklist is the one list)."""
    entries = []
    for path in sorted((ROOT / "checks").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"checklist_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, test in sorted(vars(module).items()):
            marks = {m.name: m for m in getattr(test, "pytestmark", [])} if name.startswith("test_") else {}
            if "check" not in marks or "e2e" in marks:
                continue
            values = list(marks["parametrize"].args[1]) if "parametrize" in marks else None
            kind = marks["device_kind"].args[0] if "device_kind" in marks else None
            params = inspect.signature(test).parameters
            entries.append(ChecklistEntry(marks["check"].args[0], values, kind, "device" in params))
    return entries


def judge(snapshot: Path, devices: list[DeviceSpec], entries: list[ChecklistEntry]) -> dict[str, CheckResult]:
    """Every check's result by id, as `vfio-certify --snapshot` would record it."""
    facts = read_host_facts(Snapshot(snapshot))
    rules = registered()
    results = []
    for entry in entries:
        rule = rules[entry.check_id]
        if entry.check_id == "host.reachable":
            results.append(rule(snapshot.name, facts, "", 0.0))
        elif entry.per_device:
            named = "named" in inspect.signature(rule.judge).parameters
            for device in devices:
                if entry.device_kind is None or device.kind == entry.device_kind:
                    results.append(rule(facts, device, devices) if named else rule(facts, device))
        elif entry.values is not None:
            results += [rule(facts, value) for value in entry.values]
        else:
            results.append(rule(facts))
    return {r.id: r for r in results}


def host_devices(host: str) -> list[DeviceSpec]:
    return parse_devices(fixture_devices()[host])


# -- the properties -------------------------------------------------------------------------------------

_CHECK_RANK = {Outcome.PASSED: 3, Outcome.WARNING: 2, Outcome.SKIPPED: 1, Outcome.FAILED: 0, Outcome.ERROR: 0}
_VERDICT_RANK = {"certified": 2, "incomplete": 1, "not-certified": 0}


def verdict(results: dict[str, CheckResult]) -> str:
    """From outcomes alone: a required failure is not-certified, a required check not judged for lack of
    evidence is incomplete (a skip without a reason counts as not collected), else certified."""
    checks = list(results.values())
    if any(c.severity is Severity.REQUIRED and c.outcome in (Outcome.FAILED, Outcome.ERROR) for c in checks):
        return "not-certified"
    if any(_leaves_incomplete(c) for c in checks):
        return "incomplete"
    return "certified"


def _leaves_incomplete(result: CheckResult) -> bool:
    reason = getattr(result, "skip_reason", None)
    return (result.severity is Severity.REQUIRED and result.outcome is Outcome.SKIPPED
            and getattr(reason, "value", reason) != "not-applicable")


def improvements(whole: dict[str, CheckResult], mutated: dict[str, CheckResult]) -> list[str]:
    """Checks and the verdict that look better with less evidence."""
    found = []
    for check_id, before in whole.items():
        after = mutated.get(check_id)
        if after is None:
            found.append(f"{check_id}: {before.outcome.value} -> not judged at all")
            continue
        up = _CHECK_RANK[after.outcome] > _CHECK_RANK[before.outcome]
        if up and not (before.outcome in (Outcome.FAILED, Outcome.ERROR) and after.outcome is Outcome.SKIPPED):
            found.append(f"{check_id}: {before.outcome.value} -> {after.outcome.value} ({after.message[:160]})")
    before, after = verdict(whole), verdict(mutated)
    if _VERDICT_RANK[after] > _VERDICT_RANK[before] and (before, after) != ("not-certified", "incomplete"):
        found.append(f"verdict: {before} -> {after}")
    return found


# -- one host, many mutations ------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    host: str
    mutation: Mutation
    check: str  # a check id, "verdict", or "fix" plus the check id
    what: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.host, str(self.mutation), self.check)

    def __str__(self) -> str:
        return f"{self.host}: {self.mutation}: {self.what}"


class HostUnderTest:
    """One fixture host: its whole judgement, and a private copy to mutate and judge again."""

    def __init__(self, host: str, workdir: Path, entries: list[ChecklistEntry]):
        self.host, self.entries = host, entries
        self.devices = host_devices(host)
        self.copy = MutableCopy(HOSTS / host, workdir)
        self.whole = judge(self.copy.path, self.devices, entries)
        self.judgements = 0

    def findings(self, mutation: Mutation) -> list[Finding]:
        with self.copy.applied(mutation) as snapshot:
            mutated = judge(snapshot, self.devices, self.entries)
            shown = Shown.read(snapshot)
        self.judgements += 1
        found = [Finding(self.host, mutation, line.split(": ", 1)[0], line) for line in improvements(self.whole, mutated)]
        for result in mutated.values():
            found += [Finding(self.host, mutation, f"fix {result.id}", f"{result.id}: {why}")
                      for why in unfounded(result, shown)]
        reached = mutated.get("host.reachable")
        if reached is not None and reached.outcome is Outcome.ERROR:  # a reader raised: parsers read anything
            found.append(Finding(self.host, mutation, "read", f"host.reachable: {reached.message[:200]}"))
        return found
