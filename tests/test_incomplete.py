"""`incomplete` and `skip_reason` (specs/summary.md): a partial capture is judged as far as it goes, says
what to collect, and is never certified."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import chromium
from support.hosts import intel_host
from support.summary_spec import assert_valid_summary

from vfio_certify.devices import parse_devices
from vfio_certify.diff import RunRecord, diff_runs
from vfio_certify.model import CheckResult, HostOverview, HostResult, Outcome, RunResult, Severity, SkipReason, Verdict
from vfio_certify.report.html import render_index_page
from vfio_certify.rules import device as device_rules
from vfio_certify.rules import iommu as iommu_rules
from vfio_certify.rules.catalog import not_collected, result

REPO = Path(__file__).resolve().parent.parent
CPUINFO_LINE = "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr vmx ept\n"


def certify(*args):
    return subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A snapshot holding only meta.json and one cpuinfo line, judged with --device naming a device not in it."""
    base = tmp_path_factory.mktemp("partial")
    snap = base / "partial-snapshot"
    (snap / "root" / "proc").mkdir(parents=True)
    (snap / "meta.json").write_text(json.dumps({"format": "host-snapshot/1", "absence": "parent-folder",
                                                "hostname": "kvm-partial"}))
    (snap / "root" / "proc" / "cpuinfo").write_text(CPUINFO_LINE)
    proc = certify("--snapshot", snap, "--device", "0000:07:00.1", "--output", base / "out")
    return proc, base / "out", json.loads((base / "out" / "summary.json").read_text())


def test_a_partial_snapshot_is_incomplete_never_certified(partial):
    proc, _, summary = partial
    assert_valid_summary(summary)
    [host] = summary["hosts"]
    assert host["verdict"] == "incomplete" and proc.returncode == 1, proc.stdout[-3000:]
    lacking = [c for c in host["checks"] if c["severity"] == "required" and c.get("skip_reason") == "not-collected"]
    assert len(lacking) >= 15 and {"kvm.device", "iommu.enabled", "device.present[0000:07:00.1]"} <= {c["id"] for c in lacking}
    assert all("not collected" in c["message"] for c in lacking)


def test_the_terminal_says_what_to_collect_and_how(partial):
    proc, _, _ = partial
    [line] = [ln for ln in proc.stdout.splitlines() if ": INCOMPLETE" in ln]
    assert "to finish, collect: " in line and "/sys/bus/pci/devices" in line and "/dev" in line
    assert "ask for a new bundle, made on the host with `vfio-certify collect --output $(hostname).tar.gz`" in line


def test_junit_shows_each_skip_reason_and_the_hosts_verdict(partial):
    _, out, _ = partial
    root = ET.parse(out / "junit.xml").getroot()
    skipped = [s.get("message", "") for s in root.iter("skipped")]
    assert skipped and all(m.startswith(("[not-collected] ", "[not-applicable] ")) for m in skipped), skipped
    assert "[not-collected] not judged: /dev was not collected" in skipped
    props = {p.get("name"): p.get("value") for p in root.iter("property") if p.get("name", "").startswith("verdict ")}
    [(name, value)] = props.items()
    assert name.endswith("partial-snapshot") and value.startswith("incomplete: to finish, collect: ")


def test_the_pages_show_the_incomplete_state(partial):
    _, out, _ = partial
    page = (out / "certification.html").read_text()
    assert "◐ INCOMPLETE: not certified, evidence missing" in page and 'class="verdict v-incomplete"' in page
    assert "To finish, collect:" in page and "<code>/sys/bus/pci/devices</code>" in page
    assert "not collected: host incomplete" in page  # each such check says so beside its badge
    index = (out / "index.html").read_text()
    assert "◐ INCOMPLETE" in index and "1 incomplete" in index and "to finish, collect: /dev" in index


