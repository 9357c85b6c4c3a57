"""The run's results on disk as they arrive (result_stream.py): hosts interleaved as several workers send them, each
read back whole and in its own order, from one file."""
import pytest

from vfio_certify.model import CheckResult, Outcome, Severity
from vfio_certify.result_stream import ResultStream


def _payload(host: str, check: str, outcome: Outcome, **extra) -> dict:
    result = CheckResult(check, outcome, Severity.REQUIRED, f"{check} on {host}: é, 漢", evidence=[f"/proc/{check}"])
    return {"host": host, "source": "ssh", "result": result.to_payload(), **extra}


def test_interleaved_hosts_are_read_back_each_whole_and_in_arrival_order(tmp_path):
    stream = ResultStream(tmp_path / "results")
    overview = {"kernel_release": "6.8.0", "cmdline": "intel_iommu=on", "groups": []}
    stream.add(_payload("kvm-1", "host.reachable", Outcome.PASSED, overview=overview), "t::reach[kvm-1]")
    stream.add(_payload("kvm-2", "host.reachable", Outcome.FAILED, unreachable="connection refused"), "t::reach[kvm-2]")
    stream.add(_payload("kvm-1", "iommu.enabled", Outcome.FAILED), "t::iommu[kvm-1]")
    stream.add(_payload("kvm-1", "kvm.device", Outcome.PASSED), "t::kvm[kvm-1]", when="setup")

    assert len(stream) == 2 and "kvm-1" in stream and "kvm-3" not in stream
    # one file for the run, whatever the number of hosts
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["results.jsonl"]

    host, checks = stream.read("kvm-1")
    assert [c.result.id for c in checks] == ["host.reachable", "iommu.enabled", "kvm.device"]
    assert [(c.nodeid, c.when) for c in checks] == [("t::reach[kvm-1]", "call"), ("t::iommu[kvm-1]", "call"),
                                                    ("t::kvm[kvm-1]", "setup")]
    assert host.checks == [c.result for c in checks] and host.source == "ssh"
    assert checks[1].result.outcome is Outcome.FAILED and checks[1].result.message == "iommu.enabled on kvm-1: é, 漢"
    assert host.overview.kernel_release == "6.8.0" and not host.unreachable_reason

    other, other_checks = stream.read("kvm-2")
    assert [c.result.id for c in other_checks] == ["host.reachable"]
    assert other.unreachable_reason == "connection refused"

    # a result arriving after a host was read is there the next time it is read
    stream.add(_payload("kvm-2", "kvm.device", Outcome.SKIPPED), "t::kvm[kvm-2]")
    assert [c.result.id for c in stream.read("kvm-2")[1]] == ["host.reachable", "kvm.device"]


def test_results_read_after_the_stream_was_closed_are_refused_not_empty(tmp_path):
    stream = ResultStream(tmp_path / "results")
    stream.add(_payload("kvm-1", "kvm.device", Outcome.PASSED))
    stream.close()
    with pytest.raises(ValueError, match="after their stream was closed"):
        stream.read("kvm-1")
    stream.close()  # twice is harmless (the session closes it once its reports are written)
