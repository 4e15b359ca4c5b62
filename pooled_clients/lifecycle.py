"""Process lifecycle: close every pool once at shutdown (bounded), reset after a fork, and the
pieces the server hooks share (:mod:`pooled_clients.gunicorn`, :mod:`pooled_clients.uwsgi`,
Celery's ``worker_process_shutdown``).

Shutdown never hangs exit: pools stop handing out clients at once, clients in use get one
grace period in all (``POOLED_CLIENTS_SHUTDOWN_TIMEOUT``), the maintenance thread (a
daemon) gets a bounded join, and so does withdrawing the process's shared status entry.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pooled_clients import fork

__all__ = [
    "child_exited",
    "connect_celery",
    "install",
    "on_child_exit",
    "on_worker_process_shutdown",
    "reset_after_fork",
    "shutdown",
    "warm_up",
]

logger = logging.getLogger("pooled_clients")

_installed = False
_done_pid = 0
_lock = threading.Lock()
_child_exit_callbacks: list[Callable[[int], None]] = []
_warmed_pid = 0

#: Longest wait for the maintenance thread at shutdown.
_MAINTENANCE_JOIN = 1.0
#: Longest wait for this process's entry to leave the shared status store at shutdown.
_WITHDRAW_JOIN = 2.0


def install() -> None:
    """Register the interpreter-exit hook (once per process) and, under uWSGI, its hooks."""
    global _installed
    if _installed:
        return
    _installed = True
    # The maintenance and creation threads are daemons, so atexit handlers do run; the hook is
    # inherited by forked children and closes only the pools of the process it runs in.
    atexit.register(shutdown)
    from pooled_clients import uwsgi

    uwsgi.install(on_exit=shutdown)


def shutdown(timeout: float | None = None) -> None:
    """Close every pool of this process (at most once per process), waiting up to
    ``timeout`` seconds in all (default ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT``) for clients in
    use; never raises, never waits longer than that plus two bounded thread joins (the
    maintenance thread, and withdrawing this process's shared status entry)."""
    global _done_pid
    pid = os.getpid()
    with _lock:
        if _done_pid == pid:
            return
        _done_pid = pid
    from pooled_clients import maintenance
    from pooled_clients.handler import pools

    start = time.monotonic()
    closed = 0
    try:
        if pools.built():
            if timeout is None:
                from pooled_clients import conf

                timeout = float(conf.get_process_setting("POOLED_CLIENTS_SHUTDOWN_TIMEOUT"))
            deadline = start + max(0.0, timeout)
            closed = len(pools.built())
            pools.close_all(max(0.0, deadline - time.monotonic()))
            # Pools made outside ``pools`` (Pool(...) directly) close within the same period.
            others = [p for p in maintenance.live_pools() if p.pid == pid and not p.closed]
            for p in others:
                p.begin_close()
            for p in others:
                p.finish_close(deadline)
            closed += len(others)
    except Exception:  # never turn a clean exit into a traceback
        logger.exception("Closing pools at shutdown failed")
    maintenance.stop(timeout=_MAINTENANCE_JOIN)
    # Leave the all-workers page at once rather than after MAX_AGE (bounded; only in a
    # process that published).
    shared = sys.modules.get("pooled_clients.shared_status")
    if shared is not None:
        try:
            shared.withdraw(timeout=_WITHDRAW_JOIN)
        except Exception:
            logger.exception("Withdrawing the shared status at shutdown failed")
    if closed:
        logger.debug("Closed %d pool(s) in process %d in %.3fs.", closed, pid,
                     time.monotonic() - start)


def reset_after_fork() -> None:
    """Make this process's pools start afresh if it was forked without Python's at-fork
    hooks (uWSGI without ``--py-call-osafterfork``); a no-op after an ``os.fork()``.

    Inherited clients are abandoned without I/O; the maintenance thread restarts on first use.
    """
    from pooled_clients import fork

    fork.run_child_callbacks()


def warm_up(**kwargs: Any) -> bool:
    """With ``POOLED_CLIENTS_WARM_UP``, start every sync pool of this serving process so that
    its ``MIN_SIZE`` clients open in the background (once per process; never blocks).

    Called by the server hooks (gunicorn ``post_fork`` and ``post_worker_init``, uWSGI
    postfork) and, as a ``request_started`` receiver, by the first request. Does nothing
    before Django is set up (a gunicorn worker without ``--preload`` loads the application
    after ``post_fork``). True when it started the pools.
    """
    global _warmed_pid
    from django.apps import apps

    pid = os.getpid()
    if _warmed_pid == pid or not apps.ready:
        return False
    from pooled_clients import conf

    if conf.get_process_setting("POOLED_CLIENTS_WARM_UP") is not True:
        return False
    _warmed_pid = pid
    from pooled_clients import shared_status
    from pooled_clients.aio import AsyncPool
    from pooled_clients.handler import pools

    for alias in pools:
        try:
            pool = pools[alias]
            # An async pool's clients belong to an event loop: they open on first use there.
            if not isinstance(pool, AsyncPool):
                pool.start()
        except Exception as exc:  # a misconfigured pool is reported by `manage.py check`
            from pooled_clients.masking import mask_exception

            logger.warning("Warming up pool %r failed: %s", alias, mask_exception(exc))
    # A warm worker is reachable by fleet-wide drains before its first request.
    shared_status.start()
    return True


def on_worker_process_shutdown(sender: Any = None, **kwargs: Any) -> None:
    """Receiver for Celery's ``worker_process_shutdown`` signal: a prefork child leaves with
    ``os._exit``, so atexit never runs there and pools must be closed here."""
    shutdown()


def connect_celery() -> bool:
    """Connect :func:`on_worker_process_shutdown` to Celery's signal; False without Celery."""
    try:
        from celery.signals import worker_process_shutdown
    except ImportError:
        return False
    worker_process_shutdown.connect(on_worker_process_shutdown, weak=False,
                                    dispatch_uid="pooled_clients_shutdown")
    return True


def on_child_exit(callback: Callable[[int], None]) -> Callable[[int], None]:
    """Register ``callback(pid)`` to run in a server's master when one of its workers has
    exited (``pooled_clients.gunicorn.child_exit``), including workers killed by SIGKILL.
    Usable as a decorator; registering the same callable twice keeps one."""
    if callback not in _child_exit_callbacks:
        _child_exit_callbacks.append(callback)
    return callback


def child_exited(pid: int) -> None:
    """Run the :func:`on_child_exit` callbacks for a worker that exited; never raises."""
    for callback in list(_child_exit_callbacks):
        try:
            callback(pid)
        except Exception:
            logger.exception("A child-exit callback failed for worker %d", pid)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


fork.on_fork_in_child(_after_fork_in_child)
