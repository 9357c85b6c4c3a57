"""kvm.device: /dev/kvm."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import kvm

test_kvm_device = per_host(kvm.device)
