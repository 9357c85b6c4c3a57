"""device.*: the devices named with --device."""
from vfio_certify.checklist import per_device
from vfio_certify.rules import device

test_device_present = per_device(device.present)
test_device_host_network = per_device(device.host_network)
test_device_live_migration = per_device(device.live_migration)
