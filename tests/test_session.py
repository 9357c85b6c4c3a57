"""A certification run without pytest (vfio_certify/session.py): targets, the collection cache, the gathered results."""
import argparse
from pathlib import Path

from vfio_certify.diff import RunRecord
from vfio_certify.model import CheckResult, Outcome, RunResult, Severity
from vfio_certify.session import CertifySession, crash_result
from vfio_certify.targets import CertifyTarget, targets_from

REPO = Path(__file__).resolve().parent.parent
GOOD_HOST = str(REPO / "fixtures" / "hosts" / "rocky9-after-intel-iommu")


def option_values(**given):
    base = dict(ssh_config=None, ssh_identity_file=None, ssh_extra_args=None, ansible_inventory=None, sudo=False,
                connect_timeout=10, collect_timeout=120)
    return argparse.Namespace(**{**base, **given})


def test_targets_in_command_line_order_named_as_given_and_the_local_host_by_default():
    targets = targets_from(["root@kvm1:2222", "local://"], [GOOD_HOST],
                           option_values(connect_timeout=3, collect_timeout=30, sudo=True))
    assert [(t.name, t.source) for t in targets] == [("root@kvm1:2222", "ssh"), ("local://", "local"),
                                                     (GOOD_HOST, "snapshot")]
    assert targets[0].spec.spec == "ssh://root@kvm1:2222" and targets[0].spec.connect_timeout_s == 3
    assert targets[0].spec.collect_timeout_s == 30
    assert targets[0].spec.sudo and targets[2].spec is None and targets[2].snapshot_path == GOOD_HOST
    [default] = targets_from([], [], option_values())
    assert default.name == "local://" and default.spec.spec == "local://"


def test_each_target_is_collected_once_and_a_missing_snapshot_is_an_error_not_an_exception(tmp_path):
    good = CertifyTarget(GOOD_HOST, "snapshot", snapshot_path=GOOD_HOST)
    gone = CertifyTarget(str(tmp_path / "gone"), "snapshot", snapshot_path=str(tmp_path / "gone"))
    session = CertifySession([good, gone], [], None)
    try:
        first = session.collected(good)
        assert first.facts is not None and first.facts.kernel_release and session.collected(good) is first
        missing = session.collected(gone)
        assert missing.facts is None and missing.error
    finally:
        session.close()


def test_results_come_back_in_target_and_checklist_order_whatever_order_they_arrived_in():
    targets = [CertifyTarget("b", "ssh"), CertifyTarget("a", "ssh"), CertifyTarget("never-ran", "ssh")]
    session = CertifySession(targets, [], None)
    for host, check in (("a", "vfio.module"), ("b", "iommu.enabled"), ("a", "host.reachable"), ("b", "cpu.virtualization")):
        result = CheckResult(check, Outcome.PASSED, Severity.REQUIRED, "ok")
        session.add_from_report({"host": host, "source": "ssh", "result": result.to_summary()})
    run = session.finish()
    assert [h.host for h in run.hosts] == ["b", "a"]
    assert [[c.id for c in h.checks] for h in run.hosts] == [["cpu.virtualization", "iommu.enabled"],
                                                            ["host.reachable", "vfio.module"]]
    assert session.diff is None


def test_with_a_baseline_the_run_is_diffed_against_it():
    baseline_run = RunResult("t", 1.0)
    session = CertifySession([CertifyTarget("kvm1", "ssh")], [], None,
                             baseline=RunRecord("yesterday", baseline_run.to_summary(), {}))
    session.add_from_report({"host": "kvm1", "source": "ssh", "result": CheckResult(
        "iommu.enabled", Outcome.FAILED, Severity.REQUIRED, "off").to_summary()})
    session.finish()
    assert session.diff is not None and "kvm1" in session.diff.text()


def test_a_check_that_crashed_is_an_error_under_its_own_id():
    result = crash_result("iommu.group_isolated", ["0000:07:00.1"], "RuntimeError: " + "x" * 400)
    assert result.id == "iommu.group_isolated[0000:07:00.1]" and result.outcome is Outcome.ERROR
    assert result.severity is Severity.REQUIRED and len(result.message) <= len("the check itself failed: ") + 300


def test_host_reachable_carries_the_overview_or_why_the_host_was_not_collected(tmp_path):
    good = CertifyTarget(GOOD_HOST, "snapshot", snapshot_path=GOOD_HOST)
    gone = CertifyTarget(str(tmp_path / "gone"), "snapshot", snapshot_path=str(tmp_path / "gone"))
    sender, receiver = CertifySession([good, gone], [], None), CertifySession([good, gone], [], None)
    try:
        for target in (good, gone):
            result = CheckResult("host.reachable", Outcome.PASSED, Severity.REQUIRED, "ok")
            receiver.add_from_report(sender.report_payload(target, result, sender.collected(target)))
            other = CheckResult("kvm.device", Outcome.PASSED, Severity.REQUIRED, "ok")
            assert set(sender.report_payload(target, other)) == {"host", "source", "result"}
    finally:
        sender.close()
    judged, missing = receiver.finish().hosts
    assert judged.overview.kernel_release and judged.overview.groups and not judged.unreachable_reason
    assert missing.unreachable_reason == sender.collected(gone).error != ""
