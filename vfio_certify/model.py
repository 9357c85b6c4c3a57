"""The one result model every report is rendered from.

A check produces a CheckResult; a host's checks plus an overview of its facts make a
HostResult; a run is a list of HostResults. summary.json, the certification page, the
pytest-html columns and the CLI exit status are all derived from these objects.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Optional


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


class Verdict(str, enum.Enum):
    CERTIFIED = "certified"
    NOT_CERTIFIED = "not-certified"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class FixAction:
    """What a check's remediation changes, as data, so that a host's fix plan can merge them: every firmware
    setting into one visit to the setup, every kernel argument into one command."""

    kind: str  # "firmware" (a setting in the firmware setup), "kernel-args", "module" (load it, now and at boot)
    text: str = ""  # firmware: the setting, in words
    add: tuple[str, ...] = ()  # kernel-args
    remove: tuple[str, ...] = ()  # kernel-args
    module: str = ""  # module

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "add": list(self.add), "remove": list(self.remove),
                "module": self.module}

    @classmethod
    def from_dict(cls, data: dict) -> "FixAction":
        return cls(data.get("kind", ""), data.get("text", ""), tuple(data.get("add", ())),
                   tuple(data.get("remove", ())), data.get("module", ""))


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

    @classmethod
    def from_summary(cls, data: dict) -> "CheckResult":
        return cls(
            id=data["id"], outcome=Outcome(data["outcome"]), severity=Severity(data["severity"]),
            message=data.get("message", ""), evidence=list(data.get("evidence", [])),
            remediation=data.get("remediation", ""), duration_s=float(data.get("duration_s", 0.0)),
            waiver=data.get("waiver"), caused_by=list(data.get("caused_by", [])),
            fix=FixAction.from_dict(data["fix"]) if data.get("fix") else None,
        )

    def to_summary(self) -> dict:
        out = {
            "id": self.id,
            "outcome": self.outcome.value,
            "severity": self.severity.value,
            "message": self.message,
            "evidence": list(self.evidence),
            "remediation": self.remediation,
            "duration_s": round(self.duration_s, 6),
        }
        if self.waiver is not None:
            out["waiver"] = dict(self.waiver)
        if self.caused_by:
            out["caused_by"] = list(self.caused_by)
        return out

    def to_payload(self) -> dict:
        """summary.json's fields plus the fix as data: how a result travels from a pytest worker to the report."""
        return self.to_summary() | ({"fix": self.fix.to_dict()} if self.fix else {})


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
    parent: str = ""  # the upstream bridge or root port, from the sysfs device path; "" when not collected


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
        return Verdict.CERTIFIED

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
        """0 all certified; 3 some host unreachable; 1 some host not certified."""
        verdicts = {h.verdict for h in self.hosts}
        if Verdict.UNREACHABLE in verdicts:
            return 3
        if Verdict.NOT_CERTIFIED in verdicts:
            return 1
        return 0
