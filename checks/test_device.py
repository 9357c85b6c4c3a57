"""device.*: the devices named with --device."""
from vfio_certify.checklist import per_device
from vfio_certify.rules import device, device_readiness

test_device_present = per_device(device.present)
test_device_host_network = per_device(device.host_network)
test_device_live_migration = per_device(device.live_migration)
test_device_reset = per_device(device_readiness.reset, kind="pci")
test_device_host_console = per_device(device_readiness.host_console, kind="pci")
test_device_vfio_binding = per_device(device_readiness.vfio_binding, kind="pci")
test_device_sriov = per_device(device_readiness.sriov, kind="pci")
test_device_in_use = per_device(device_readiness.in_use)
test_device_numa = per_device(device_readiness.numa, kind="pci")