def test_chromium_renders_the_incomplete_verdict(partial, tmp_path):
    _, out, _ = partial
    dom, png = chromium.render(out / "certification.html", tmp_path, window="1200,900")
    verdict = re.search(r'<div class="verdict v-(\w[\w-]*)" role="status">\s*<p class="vtext">([^<]*)</p>', dom)
    assert verdict and verdict.groups() == ("incomplete", "◐ INCOMPLETE: not certified, evidence missing")
    assert "vfio-certify collect --output $(hostname).tar.gz" in dom
    assert png.stat().st_size > 20_000


def test_a_device_missing_from_a_collected_pci_list_fails_present_and_the_rest_does_not_apply():
    facts = intel_host()
    [spec] = parse_devices(["0000:2d:00.0"])
    assert device_rules.present(facts, spec).outcome is Outcome.FAILED
    for judged in (iommu_rules.group_isolated(facts, spec, [spec]), device_rules.host_network(facts, spec)):
        assert (judged.outcome, judged.skip_reason) == (Outcome.SKIPPED, SkipReason.NOT_APPLICABLE), judged
    # the same device on a host whose PCI list was not collected: nothing is known, the host is incomplete
    blind = dataclasses.replace(facts, pci=None)
    for judged in (device_rules.present(blind, spec), iommu_rules.group_isolated(blind, spec, [spec]),
                   device_rules.host_network(blind, spec)):
        assert (judged.outcome, judged.skip_reason) == (Outcome.SKIPPED, SkipReason.NOT_COLLECTED), judged
        assert "/sys/bus/pci/devices" in judged.message


def test_usb_devices_have_no_iommu_group_to_judge():
    [usb] = parse_devices(["004.002"])
    judged = iommu_rules.group_isolated(intel_host(), usb, [usb])
    assert (judged.outcome, judged.skip_reason) == (Outcome.SKIPPED, SkipReason.NOT_APPLICABLE)


def _host(*checks, source="ssh", host="ssh://root@kvm1.example.com:2222"):
    return HostResult(host=host, source=source, checks=list(checks))


def test_verdict_order_and_exit_status():
    ok = result("kvm.device", Outcome.PASSED, "/dev/kvm exists")
    other_vendor = result("kernel.config[CONFIG_AMD_IOMMU]", Outcome.SKIPPED, "not applicable: Intel",
                          skip_reason=SkipReason.NOT_APPLICABLE)
    lacking = not_collected("iommu.enabled", "/sys/class/iommu, /sys/kernel/iommu_groups and dmesg")
    optional = not_collected("kernel.cmdline", "/proc/cmdline")
    failed = result("iommu.groups", Outcome.FAILED, "no groups", remediation="enable the IOMMU")
    assert _host(ok, other_vendor, optional).verdict is Verdict.CERTIFIED  # a recommended check only
    assert _host(ok, other_vendor, lacking).verdict is Verdict.INCOMPLETE
    assert _host(ok, lacking, failed).verdict is Verdict.NOT_CERTIFIED  # a failure outranks missing evidence
    # a skip nobody classified counts as evidence missing: it never certifies
    unclassified = CheckResult("iommu.groups", Outcome.SKIPPED, Severity.REQUIRED, "not judged")
    assert _host(ok, unclassified).verdict is Verdict.INCOMPLETE
    assert RunResult("t", hosts=[_host(ok), _host(lacking)]).exit_status() == 1
    assert RunResult("t", hosts=[_host(ok)]).exit_status() == 0


