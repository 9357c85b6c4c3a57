"""e2e.*: judged by the end-to-end flow (vfio_certify/e2e/, with --e2e); their ids are registered here.

The flow builds these results itself (a device proven in a running guest, the host left as it was);
no rule function judges them. checks/test_e2e.py runs them.
"""
from .catalog import REQUIRED, declare

LEFTOVERS = declare("e2e.leftovers", REQUIRED, "changes an interrupted earlier run left behind were undone")
NIC = declare("e2e.nic", REQUIRED, "a NIC attached as <hostdev>, proven in the guest, detached, host driver restored")
PCI = declare("e2e.pci", REQUIRED,
              "a PCI device attached as <hostdev>, proven in the guest, detached, host driver restored")
USB = declare("e2e.usb", REQUIRED, "a USB disk attached as <hostdev>, proven read-only in the guest, detached")
DEVICE = declare("e2e.device", REQUIRED,
                 "the end-to-end flow for a device (an id used only when the check itself crashed)")
