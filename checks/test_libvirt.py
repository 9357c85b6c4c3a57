"""libvirt.*: what the host's libvirt and QEMU can assign."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import libvirt

test_libvirt_hostdev = per_host(libvirt.hostdev)
