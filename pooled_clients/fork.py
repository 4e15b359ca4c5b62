"""The one place that knows about ``fork()``.

Two mechanisms find out that this process is a forked child, and both end here:

* ``os.register_at_fork(after_in_child=...)`` runs :func:`run_child_callbacks` right after an
  ``os.fork()`` (gunicorn, multiprocessing, Celery's prefork pool);
* uWSGI forks from C, where Python's at-fork hooks run only with ``--py-call-osafterfork``:
  its post-fork hook, and the pid check on every pool's slow path (:func:`forked_since`),
  call :func:`run_child_callbacks` too. It runs the callbacks at most once per process.

Modules with per-process state register a callback with :func:`on_fork_in_child`, in import
order. Clients inherited from the parent are handed to :func:`abandon`: they are kept
referenced forever, so that no finalizer runs on them in the child (closing a psycopg
connection there would send a Terminate on the parent's socket).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterable

__all__ = ["abandon", "forked_since", "is_abandoned", "on_fork_in_child",
           "run_child_callbacks"]

_ABANDONED: list[object] = []
# One reference that is never dropped: interpreter finalization clears module globals, and
# the list (with every client in it) must outlive that too, or finalizers would run at exit.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_ABANDONED))

_callbacks: list[Callable[[], None]] = []
_pid = os.getpid()
_lock = threading.RLock()


def abandon(clients: Iterable[object]) -> None:
    """Keep inherited ``clients`` referenced forever, never closed or finalized."""
    _ABANDONED.extend(clients)


def is_abandoned(client: object) -> bool:
    """Whether ``client`` was inherited across a fork and abandoned."""
    return any(c is client for c in _ABANDONED)


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a forked child, before anything there uses this package."""
    _callbacks.append(callback)


def forked_since(pid: int) -> bool:
    """Whether this process is not ``pid`` (the process some state was made in)."""
    return pid != os.getpid()


def run_child_callbacks() -> None:
    """Reset every registered module for this process; a no-op when already done."""
    global _pid, _lock
    pid = os.getpid()
    if pid == _pid:
        return
    # A lock held by another thread at fork time would never be released here.
    _lock = threading.RLock()
    with _lock:
        if pid == _pid:
            return
        _pid = pid
        for callback in list(_callbacks):
            callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=run_child_callbacks)
