"""The one result model every report is rendered from.

A check produces a CheckResult; a host's checks plus an overview of its facts make a
HostResult; a run is a list of HostResults. summary.json, the certification page, the
pytest-html columns and the CLI exit status are all derived from these objects.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"
    SKIPPED = "skipped"
    ERROR = "error"
    WAIVED = "waived"


class Severity(str, enum.Enum):
    REQUIRED = "required"
    RECOMMENDED = "recommended"
    INFO = "info"


class SkipReason(str, enum.Enum):
    """Why a check was skipped: its evidence was not collected, or it does not apply to this host or device."""

    NOT_COLLECTED = "not-collected"
    NOT_APPLICABLE = "not-applicable"


class Verdict(str, enum.Enum):
    CERTIFIED = "certified"
    NOT_CERTIFIED = "not-certified"
    INCOMPLETE = "incomplete"  # nothing required failed, but something required was not collected
    UNREACHABLE = "unreachable"


# A not-collected result's message names what it lacked as "... <what> was not collected" (rules.catalog.not_collected).
_LACKED = re.compile(r"(?:not judged: )?(?P<what>.+?) (?:was|were) not collected")
@dataclass(frozen=True)
class FixAction:
    """What a check's remediation changes, as data, so that a host's fix plan can merge them: every firmware
    setting into one visit to the setup, every missing kernel option into one kernel to boot, every kernel argument
    into one command."""

    # "firmware" (a setting in the firmware setup), "kernel-config" (boot a kernel built with options), "kernel-args",
    # "module" (load it, now and at boot)
    kind: str
    text: str = ""  # firmware: the setting, in words
    add: tuple[str, ...] = ()  # kernel-args
    remove: tuple[str, ...] = ()  # kernel-args
    module: str = ""  # module
    options: tuple[str, ...] = ()  # kernel-config: CONFIG_ names, each to be =y or =m

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "add": list(self.add), "remove": list(self.remove),
                "module": self.module, "options": list(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> "FixAction":
        return cls(data.get("kind", ""), data.get("text", ""), tuple(data.get("add", ())),
                   tuple(data.get("remove", ())), data.get("module", ""), tuple(data.get("options", ())))


@dataclass
class CheckResult:
    """One check's judgement of one host. `id` is public and stable (see summary.md)."""

    id: str
    outcome: Outcome
    severity: Severity
    message: str
    evidence: list[str] = field(default_factory=list)
    remediation: str = ""
    duration_s: float = 0.0
    waiver: Optional[dict] = None
    skip_reason: Optional[SkipReason] = None  # only when skipped; an unclassified skip counts as not collected
    # The failed checks this outcome follows from, as the rule judged it (root causes have none).
    caused_by: list[str] = field(default_factory=list)
    fix: Optional[FixAction] = None  # the remediation as data, for the fix plan; not in summary.json

    @property
    def area(self) -> str:
        """The part of the id before the first dot: cpu, kvm, kernel, iommu, ..."""
        return self.id.split(".", 1)[0].split("[", 1)[0]

    @property
    def blocks_certification(self) -> bool:
        return self.severity is Severity.REQUIRED and self.outcome in (Outcome.FAILED, Outcome.ERROR)

    @property
    def lacks_evidence(self) -> bool:
        """Skipped for lack of evidence (not because it does not apply)."""
        return self.outcome is Outcome.SKIPPED and self.skip_reason is not SkipReason.NOT_APPLICABLE

    @property
    def leaves_incomplete(self) -> bool:
        """A required check not judged for lack of evidence: the host cannot be certified until it is collected."""
        return self.severity is Severity.REQUIRED and self.lacks_evidence

    def lacked(self) -> list[str]:
        """What a not-collected result lacked, as its message names it: paths and commands."""
        found = _LACKED.search(self.message)
        return _split_list(found.group("what")) if found else [self.message]

    @classmethod
    def from_summary(cls, data: dict) -> "CheckResult":
        return cls(
            id=data["id"], outcome=Outcome(data["outcome"]), severity=Severity(data["severity"]),
            message=data.get("message", ""), evidence=list(data.get("evidence", [])),
            remediation=data.get("remediation", ""), duration_s=float(data.get("duration_s", 0.0)),
            waiver=data.get("waiver"),
            # summaries written before skip_reason existed have none: unclassified, as the run judged it then
            skip_reason=SkipReason(data["skip_reason"]) if data.get("skip_reason") in _SKIP_REASONS else None,
            caused_by=list(data.get("caused_by", [])),
            fix=FixAction.from_dict(data["fix"]) if data.get("fix") else None,
        )

    def to_summary(self) -> dict:
        out = {"id": self.id, "outcome": self.outcome.value}
        if self.outcome is Outcome.SKIPPED:
            out["skip_reason"] = (self.skip_reason or SkipReason.NOT_COLLECTED).value
        out.update({
            "severity": self.severity.value,
            "message": self.message,
            "evidence": list(self.evidence),
            "remediation": self.remediation,
            "duration_s": round(self.duration_s, 6),
        })
        if self.waiver is not None:
            out["waiver"] = dict(self.waiver)
        if self.caused_by:
            out["caused_by"] = list(self.caused_by)
        return out

    def to_payload(self) -> dict:
        """summary.json's fields plus the fix as data: how a result travels from a pytest worker to the report."""
        return self.to_summary() | ({"fix": self.fix.to_dict()} if self.fix else {})


