"""kernel.config[...] and kernel.cmdline: how the kernel was built and booted."""
import pytest

from vfio_certify.rules import kernel


@pytest.mark.check("kernel.config")
@pytest.mark.parametrize("option", kernel.CONFIG_OPTIONS)
def test_kernel_config(host_facts, certify, option):
    certify(kernel.config_option(host_facts, option))


@pytest.mark.check("kernel.cmdline")
def test_kernel_cmdline(host_facts, certify):
    certify(kernel.cmdline(host_facts))
