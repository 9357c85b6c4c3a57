"""cpu.virtualization: VT-x or AMD-V."""
from vfio_certify.checklist import per_host
from vfio_certify.rules import cpu

test_cpu_virtualization = per_host(cpu.virtualization)
