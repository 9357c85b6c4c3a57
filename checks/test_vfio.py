"""vfio.module[...] and vfio.device_node."""
import pytest

from vfio_certify.rules import vfio


@pytest.mark.check("vfio.module")
@pytest.mark.parametrize("module", vfio.MODULES)
def test_vfio_module(host_facts, certify, module):
    certify(vfio.module(host_facts, module))


@pytest.mark.check("vfio.device_node")
def test_vfio_device_node(host_facts, certify):
    certify(vfio.device_node(host_facts))
