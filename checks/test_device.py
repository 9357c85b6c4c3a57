"""device.*: the devices named with --device."""
import pytest

from vfio_certify.rules import device as rules


@pytest.mark.check("device.present")
def test_device_present(host_facts, certify, device):
    certify(rules.present(host_facts, device))


@pytest.mark.check("device.host_network")
def test_device_host_network(host_facts, certify, device):
    certify(rules.host_network(host_facts, device))


@pytest.mark.check("device.live_migration")
def test_device_live_migration(host_facts, certify, device):
    certify(rules.live_migration(host_facts, device))