def test_to_finish_names_the_paths_once_and_the_one_collect_command():
    host = _host(not_collected("iommu.enabled", "/sys/class/iommu, /sys/kernel/iommu_groups and dmesg"),
                 not_collected("iommu.groups", "/sys/kernel/iommu_groups"),
                 not_collected("kernel.config[CONFIG_VFIO]", "the kernel config (/boot/config-* or /proc/config.gz)"))
    finish = host.to_finish()
    assert finish.lacking == ["/sys/class/iommu", "/sys/kernel/iommu_groups", "dmesg",
                              "the kernel config (/boot/config-* or /proc/config.gz)"]
    assert finish.command == "vfio-certify collect --host ssh://root@kvm1.example.com:2222 --output kvm1.example.com.tar.gz"
    assert _host(*host.checks, source="snapshot", host="case-1234.tar.gz").to_finish().how.startswith(
        "ask for a new bundle, made on the host with `vfio-certify collect")
    assert _host(result("kvm.device", Outcome.PASSED, "ok")).to_finish() is None


def test_a_cut_kernel_config_is_one_thing_to_collect_not_one_per_option(tmp_path):
    """hostile-input's config ends mid-line: five kernel.config checks and vfio.module[vfio_pci] are not judged, and
    what to collect names the rest of that file once, beside the module lists and virsh the capture lacks."""
    certify("--snapshot", REPO / "fixtures/hosts/hostile-input", "--output", tmp_path / "out")
    host = json.loads((tmp_path / "out/summary.json").read_text())["hosts"][0]
    pending = [CheckResult.from_summary(c) for c in host["checks"]]
    finish = HostResult(host["host"], "snapshot", pending, HostOverview()).to_finish()
    assert finish.lacking == ["the rest of /boot/config-6.1.69-custom", "modules.builtin", "modules.dep",
                              "virsh list --all"]
    assert len([c for c in finish.checks if c.startswith("kernel.config[")]) == 5


def test_skip_reason_round_trips_and_old_summaries_still_load():
    lacking = not_collected("kvm.device", "/dev")
    data = lacking.to_summary()
    assert list(data)[:3] == ["id", "outcome", "skip_reason"] and data["skip_reason"] == "not-collected"
    assert CheckResult.from_summary(data).skip_reason is SkipReason.NOT_COLLECTED
    assert "skip_reason" not in result("kvm.device", Outcome.PASSED, "ok").to_summary()
    old = {k: v for k, v in data.items() if k != "skip_reason"}
    assert CheckResult.from_summary(old).skip_reason is None


def _summary(*hosts):
    return {"format": "certify-summary/1", "started_at": "2026-11-24T02:00:00Z", "duration_s": 1.0,
            "hosts": [h.to_summary() for h in hosts]}


def test_nightly_certified_to_incomplete_is_a_regression_that_says_what_to_collect():
    passed = result("iommu.enabled", Outcome.PASSED, "IOMMU on")
    failed = result("iommu.groups", Outcome.FAILED, "no groups", remediation="enable the IOMMU")
    old = RunRecord("n1", _summary(_host(passed, result("kvm.device", Outcome.PASSED, "ok"), host="kvm1"),
                                   _host(passed, failed, host="kvm2")), {})
    new = RunRecord("n2", _summary(_host(passed, not_collected("kvm.device", "/dev"), host="kvm1"),
                                   _host(passed, not_collected("iommu.groups", "/sys/kernel/iommu_groups"), host="kvm2")), {})
    diff = diff_runs(old, new)
    kvm1, kvm2 = diff.hosts
    assert kvm1.regression and kvm1.lines() == [
        "verdict: certified -> incomplete",
        "no longer collected: kvm.device (was passed): not judged: /dev was not collected",
        "to finish, collect: /dev; `vfio-certify collect --host kvm1 --output kvm1.tar.gz`"]
    # a failure that was not collected tonight is not fixed: never "newly passing"
    assert not kvm2.newly_passing and [c.id for c in kvm2.no_longer_collected] == ["iommu.groups"]
    assert diff.regression and "REGRESSION" in diff.text()
    page = render_index_page(RunResult("t", hosts=[_host(passed, not_collected("kvm.device", "/dev"), host="kvm1")]), diff)
    assert '<li class="k-lacking">no longer collected: kvm.device' in page


