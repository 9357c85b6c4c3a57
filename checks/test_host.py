"""host.reachable: the host answered, and its facts were collected and read."""
import pytest

from vfio_certify.rules import host


@pytest.mark.check("host.reachable")
def test_host_reachable(collected, certify_target, certify):
    certify(host.reachable(certify_target.name, collected.facts, collected.error, collected.seconds,
                               certify_target.source))
