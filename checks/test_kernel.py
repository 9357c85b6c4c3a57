"""kernel.config[...] and kernel.cmdline: how the kernel was built and booted."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import kernel

test_kernel_config = per_host(kernel.config_option, over=kernel.CONFIG_OPTIONS)
test_kernel_cmdline = per_host(kernel.cmdline)
