"""host.reachable: the host answered and its facts were collected."""
import pytest

from vfio_certify.model import Outcome
from vfio_certify.rules.catalog import result


@pytest.mark.check("host.reachable")
def test_host_reachable(collected, certify_target, certify):
    if collected.facts is None:
        certify(result("host.reachable", Outcome.FAILED, f"{certify_target.name} could not be collected: {collected.error}",
                       [collected.error], "Check that the host is up, reachable over SSH with key authentication, "
                       "and that the user can run /bin/sh."))
    certify(result("host.reachable", Outcome.PASSED, f"collected in {collected.seconds:.2f} s",
                   [f"hostname {collected.facts.hostname}, kernel {collected.facts.kernel_release}"]
                   + [f"note: {n}" for n in collected.facts.notes]))
