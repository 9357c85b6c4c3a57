"""cpu.virtualization: VT-x or AMD-V."""
import pytest

from vfio_certify.rules import cpu


@pytest.mark.check("cpu.virtualization")
def test_cpu_virtualization(host_facts, certify):
    certify(cpu.virtualization(host_facts))
