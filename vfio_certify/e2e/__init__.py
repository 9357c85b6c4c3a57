"""End to end: attach a host device to a running VM through libvirt, prove it in the guest,
detach it, prove it gone, and prove the host is as it was. Every change is journalled on
disk and undone, also by the next run when this one was killed."""
