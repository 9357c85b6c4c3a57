"""e2e.*: with --e2e, each device is attached to a running VM, proven in the guest, detached,
and the host is proven as it was. Without --domain the lab's emulated stand-in runs instead."""
import pytest

from vfio_certify.model import Outcome


@pytest.mark.check("e2e.leftovers")
@pytest.mark.e2e("any")
def test_e2e_leftovers(e2e_session, certify):
    certify(e2e_session.leftovers_result())


@pytest.mark.check("e2e.device")
@pytest.mark.e2e("domain")
def test_e2e_device(e2e_session, host_facts, device, named_devices, certify):
    certify(e2e_session.run(host_facts, device, named_devices))


@pytest.mark.check("e2e.device")
@pytest.mark.e2e("lab")
@pytest.mark.parametrize("kind", ["nic", "usb"])
def test_e2e_lab_standin(e2e_session, certify, kind):
    result = e2e_session.run_lab_standin(kind)
    assert result.outcome in (Outcome.PASSED, Outcome.FAILED)
    certify(result)
