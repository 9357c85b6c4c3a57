"""kvm.device: /dev/kvm."""
import pytest

from vfio_certify.rules import kvm


@pytest.mark.check("kvm.device")
def test_kvm_device(host_facts, certify):
    certify(kvm.device(host_facts))
