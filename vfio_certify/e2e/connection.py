"""libvirt connections for the end-to-end flow: the event loop (DEVICE_REMOVED events, keepalive)
and connections that fail instead of hanging when the host stops answering."""
from __future__ import annotations

import threading
from typing import Callable, Optional

LIBVIRT_KEEPALIVE = (5, 3)  # seconds between probes, unanswered probes before the connection is closed

_event_lock = threading.Lock()
_event_thread: Optional[threading.Thread] = None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop once per process and run it in a
    daemon thread (needed for domain events such as DEVICE_REMOVED, and for
    keepalive). Must run before the connection that registers callbacks is opened."""
    global _event_thread
    import libvirt

    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt's default handler prints every error (also expected ones,
        # e.g. "domain not found" during teardown) to stderr.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_thread = threading.Thread(target=run, name="libvirt-events",
                                         daemon=True)
        _event_thread.start()


def open_with_keepalive(open_connection: Callable[[str], object], uri: str):
    """A libvirt connection on which a host that stops answering fails calls after ~20 s instead of hanging them
    (needs the event loop: ensure_event_loop)."""
    import libvirt

    conn = open_connection(uri)
    try:
        conn.setKeepAlive(*LIBVIRT_KEEPALIVE)
    except libvirt.libvirtError:
        pass  # a local driver has no keepalive
    return conn
