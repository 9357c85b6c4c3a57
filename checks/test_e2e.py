"""e2e.*: with --e2e, each device is attached to the running VM (--domain), proven in the guest,
detached, and the host is proven as it was (vfio_certify/e2e/flow.py)."""
import pytest


@pytest.mark.check("e2e.leftovers")
@pytest.mark.e2e
def test_e2e_leftovers(e2e_session, certify):
    certify(e2e_session.leftovers_result())


@pytest.mark.check("e2e.device")
@pytest.mark.e2e
def test_e2e_device(e2e_session, host_facts, device, named_devices, certify):
    certify(e2e_session.run(host_facts, device, named_devices))
