"""Process shutdown: close every pool once, waiting a bounded grace period."""

from __future__ import annotations

import atexit
import logging
import os
import threading

__all__ = ["install", "shutdown"]

logger = logging.getLogger("pooled_clients")

_installed = False
_done_pid = 0
_lock = threading.Lock()


def install() -> None:
    """Register the interpreter-exit hook (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    # The maintenance and creation threads are daemons, so atexit handlers do run.
    atexit.register(shutdown)


def shutdown(timeout: float | None = None) -> None:
    """Close every pool of this process (at most once per process), waiting up to
    ``timeout`` (default ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT``) for clients in use."""
    global _done_pid
    with _lock:
        if _done_pid == os.getpid():
            return
        _done_pid = os.getpid()
    from pooled_clients import maintenance
    from pooled_clients.handler import pools

    try:
        pools.close_all(timeout)
    except Exception:  # never turn a clean exit into a traceback
        logger.exception("Closing pools at shutdown failed")
    maintenance.stop(timeout=1.0)
