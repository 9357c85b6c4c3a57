"""vfio.module[...] and vfio.device_node."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import vfio

test_vfio_module = per_host(vfio.module, over=vfio.MODULES)
test_vfio_device_node = per_host(vfio.device_node)
