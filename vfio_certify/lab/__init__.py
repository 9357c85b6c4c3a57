"""The lab: a throwaway KVM/TCG guest driven through a lab-private libvirtd.

Pieces (each usable on its own):

* :mod:`vfio_certify.lab.tools`       -- which host binaries the lab needs and
  which Debian package ships each one.
* :mod:`vfio_certify.lab.daemons`     -- a private ``virtlogd`` + ``libvirtd``
  (no systemd, nothing under /etc touched).
* :mod:`vfio_certify.lab.initramfs`   -- kernel from /boot + a small cached
  initramfs (busybox, dropbear, the needed modules, one /init template);
  :mod:`vfio_certify.lab.guest_image` is the lab guest's recipe (and the USB
  disk), :mod:`vfio_certify.lab.nested_image` nested L1's.
* :mod:`vfio_certify.lab.base`        -- what both labs share: work dir, L0's
  daemons, teardown through every undo journal.
* :mod:`vfio_certify.lab.templates`   -- the jinja2 domain/device XML.
* :mod:`vfio_certify.lab.guest`       -- boot the guest, wait for SSH, run
  commands, tear down.
* :mod:`vfio_certify.lab.hotplug`     -- the emulated stand-ins (e1000e NIC and
  USB disk) run through the product's hot-plug engine (vfio_certify.e2e.hotplug).
* :mod:`vfio_certify.lab.nested`      -- the nested lab: L1, a VT-d host with its
  own libvirtd, and L2, its guest; :mod:`vfio_certify.lab.target` points
  ``vfio-certify --e2e`` at it.

The lab is the test bed of the product: it imports :mod:`vfio_certify.e2e` (the
engine, its undo journal, the libvirt event loop), never the other way round.
Every change it makes is on an :class:`~vfio_certify.e2e.undo.UndoJournal`, run
newest-first on teardown (also after failures, timeouts, Ctrl-C).

``python -m vfio_certify.lab [--json] [--keep]`` runs the whole thing once and
prints the timed steps; ``pytest tests/lab`` is the test suite. The guest image
is cached in ``$VFIO_CERTIFY_LAB_CACHE`` or ``~/.cache/vfio-certify/lab``; set
``VFIO_CERTIFY_LAB_KEEP=1`` to keep a lab's work dir (console log, libvirt
logs, domain XML, journal) after a successful run (a failed one is kept).
"""
