"""host.reachable: the host answered, and its facts were collected and read."""
from vfio_certify.checklist import per_collection
from vfio_certify.rules import host

test_host_reachable = per_collection(host.reachable)
