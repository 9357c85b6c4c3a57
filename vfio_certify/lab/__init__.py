"""The lab: a throwaway KVM/TCG guest driven through a lab-private libvirtd.

Pieces (each usable on its own):

* :mod:`vfio_certify.lab.tools`       -- which host binaries the lab needs and
  which Debian package ships each one.
* :mod:`vfio_certify.lab.daemons`     -- a private ``virtlogd`` + ``libvirtd``
  (no systemd, nothing under /etc touched).
* :mod:`vfio_certify.lab.guest_image` -- kernel from /boot + a small cached
  initramfs (busybox, dropbear, the needed modules).
* :mod:`vfio_certify.lab.templates`   -- the jinja2 domain/device XML.
* :mod:`vfio_certify.lab.guest`       -- boot the guest, wait for SSH, run
  commands, tear down.
* :mod:`vfio_certify.lab.hotplug`     -- the emulated hot-plug flow (e1000e NIC
  and USB disk): attach, prove in the guest, detach, prove gone, timed.
* :mod:`vfio_certify.lab.journal`     -- every change recorded; undo stack run
  newest-first on teardown (also after failures, timeouts, Ctrl-C).

``python -m vfio_certify.lab [--json] [--keep]`` runs the whole thing once and
prints the timed steps; ``pytest tests/lab`` is the test suite. The guest image
is cached in ``$VFIO_CERTIFY_LAB_CACHE`` or ``~/.cache/vfio-certify/lab``; set
``VFIO_CERTIFY_LAB_KEEP=1`` to keep a lab's work dir (console log, libvirt
logs, domain XML, journal) after a successful run (a failed one is kept).
"""
