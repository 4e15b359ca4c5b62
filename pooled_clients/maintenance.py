"""The one maintenance thread of the process, shared by every pool, and the registry of
the pools it serves.

Started lazily (on a pool's first slow-path use, never in ``ready()``), so that a
``--preload`` master that never serves requests forks with no extra thread running; and
restarted lazily in a forked child, where the parent's thread does not exist.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from pooled_clients import fork

__all__ = ["add_periodic", "ensure_running", "live_pools", "register", "stop", "unregister",
           "wake"]


class Maintained(Protocol):
    """What the thread asks of a pool."""

    alias: str
    #: Monotonic time before which the pool needs no round (0: every round).
    next_upkeep: float

    def started(self) -> bool:
        """Whether the pool was used in this process."""

    def maintain(self, now: float) -> float | None:
        """One round of upkeep; seconds until the next, or None."""


#: Every pool alive in this process (and every member of an endpoint or keyed pool).
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


#: Guards _LIVE: copying a WeakSet while another thread adds to it raises RuntimeError,
#: which would end the maintenance thread.
_live_lock = threading.Lock()


def register(pool: Maintained) -> None:
    """Serve ``pool`` once it has started, for as long as it lives."""
    with _live_lock:
        _LIVE.add(pool)


def unregister(pool: Maintained) -> None:
    """Stop serving ``pool`` (closed or retired)."""
    with _live_lock:
        _LIVE.discard(pool)


def live_pools() -> list[Any]:
    """The pools alive in this process."""
    with _live_lock:
        return list(_LIVE)

logger = logging.getLogger("pooled_clients")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid = 0
_wakeup = threading.Event()
_stopping = threading.Event()
#: Extra periodic jobs (name -> (interval, callable)), e.g. publishing shared status.
_periodic: dict[str, tuple[float, Callable[[], None]]] = {}
_last_run: dict[str, float] = {}

#: Longest sleep between two rounds.
MAX_SLEEP = 1.0


def ensure_running() -> None:
    """Start the maintenance thread in this process if it is not running."""
    global _thread, _thread_pid
    pid = os.getpid()
    if _thread is not None and _thread_pid == pid and _thread.is_alive():
        return
    with _lock:
        if _thread is not None and _thread_pid == pid and _thread.is_alive():
            return
        _stopping.clear()
        _thread = threading.Thread(target=_run, name="pooled_clients-maintenance", daemon=True)
        _thread_pid = pid
        _thread.start()


def wake() -> None:
    """Run a round now rather than at the next scheduled time."""
    _wakeup.set()


def add_periodic(name: str, interval: float, job: Callable[[], None]) -> None:
    """Run ``job`` every ``interval`` seconds in the maintenance thread."""
    _periodic[name] = (interval, job)
    ensure_running()
    wake()


def remove_periodic(name: str) -> None:
    """Stop running the job registered under ``name``."""
    _periodic.pop(name, None)
    _last_run.pop(name, None)


def stop(timeout: float = 1.0) -> None:
    """Stop the thread (at shutdown); bounded, never hangs."""
    thread = _thread
    _stopping.set()
    _wakeup.set()
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)


def _run() -> None:
    while not _stopping.is_set():
        now = time.monotonic()
        sleep = MAX_SLEEP
        for pool in live_pools():
            if now < pool.next_upkeep or not pool.started():
                continue  # a settled pool costs one comparison until it is due
            try:
                delay = pool.maintain(now)
            except Exception:  # keep serving the other pools
                logger.exception("Maintenance of pool %r failed", pool.alias)
                continue
            if delay is not None:
                sleep = min(sleep, delay)
        for name, (interval, job) in list(_periodic.items()):
            if now - _last_run.get(name, float("-inf")) >= interval:
                _last_run[name] = now
                try:
                    job()
                except Exception:
                    logger.exception("Periodic job %r failed", name)
            sleep = min(sleep, interval)
        _wakeup.wait(max(0.01, sleep))
        _wakeup.clear()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here, and its locks may have been held at fork time.
    global _thread, _wakeup, _lock, _stopping, _live_lock
    _live_lock = threading.Lock()
    _thread = None
    _lock = threading.Lock()
    _wakeup = threading.Event()
    _stopping = threading.Event()


fork.on_fork_in_child(_after_fork_in_child)