def test_diff_against_a_baseline_written_before_skip_reason(tmp_path):
    """An old summary (no skip_reason, no incomplete verdict) is still a baseline."""
    old = _summary(_host(result("iommu.enabled", Outcome.PASSED, "on"),
                         CheckResult("kernel.cmdline", Outcome.SKIPPED, Severity.RECOMMENDED, "not judged"), host="kvm1"))
    for check in old["hosts"][0]["checks"]:
        check.pop("skip_reason", None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "summary.json").write_text(json.dumps(_summary(
        _host(not_collected("iommu.enabled", "/sys/class/iommu"),
              result("kernel.cmdline", Outcome.PASSED, "sound"), host="kvm1"))))
    proc = certify("diff", tmp_path / "old", tmp_path / "new")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verdict: certified -> incomplete" in proc.stdout and "to finish, collect: /sys/class/iommu" in proc.stdout


def test_a_failing_host_that_also_lacks_evidence_says_both():
    from vfio_certify.report.html import render_certification_page

    host = _host(result("iommu.groups", Outcome.FAILED, "no groups", remediation="enable the IOMMU"),
                 not_collected("kvm.device", "/dev"))
    assert host.verdict is Verdict.NOT_CERTIFIED and host.to_finish().lacking == ["/dev"]
    page = render_certification_page(RunResult("t", hosts=[host]))
    assert "✘ NOT CERTIFIED" in page and "Also, 1 required check" in page and "<code>/dev</code>" in page
    assert "Fixing the failures alone would leave the host incomplete." in page
    unreachable = HostResult(host="gone", source="ssh", unreachable_reason="timed out",
                             checks=[result("host.reachable", Outcome.FAILED, "timed out")])
    assert unreachable.to_finish() is None


@pytest.mark.parametrize("groups", [None, {48: []}, {47: ["0000:07:00.0"]}], ids=["no-groups", "members-gone", "group-gone"])
def test_a_group_whose_member_list_was_not_collected_is_never_alone(groups):
    """The device's own iommu_group link still names group 48: that says nothing about who else is in it."""
    facts = intel_host(iommu_groups=groups)
    [spec] = parse_devices(["0000:07:00.1"])
    assert facts.pci_device(spec.key).iommu_group == 48
    judged = iommu_rules.group_isolated(facts, spec, [spec])
    assert (judged.outcome, judged.skip_reason) == (Outcome.SKIPPED, SkipReason.NOT_COLLECTED), judged
    assert "/sys/kernel/iommu_groups" in judged.message and "alone" not in judged.message


def test_groups_not_collected_are_not_shown_as_no_groups_nor_diffed_as_devices_leaving(tmp_path):
    from vfio_certify.report.html import render_certification_page
    from vfio_certify.report.overview import overview_from_facts

    [spec] = parse_devices(["0000:07:00.1"])
    before = overview_from_facts(intel_host(), [spec])
    after = overview_from_facts(intel_host(iommu_groups=None), [spec])
    assert before.groups_collected and before.groups and not after.groups_collected
    host = _host(not_collected("iommu.groups", "/sys/kernel/iommu_groups"), host="kvm1")
    host.overview = after
    page = render_certification_page(RunResult("t", hosts=[host]))
    assert "no IOMMU groups: the IOMMU is not enabled" not in page and "/sys/kernel/iommu_groups is missing" in page
    old = RunRecord("n1", _summary(_host(result("iommu.groups", Outcome.PASSED, "4 groups"), host="kvm1")),
                    {"kvm1": before.to_dict()})
    new = RunRecord("n2", _summary(host), {"kvm1": after.to_dict()})
    [kvm1] = diff_runs(old, new).hosts
    assert kvm1.group_changes == ["not compared: /sys/kernel/iommu_groups was not collected in this run"]
    legacy = before.to_dict()
    del legacy["groups_collected"]  # an overview.json written before the field: groups were collected
    assert HostOverview.from_dict(legacy).groups_collected