_SKIP_REASONS = {r.value for r in SkipReason}


def spoken_list(items: list[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c" (as a message names several things; _split_list reads it back)."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _split_list(text: str) -> list[str]:
    """"/sys/class/iommu, /sys/kernel/iommu_groups and dmesg" -> its three items; never inside parentheses."""
    items, depth, current = [], 0, ""
    tokens = re.split(r"(, | and |[()])", text)
    for token in tokens:
        if token in (", ", " and ") and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(token, 0)
        current += token
    items.append(current)
    return [i.strip() for i in items if i.strip()]


def collect_command(host: str, source: str) -> str:
    """The one command that collects a host's evidence again; for a bundle, the one its sender runs on the host."""
    if source == "snapshot":
        return "vfio-certify collect --output $(hostname).tar.gz"
    name = re.sub(r"^[a-z]+://", "", host).rsplit("@", 1)[-1].split(":", 1)[0].strip("/") or "localhost"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"vfio-certify collect --host {host} --output {name}.tar.gz"


@dataclass
class ToFinish:
    """What an incomplete host needs collected before it can be judged whole."""

    lacking: list[str]  # paths and commands, each once, in checklist order
    checks: list[str]  # the required checks not judged
    command: str  # the one vfio-certify collect command that gets them
    bundle: bool  # judged from a snapshot: its sender makes a new bundle on the host

    @property
    def how(self) -> str:
        if self.bundle:
            return f"ask for a new bundle, made on the host with `{self.command}`"
        return f"`{self.command}`"

    def text(self) -> str:
        return f"to finish, collect: {', '.join(self.lacking)}; {self.how}"


def to_finish(host: str, source: str, checks: list[CheckResult]) -> Optional[ToFinish]:
    pending = [c for c in checks if c.leaves_incomplete]
    if not pending:
        return None
    lacking = list(dict.fromkeys(item for c in pending for item in c.lacked()))
    return ToFinish(lacking, [c.id for c in pending], collect_command(host, source), source == "snapshot")


@dataclass
class DeviceView:
    """One PCI function as shown in the IOMMU group table."""

    address: str
    class_code: str  # "0x020000"
    class_name: str  # "Ethernet controller"
    vendor_device: str  # "8086:1521"
    name: str  # lspci's description, "" when unknown
    driver: str  # "" when no driver is bound
    is_bridge: bool
    named: bool  # named with --device
    blocks: bool = False  # keeps its group from a VM (iommu.group_isolated's judgement of a named device's group)
    parent: str = ""  # the upstream bridge, or the root bus (pci0000:00) it sits on, from sysfs; "" when not known


@dataclass
class BootSetup:
    """How this host's kernel command line is changed for good (from its facts): enough to write the one
    command of a fix plan that merges every check's kernel arguments."""

    family: str = ""  # "proxmox", "rhel", "debian", "suse"; "" when unknown
    grub_file: str = "/etc/default/grub"  # where GRUB_CMDLINE_LINUX_DEFAULT is set last (Debian family)
    grub_mkconfig: str = ""  # RHEL family: how GRUB's config is regenerated on this release


@dataclass
class GroupView:
    number: int
    devices: list[DeviceView]
    viable: Optional[bool]  # None: no named device in this group, not judged

    @property
    def has_named_device(self) -> bool:
        return any(d.named for d in self.devices)


OVERVIEW_FORMAT = "certify-overview/1"  # overview.json: each host's HostOverview, which `vfio-certify diff` reads


@dataclass
class HostOverview:
    """Host facts a person wants at the top of the page."""

    hostname: str = ""
    kernel_release: str = ""
    distro: str = ""
    cpu_model: str = ""
    cpu_vendor: str = ""
    iommu_vendor: str = ""
    cmdline: str = ""
    collected_at: str = ""
    groups: list[GroupView] = field(default_factory=list)
    groups_collected: bool = True  # False: /sys/kernel/iommu_groups was not collected (not "no groups")
    pci_tree_collected: bool = False  # the PCI tree was read: DeviceView.parent is known (or the function's place is not)
    boot: BootSetup = field(default_factory=BootSetup)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HostOverview":
        known = DeviceView.__dataclass_fields__
        groups = [GroupView(g["number"], [DeviceView(**{k: v for k, v in d.items() if k in known}) for d in g["devices"]],
                            g["viable"]) for g in data.get("groups", [])]
        boot = BootSetup(**{k: v for k, v in (data.get("boot") or {}).items() if k in BootSetup.__dataclass_fields__})
        fields = {k: v for k, v in data.items() if k not in ("groups", "boot") and k in cls.__dataclass_fields__}
        return cls(**fields, groups=groups, boot=boot)


@dataclass
class FixStep:
    """One step of a host's fix plan (summary.json `fix_plan`)."""

    step: str  # what to do, in words
    commands: list[str] = field(default_factory=list)  # to run on the host, in order
    reboot: bool = False  # the step ends with a reboot (into the firmware setup, or to apply what came before)
    fixes: list[str] = field(default_factory=list)  # the check ids it makes pass

    def to_dict(self) -> dict:
        return {"step": self.step, "commands": list(self.commands), "reboot": self.reboot, "fixes": list(self.fixes)}


@dataclass
class HostResult:
    host: str  # as given on the command line
    source: str  # local, ssh, snapshot, ansible, ...
    checks: list[CheckResult] = field(default_factory=list)
    overview: HostOverview = field(default_factory=HostOverview)
    unreachable_reason: str = ""
    fix_plan: list[FixStep] = field(default_factory=list)  # ordered steps to certify (report/fixplan.py)

    @property
    def verdict(self) -> Verdict:
        if self.unreachable_reason:
            return Verdict.UNREACHABLE
        if any(c.blocks_certification for c in self.checks):
            return Verdict.NOT_CERTIFIED
        if any(c.leaves_incomplete for c in self.checks):
            return Verdict.INCOMPLETE
        return Verdict.CERTIFIED

    def to_finish(self) -> Optional[ToFinish]:
        """What to collect, and the command that collects it: for an incomplete host, and for a not-certified
        one that also lacks evidence (fixing its failures alone would leave it incomplete)."""
        return None if self.unreachable_reason else to_finish(self.host, self.source, self.checks)

    def checks_by_area(self) -> dict[str, list[CheckResult]]:
        areas: dict[str, list[CheckResult]] = {}
        for check in self.checks:
            areas.setdefault(check.area, []).append(check)
        return areas

    def to_summary(self) -> dict:
        out = {
            "host": self.host,
            "source": self.source,
            "verdict": self.verdict.value,
            "checks": [c.to_summary() for c in self.checks],
        }
        if self.fix_plan:
            out["fix_plan"] = [s.to_dict() for s in self.fix_plan]
        return out


@dataclass
class RunResult:
    started_at: str
    duration_s: float = 0.0
    hosts: list[HostResult] = field(default_factory=list)

    def to_summary(self) -> dict:
        return {
            "format": "certify-summary/1",
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "hosts": [h.to_summary() for h in self.hosts],
        }

    def exit_status(self) -> int:
        """0 all certified; 3 some host unreachable; 1 some host not certified or incomplete."""
        verdicts = {h.verdict for h in self.hosts}
        if Verdict.UNREACHABLE in verdicts:
            return 3
        if verdicts & {Verdict.NOT_CERTIFIED, Verdict.INCOMPLETE}:
            return 1
        return 0


# Checklist order: what a person fixes first comes first (reports, JUnit and summary.json follow it).
AREA_ORDER = ["host", "cpu", "kvm", "kernel", "firmware", "iommu", "vfio", "device"]


def area_rank(area: str) -> int:
    return AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER)


# A check's result travels in its pytest report under this user property, so that results judged in
# pytest-xdist workers reach the controller the same way as in a single process.
REPORT_PROPERTY = "vfio_certify"


def result_of(report: Any) -> Optional[CheckResult]:
    """The check's result a pytest report carries, if any."""
    for name, value in getattr(report, "user_properties", []):
        if name == REPORT_PROPERTY:
            return CheckResult.from_summary(json.loads(value)["result"])
    return None


def describe(result: CheckResult) -> str:
    """A result as the terminal shows a failed check: id, message, evidence, fix."""
    lines = [f"[{result.severity.value}] {result.id}: {result.message}"]
    lines += [f"  evidence: {e}" for e in result.evidence]
    if result.remediation:
        lines.append("  fix:")
        lines += [f"    {line}" for line in result.remediation.splitlines()]
    return "\n".join(lines)
