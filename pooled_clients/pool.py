"""The pool engine: a generic, thread-safe, fork-aware pool over a ClientBackend.

Nothing here imports Django. The hot path (an idle client is there and nobody waits) is
one lock round trip on acquire and one on release; everything else (waiting, creating,
validating, discarding) lives in the slow branches.

Creation runs in short-lived daemon threads so that a caller's TIMEOUT bounds its wait
even when a connect hangs: the new client goes to the first waiter, or to the idle list
when that waiter has given up. Background upkeep (MIN_SIZE, MAX_IDLE, MAX_LIFETIME,
keepalive checks, leak reports, probes while failing) runs in one maintenance thread
shared by every pool of the process (:mod:`pooled_clients.maintenance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType, FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pooled_clients.backends.base import ClientBackend, deadline_scope
from pooled_clients.exceptions import (
    ClientCreationError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from pooled_clients.masking import mask_exception, mask_text
from pooled_clients.stats import Lease, PoolStats, WaitWindow

if TYPE_CHECKING:
    from pooled_clients.aio import AsyncConnection

T = TypeVar("T")

__all__ = ["Pool", "PoolSettings"]

logger = logging.getLogger("pooled_clients")

_monotonic = time.monotonic
_get_ident = threading.get_ident
_getframe = sys._getframe

# Pool states.
_OPEN, _CLOSING, _CLOSED, _RETIRED = "open", "closing", "closed", "retired"

#: Clients inherited across fork(), kept referenced forever so that no finalizer ever
#: runs on them in the child (closing a psycopg connection there would send a Terminate
#: on the parent's socket).
_ABANDONED: list[object] = []
# One reference that is never dropped: interpreter finalization clears module globals, and
# the list (with every client in it) must outlive that too, or finalizers would run at exit.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_ABANDONED))

#: Every pool alive in this process, for the fork hook and the maintenance thread.
_LIVE_POOLS: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The engine's settings: the upper-case keys of a pool definition, parsed."""

    min_size: int = 0
    max_size: int = 10
    timeout: float = 5.0
    max_waiting: int = 0
    max_idle: float | None = 300.0
    max_lifetime: float | None = 3600.0
    check: str = "idle"
    check_idle_after: float = 30.0
    connect_timeout: float = 5.0
    connect_retries: int = 2
    retry_backoff: float = 0.5
    retry_backoff_max: float = 5.0
    leak_timeout: float | None = None
    keepalive_interval: float | None = None


class _Entry(Generic[T]):
    """One open client and its bookkeeping; reused for every lease of that client."""

    __slots__ = (
        "checked_at",
        "client",
        "created",
        "expires",
        "key",
        "last_used",
        "leak_reported",
        "lease_code",
        "lease_lasti",
        "lease_since",
        "lease_stack",
        "lease_thread",
    )

    def __init__(self, client: T, now: float, expires: float) -> None:
        self.client = client
        self.key = id(client)
        self.created = now
        self.expires = expires
        self.last_used = now
        self.checked_at = now
        self.lease_thread = 0
        self.lease_since = 0.0
        self.lease_code: CodeType | None = None
        self.lease_lasti = 0
        self.lease_stack: str | None = None
        self.leak_reported = False


class _Waiter:
    """A thread waiting for a client; served first come, first served."""

    __slots__ = ("code", "entry", "error", "lasti", "leased", "lock", "since", "thread")

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.entry: _Entry[Any] | None = None
        self.error: BaseException | None = None
        self.since = now
        self.thread = _get_ident()
        # Where the caller acquires from, so that a hand-off can complete its lease.
        self.code: CodeType | None = None
        self.lasti = 0
        self.leased = False

    def deliver(self, entry: _Entry[Any]) -> bool:
        """Hand ``entry`` over (pool lock held). False if this waiter can no longer take it."""
        self.entry = entry
        self.lock.release()
        return True

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with an error (pool lock held)."""
        self.error = error
        self.lock.release()


class _AsyncWaiter:
    """A task waiting on its event loop for a client, in the same queue as threads.

    The entry is recorded under the pool lock and the task woken through its loop, so a
    task cancelled after the hand-over still finds the entry and returns it.
    """

    __slots__ = ("entry", "error", "future", "loop", "since", "thread")

    def __init__(self, now: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()
        self.entry: _Entry[Any] | None = None
        self.error: BaseException | None = None
        self.since = now
        self.thread = _get_ident()

    def _wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def deliver(self, entry: _Entry[Any]) -> bool:
        """Hand ``entry`` over (pool lock held). False once the waiter's loop is closed."""
        self.entry = entry
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody will ever take it
            self.entry = None
            return False
        return True

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with an error (pool lock held)."""
        self.error = error
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._wake)


_W = TypeVar("_W", _Waiter, _AsyncWaiter)


class _Connection(Generic[T]):
    """``with pool.connection() as client:`` — a class rather than a generator for speed."""

    __slots__ = ("_client", "_pool", "_timeout")

    def __init__(self, pool: Pool[T], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def __enter__(self) -> T:
        self._client = self._pool._checkout(self._timeout, _getframe(1))
        return self._client

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._pool.release(self._client)
        else:
            pool = self._pool
            pool._release(self._client, pool._discard_on_error, exc)


class Pool(Generic[T]):
    """A thread-safe pool of clients made by one :class:`ClientBackend`."""

    def __init__(self, alias: str, backend: ClientBackend[T],
                 settings: PoolSettings | None = None, *, backend_path: str | None = None) -> None:
        self.alias = alias
        self.backend = backend
        self.settings = settings = settings or PoolSettings()
        self.backend_path = backend_path or (
            f"{type(backend).__module__}.{type(backend).__qualname__}"
        )
        backend.connect_timeout = settings.connect_timeout
        self._discard_on_error = bool(getattr(backend, "discard_on_error", True))
        self._check_never = settings.check == "never"
        self._check_always = settings.check == "always"
        self._check_idle_after = settings.check_idle_after
        self._max_size = settings.max_size
        self._fast_leases = settings.leak_timeout is None
        # The CHECK policy as one number: a client idle longer than this is validated.
        self._check_window = (float("inf") if settings.check == "never"
                              else -1.0 if settings.check == "always"
                              else settings.check_idle_after)
        self._target = backend.describe()
        self._secrets = tuple(backend.secrets())
        self._reset_state()
        _LIVE_POOLS.add(self)

    @property
    def _state(self) -> str:
        """"open", "closing", "closed" or "retired"."""
        return self._state_value

    @_state.setter
    def _state(self, value: str) -> None:
        self._state_value = value
        # The hot paths read one flag instead of comparing states and settings.
        self._fast_ok = value is _OPEN and self._fast_leases

    def _reset_state(self) -> None:
        """Fresh bookkeeping: at construction and in a forked child."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._state = _OPEN
        self._idle: list[_Entry[T]] = []
        self._in_use: dict[int, _Entry[T]] = {}
        self._waiters: deque[_Waiter | _AsyncWaiter] = deque()
        self._size = 0
        self._creating = 0
        self._started = False
        self._drained = threading.Condition(self._lock)
        # Counters.
        self._acquired = 0
        self._released = 0
        self._created = 0
        self._closed = 0
        self._timeouts = 0
        self._errors = 0
        self._check_failures = 0
        self._leaks = 0
        self._waits = WaitWindow()
        # Failure state.
        self._failing = False
        self._failing_since: float | None = None
        self._last_error: BaseException | None = None
        self._last_error_at: float | None = None
        self._consecutive_failures = 0
        self._next_probe = 0.0
        self._probing = False
        self._stale_before = 0.0
        self._next_keepalive = 0.0

    # ------------------------------------------------------------------ public API

    def __repr__(self) -> str:
        return (f"<Pool {self.alias!r} {self.backend_path} target={self._target!r} "
                f"state={self._state}>")

    __str__ = __repr__

    @property
    def target(self) -> str:
        """The masked target of the backend."""
        return self._target

    @property
    def closed(self) -> bool:
        """True once the pool was closed or retired."""
        return self._state in (_CLOSED, _RETIRED, _CLOSING)

    def connection(self, timeout: float | None = None,
                   endpoint: str | None = None) -> _Connection[T]:
        """Context manager yielding a client, returned (reset or discarded) on exit."""
        if endpoint is not None:
            self._unknown_endpoint(endpoint)
        return _Connection(self, timeout)

    def acquire(self, timeout: float | None = None, endpoint: str | None = None) -> T:
        """Check a client out; return it with :meth:`release`.

        Raises :class:`PoolTimeout` when none came free within ``timeout`` (default
        TIMEOUT), :class:`ClientCreationError` when the service cannot be reached,
        :class:`PoolExhausted` past MAX_WAITING and :class:`PoolClosed` once closed.
        """
        if endpoint is not None:
            self._unknown_endpoint(endpoint)
        return self._checkout(timeout, _getframe(1))

    def aconnection(self, timeout: float | None = None,
                    endpoint: str | None = None) -> AsyncConnection[T]:
        """``async with pool.aconnection() as client:`` — waits without blocking the loop."""
        from pooled_clients.aio import AsyncConnection

        if endpoint is not None:
            self._unknown_endpoint(endpoint)
        return AsyncConnection(self, timeout, _getframe(1))

    async def aacquire(self, timeout: float | None = None, endpoint: str | None = None) -> T:
        """:meth:`acquire` for async code: same timeout, limits, errors and stats."""
        from pooled_clients.aio import acquire

        if endpoint is not None:
            self._unknown_endpoint(endpoint)
        return await acquire(self, timeout, _getframe(1))

    async def arelease(self, client: T, discard: bool = False) -> None:
        """:meth:`release` for async code; the reset never blocks the event loop."""
        from pooled_clients.aio import release

        await release(self, client, discard, None)

    # ------------------------------------------------------------------ checkout

    def _checkout(self, timeout: float | None, frame: FrameType) -> T:
        now = _monotonic()
        with self._lock:
            idle = self._idle
            # With LEAK_TIMEOUT set, the slow path records the acquiring stack.
            if idle and self._fast_ok and not self._waiters:
                entry = idle[-1]
                if entry.expires > now and now - entry.last_used <= self._check_window:
                    idle.pop()
                    self._in_use[entry.key] = entry
                    entry.lease_thread = _get_ident()
                    entry.lease_since = now
                    entry.lease_code = frame.f_code
                    # f_lasti, not f_lineno: the line is worked out only when shown.
                    entry.lease_lasti = frame.f_lasti
                    self._acquired += 1
                    return entry.client
        return self._slow_checkout(timeout, frame, now)

    def _enter_slow_path(self) -> None:
        """What every acquire that cannot take the fast path does first: notice a fork the
        at-fork hook did not see (uWSGI without py-call-osafterfork), and start upkeep."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if not self._started:
            self._start()

    def _slow_checkout(self, timeout: float | None, frame: FrameType, start: float) -> T:
        self._enter_slow_path()
        if timeout is None:
            timeout = self.settings.timeout
        deadline = start + timeout
        while True:
            entry, waiter, spawn = self._take_or_wait(start, deadline, _Waiter, frame)
            if spawn:
                self._spawn_creator(probe=spawn == "probe")
            if waiter is not None:
                entry = self._wait(waiter, deadline, timeout)
                if waiter.leased:
                    return entry.client
            assert entry is not None
            if self._validate(entry, _monotonic(), start, deadline):
                return self._lease(entry, frame, start)

    def _take_or_wait(self, start: float, deadline: float, waiter_type: type[_W],
                      frame: FrameType | None = None
                      ) -> tuple[_Entry[T] | None, _W | None, str | None]:
        """Under the lock: take an idle client, or queue a waiter (starting a creation)."""
        with self._lock:
            if self._state is not _OPEN:
                raise PoolClosed(f"Pool {self.alias!r} is {self._state}: it hands out nothing.")
            if self._idle and not self._waiters:
                return self._idle.pop(), None, None
            if self.settings.max_waiting and len(self._waiters) >= self.settings.max_waiting:
                raise PoolExhausted(
                    f"Pool {self.alias!r} has {len(self._waiters)} callers waiting already "
                    f"(MAX_WAITING={self.settings.max_waiting}); {self._state_text()}."
                )
            spawn: str | None = None
            if len(self._waiters) >= self._creating and self._has_room_locked():
                if self._failing:
                    now = _monotonic()
                    if self._probing or now < self._next_probe:
                        raise self._fail_fast_error()
                    self._probing = True
                    spawn = "probe"
                else:
                    spawn = "create"
                self._size += 1
                self._creating += 1
            waiter = waiter_type(start)
            if frame is not None and isinstance(waiter, _Waiter):
                waiter.code = frame.f_code
                waiter.lasti = frame.f_lasti
            self._waiters.append(waiter)
            return None, waiter, spawn

    def _wait(self, waiter: _Waiter, deadline: float, timeout: float) -> _Entry[T]:
        remaining = deadline - _monotonic()
        # deliver() and fail() set the outcome before releasing the waiter's lock.
        woken = remaining > 0 and waiter.lock.acquire(timeout=remaining)
        return self._wait_outcome(waiter, timeout, woken)

    def _wait_outcome(self, waiter: _Waiter | _AsyncWaiter, timeout: float,
                      woken: bool) -> _Entry[T]:
        """What a wait ended with: the entry handed over, or the error the waiter was failed
        with. Only a waiter that was not ``woken`` needs the pool lock: to leave the queue
        and raise the timeout error, unless it was served just as it gave up."""
        if not woken:
            with self._lock:
                if waiter.entry is None and waiter.error is None:
                    # An async waiter whose loop closed was taken off the queue already.
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                    self._timeouts += 1
                    raise self._timeout_error(waiter, timeout)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.entry is not None
        return waiter.entry

    def _timeout_error(self, waiter: _Waiter | _AsyncWaiter, timeout: float) -> PoolError:
        """(lock held) The error for a waiter that gave up."""
        if (self._last_error is not None and self._last_error_at is not None
                and self._last_error_at >= waiter.since and self._creating):
            error: PoolError = ClientCreationError(
                f"Pool {self.alias!r} could not open a client to {self._target} within "
                f"{timeout:g}s: {self._last_error_text()}."
            )
            error.__cause__ = self._last_error
            return error
        connecting = (f"; {self._creating} connection attempt(s) to {self._target} still "
                      "unanswered" if self._creating else "")
        return PoolTimeout(
            f"Pool {self.alias!r} timed out after {timeout:g}s waiting for a client to "
            f"{self._target}; {self._state_text()}{self._holders_text()}{connecting}."
        )

    def _fail_fast_error(self) -> ClientCreationError:
        """(lock held) The error raised at once while the service is down."""
        wait = max(0.0, self._next_probe - _monotonic())
        error = ClientCreationError(
            f"Pool {self.alias!r} cannot reach {self._target} (failing fast after "
            f"{self._consecutive_failures} failed attempts; next attempt in {wait:.1f}s): "
            f"{self._last_error_text()}."
        )
        error.__cause__ = self._last_error
        return error

    def _validate(self, entry: _Entry[T], now: float, start: float,
                  deadline: float | None = None) -> bool:
        """Check an entry taken off the idle list or handed over; discard it if unusable.

        A client created or checked after the acquire began (``start``) needs no check."""
        stale = entry.created < self._stale_before
        if entry.expires <= now or stale:
            self._discard(entry, broken=False)
            return False
        needs_check = now - entry.last_used > self._check_window
        # A check made since the acquire began counts, unless someone used the client after it.
        if not needs_check or (entry.checked_at >= start
                               and entry.checked_at >= entry.last_used):
            return True
        limit = now + self.settings.connect_timeout
        try:
            # A server that stopped answering costs the caller its TIMEOUT at most.
            with deadline_scope(limit if deadline is None else min(limit, deadline)):
                self.backend.check(entry.client)
        except Exception as exc:
            self._check_failed(entry, exc, now, "Discarded a client of pool %r that failed "
                                                "its check: %s")
            return False
        entry.checked_at = now
        return True

    def _check_failed(self, entry: _Entry[T], exc: BaseException, now: float,
                      message: str) -> None:
        """Count a failed check, condemn the idle clients older than ``now``, discard
        ``entry`` and log ``message`` (with the alias and the masked error)."""
        with self._lock:
            self._check_failures += 1
            self._record_error_locked(exc, now)
            # The service probably restarted: every idle client older than this one is
            # presumed dead too, instead of being tested one by one.
            self._purge_stale_locked(now)
        self._discard(entry, broken=True)
        self._log_failure(message, exc)

    def _lease(self, entry: _Entry[T], frame: FrameType, start: float) -> T:
        now = _monotonic()
        with self._lock:
            self._in_use[entry.key] = entry
            entry.lease_thread = _get_ident()
            entry.lease_since = now
            entry.lease_code = frame.f_code
            entry.lease_lasti = frame.f_lasti
            entry.leak_reported = False
            self._acquired += 1
            self._waits.add(now - start, self._acquired)
        if self.settings.leak_timeout is not None:
            entry.lease_stack = "".join(traceback.format_stack(frame))
        return entry.client

    # ------------------------------------------------------------------ release

    def release(self, client: T, discard: bool = False) -> None:
        """Return ``client``: reset for the next caller, or closed when ``discard``."""
        entry = self._in_use.get(id(client))
        if entry is None or entry.client is not client or discard or not self._fast_ok:
            self._release(client, discard, None)
            return
        try:
            ok = self.backend.reset(client)
        except Exception as error:
            self._release_slow(entry, True, error)
            return
        if not ok:
            self._release_slow(entry, True, None)
            return
        # Fast branch: straight back to a waiter or the idle list.
        now = _monotonic()
        with self._lock:
            if self._in_use.pop(entry.key, None) is not entry:
                raise PoolError(f"Pool {self.alias!r}: client released twice.")
            self._released += 1
            entry.last_used = now
            entry.lease_thread = 0
            # A purge marks the clients in use that it presumes dead as expired.
            if entry.expires > now and self._fast_ok:
                if not (self._waiters and self._handoff_locked(entry)):
                    self._idle.append(entry)
                return
            self._size -= 1
            self._closed += 1
        self._close_client(entry)
        self._after_shrink()

    def _release(self, client: T, discard: bool, exc: BaseException | None) -> None:
        """The general release: validates ownership, resets unless ``discard``."""
        entry = self._in_use.get(id(client))
        if entry is None or entry.client is not client:
            if any(c is client for c in _ABANDONED):
                return  # inherited across fork(): the parent owns it, the child leaves it be
            raise PoolError(
                f"Pool {self.alias!r} cannot release {type(client).__name__} object at "
                f"{id(client):#x}: it is not checked out of this pool (released twice, or "
                "acquired from another pool)."
            )
        self._release_slow(entry, discard, exc)

    def _release_slow(self, entry: _Entry[T], discard: bool, exc: BaseException | None) -> None:
        ok = False
        if not discard:
            try:
                ok = self.backend.reset(entry.client)
            except Exception as error:
                exc = exc or error
        self._finish_release(entry, ok, not ok and self._is_broken(entry.client), exc)

    def _finish_release(self, entry: _Entry[T], ok: bool, broken: bool,
                        exc: BaseException | None) -> None:
        """Take back a reset (``ok``) client for a waiter or the idle list, or close it;
        a ``broken`` one also counts as an error and condemns the older idle clients."""
        now = _monotonic()
        with self._lock:
            if self._in_use.pop(entry.key, None) is not entry:
                raise PoolError(f"Pool {self.alias!r}: client released twice.")
            self._released += 1
            entry.last_used = now
            entry.lease_thread = 0
            entry.lease_stack = None
            if broken:
                self._errors += 1
                self._record_error_locked(exc, now)
                self._purge_stale_locked(now)
            if (ok and entry.expires > now and entry.created >= self._stale_before
                    and self._state is _OPEN):
                if not (self._waiters and self._handoff_locked(entry)):
                    self._idle.append(entry)
                return
            self._size -= 1
            self._closed += 1
            self._notify_if_drained_locked()
        self._close_client(entry)
        if broken:
            self._log_failure("Discarded a broken client of pool %r: %s", exc)
        self._after_shrink()

    def _is_broken(self, client: T) -> bool:
        is_broken = getattr(self.backend, "is_broken", None)
        if is_broken is None:
            return False
        try:
            return bool(is_broken(client))
        except Exception:
            return True

    def _handoff_locked(self, entry: _Entry[T]) -> bool:
        """(lock held) Give ``entry`` to the first waiter that can take it.

        A waiting thread's checkout is completed here when the client needs no check (the
        same test as :meth:`_validate`), so the woken thread returns at once instead of
        queueing for the pool lock again.
        """
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if type(waiter) is _Waiter and waiter.code is not None and self._fast_leases:
                now = _monotonic()
                if entry.expires > now and entry.created >= self._stale_before and (
                    now - entry.last_used <= self._check_window
                    or entry.checked_at >= max(waiter.since, entry.last_used)
                ):
                    self._in_use[entry.key] = entry
                    entry.lease_thread = waiter.thread
                    entry.lease_since = now
                    entry.lease_code = waiter.code
                    entry.lease_lasti = waiter.lasti
                    entry.leak_reported = False
                    self._acquired += 1
                    self._waits.add(now - waiter.since, self._acquired)
                    waiter.leased = True
            if waiter.deliver(entry):
                return True
        return False

    # ------------------------------------------------------------------ discard / purge

    def _discard(self, entry: _Entry[T], broken: bool) -> None:
        """Close an entry that is neither idle nor in use (taken for validation)."""
        with self._lock:
            self._size -= 1
            self._closed += 1
            if broken:
                self._errors += 1
        self._close_client(entry)
        self._after_shrink()

    def _purge_stale_locked(self, now: float) -> None:
        """(lock held) Presume every idle client created before ``now`` dead."""
        self._stale_before = now
        for entry in self._in_use.values():
            if entry.created < now:
                entry.expires = 0.0  # closed when released, not handed out again
        stale = [e for e in self._idle if e.created < now]
        if not stale:
            return
        self._idle = [e for e in self._idle if e.created >= now]
        self._size -= len(stale)
        self._closed += len(stale)
        # Closing can block on a dead socket: do it off the lock, in the background.
        threading.Thread(target=self._close_entries, args=(stale,), daemon=True,
                         name=f"pooled_clients-close-{self.alias}").start()

    def _close_entries(self, entries: list[_Entry[T]]) -> None:
        for entry in entries:
            self._close_client(entry)
        self._after_shrink()

    def _close_client(self, entry: _Entry[T]) -> None:
        if self._pid != os.getpid():
            _ABANDONED.append(entry.client)
            return
        try:
            self.backend.close(entry.client)
        except Exception as exc:
            logger.debug("Closing a client of pool %r failed: %s", self.alias,
                         mask_exception(exc, self._secrets))

    def _has_room_locked(self) -> bool:
        """(lock held) Whether one more client may be opened. The endpoint sub-pools of
        :mod:`pooled_clients.endpoints` also enforce their pool's TOTAL_MAX_SIZE here."""
        return self._size < self._max_size

    def _after_shrink(self) -> None:
        """Start creations for waiters left without a client after a discard."""
        spawn: list[str] = []
        with self._lock:
            if self._state is not _OPEN:
                return
            while (len(self._waiters) > self._creating and not self._failing
                   and self._has_room_locked()):
                self._size += 1
                self._creating += 1
                spawn.append("create")
        for _ in spawn:
            self._spawn_creator(probe=False)

    # ------------------------------------------------------------------ creation

    def _spawn_creator(self, probe: bool) -> None:
        """Run one creation job in a daemon thread (a slot is already reserved)."""
        thread = threading.Thread(target=self._create_job, args=(probe,), daemon=True,
                                  name=f"pooled_clients-create-{self.alias}")
        try:
            thread.start()
        except RuntimeError as exc:  # interpreter shutting down
            self._creation_failed(exc, probe)

    def _create_job(self, probe: bool) -> None:
        settings = self.settings
        attempts = 1 if probe else 1 + settings.connect_retries
        backoff = settings.retry_backoff
        last: BaseException | None = None
        for attempt in range(attempts):
            if self._state is not _OPEN or self._pid != os.getpid():
                break
            try:
                with deadline_scope(None):
                    client = self.backend.create()
            except Exception as exc:
                last = exc
                with self._lock:
                    self._errors += 1
                    self._record_error_locked(exc, _monotonic())
                if attempt + 1 < attempts:
                    time.sleep(self._jitter(min(backoff, settings.retry_backoff_max)))
                    backoff *= 2
                continue
            self._add_created(client)
            return
        self._creation_failed(last, probe)

    @staticmethod
    def _jitter(seconds: float) -> float:
        return seconds * random.uniform(0.8, 1.0)

    def _add_created(self, client: T) -> None:
        now = _monotonic()
        lifetime = self.settings.max_lifetime
        expires = now + self._jitter(lifetime) if lifetime is not None else float("inf")
        entry = _Entry(client, now, expires)
        with self._lock:
            self._creating -= 1
            self._created += 1
            if self._failing:
                logger.info("Pool %r reached %s again.", self.alias, self._target)
            self._failing = False
            self._failing_since = None
            self._consecutive_failures = 0
            self._probing = False
            if self._state is _OPEN and self._pid == os.getpid():
                if not (self._waiters and self._handoff_locked(entry)):
                    self._idle.append(entry)
                spawn_more = len(self._waiters) > self._creating and self._has_room_locked()
                close = False
            else:
                self._size -= 1
                self._closed += 1
                spawn_more = close = True
                self._notify_if_drained_locked()
        if close:
            self._close_client(entry)
        elif spawn_more:
            self._after_shrink()

    def _creation_failed(self, exc: BaseException | None, probe: bool) -> None:
        now = _monotonic()
        with self._lock:
            self._creating -= 1
            self._size -= 1
            self._probing = False
            if self._state is not _OPEN:
                self._notify_if_drained_locked()
                return
            self._consecutive_failures += 1
            if not self._failing:
                self._failing = True
                self._failing_since = now
                logger.warning("Pool %r cannot reach %s; failing fast until it does: %s",
                               self.alias, self._target, self._last_error_text())
            backoff = min(self.settings.retry_backoff_max,
                          self.settings.retry_backoff * 2 ** min(self._consecutive_failures, 20))
            self._next_probe = now + self._jitter(backoff)
            if self._size == 0 and self._waiters:
                # Nothing open and nothing coming: nobody should wait out their timeout.
                error = self._fail_fast_error()
                while self._waiters:
                    self._waiters.popleft().fail(error)

    def _record_error_locked(self, exc: BaseException | None, now: float) -> None:
        if exc is not None:
            self._last_error = exc
            self._last_error_at = now

    def _last_error_text(self) -> str:
        return mask_exception(self._last_error, self._secrets) or "no error recorded"

    def _log_failure(self, message: str, exc: BaseException | None) -> None:
        logger.warning(message, self.alias, mask_exception(exc, self._secrets)
                       or "it was found broken on release")

    # ------------------------------------------------------------------ maintenance

    def _start(self) -> None:
        """First slow-path use in this process: join the maintenance thread, warm up."""
        self._started = True
        from pooled_clients import maintenance

        maintenance.ensure_running()
        self.maintain(_monotonic())

    def maintain(self, now: float) -> float | None:
        """One round of upkeep; returns seconds until the pool wants the next round."""
        if self._state is not _OPEN or self._pid != os.getpid():
            return None
        settings = self.settings
        to_close: list[_Entry[T]] = []
        to_check: list[_Entry[T]] = []
        spawn: list[str] = []
        leaked: list[_Entry[T]] = []
        with self._lock:
            keep: list[_Entry[T]] = []
            removed = 0
            for entry in self._idle:
                expired = entry.expires <= now or entry.created < self._stale_before
                too_idle = (settings.max_idle is not None
                            and now - entry.last_used > settings.max_idle
                            and self._size - removed > settings.min_size)
                if expired or too_idle:
                    to_close.append(entry)
                    removed += 1
                else:
                    keep.append(entry)
            if removed:
                self._idle = keep
                self._size -= removed
                self._closed += removed
            if (settings.keepalive_interval is not None and now >= self._next_keepalive
                    and self._idle):
                # A few at a time, least recently used first (the front of the idle list).
                for entry in self._idle:
                    if now - max(entry.checked_at, entry.last_used) >= settings.keepalive_interval:
                        to_check.append(entry)
                        if len(to_check) == 2:
                            break
                if to_check:
                    self._idle = [e for e in self._idle if e not in to_check]
                self._next_keepalive = now + min(1.0, settings.keepalive_interval)
            if self._failing:
                if not self._probing and now >= self._next_probe and self._has_room_locked():
                    self._probing = True
                    self._size += 1
                    self._creating += 1
                    spawn.append("probe")
            else:
                while self._size < settings.min_size and self._has_room_locked():
                    self._size += 1
                    self._creating += 1
                    spawn.append("create")
            if settings.leak_timeout is not None:
                for entry in self._in_use.values():
                    if not entry.leak_reported and now - entry.lease_since > settings.leak_timeout:
                        entry.leak_reported = True
                        self._leaks += 1
                        leaked.append(entry)
        for entry in to_close:
            self._close_client(entry)
        for kind in spawn:
            self._spawn_creator(probe=kind == "probe")
        for entry in leaked:
            self._report_leak(entry, now)
        for entry in to_check:
            self._keepalive_check(entry)
        return self._next_wakeup(now)

    def _next_wakeup(self, now: float) -> float | None:
        settings = self.settings
        delays = [30.0]
        if self._failing:
            delays.append(max(0.05, self._next_probe - now))
        if settings.keepalive_interval is not None:
            delays.append(min(1.0, settings.keepalive_interval))
        if settings.leak_timeout is not None:
            delays.append(min(1.0, settings.leak_timeout / 2))
        if settings.max_idle is not None:
            delays.append(min(settings.max_idle / 2, 10.0))
        if settings.max_lifetime is not None:
            delays.append(min(settings.max_lifetime / 10, 10.0))
        return max(0.01, min(delays))

    def _keepalive_check(self, entry: _Entry[T]) -> None:
        now = _monotonic()
        try:
            with deadline_scope(now + self.settings.connect_timeout):
                self.backend.check(entry.client)
        except Exception as exc:
            self._check_failed(entry, exc, now, "Keepalive check failed for a client of pool "
                                                "%r: %s")
            return
        entry.checked_at = now
        with self._lock:
            if self._state is _OPEN:
                if not (self._waiters and self._handoff_locked(entry)):
                    self._idle.insert(0, entry)
                return
            self._size -= 1
            self._closed += 1
        self._close_client(entry)

    def _report_leak(self, entry: _Entry[T], now: float) -> None:
        thread = _thread_name(entry.lease_thread)
        logger.warning(
            "Pool %r: a client has been held for %.1fs by thread %s (LEAK_TIMEOUT=%gs), "
            "acquired at:\n%s",
            self.alias, now - entry.lease_since, thread, self.settings.leak_timeout,
            entry.lease_stack or _where(entry),
        )

    # ------------------------------------------------------------------ close / retire / fork

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for clients in use (and creations in flight), then close
        everything.

        Later acquires raise :class:`PoolClosed`. Safe to call more than once.
        """
        self.begin_close()
        self.finish_close(_monotonic() + max(0.0, timeout))

    def begin_close(self) -> None:
        """First half of :meth:`close`: refuse new acquires, fail waiters, close idle clients."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        with self._lock:
            if self._state in (_CLOSED, _CLOSING):
                return
            self._state = _CLOSING
            idle, self._idle = self._idle, []
            self._size -= len(idle)
            self._closed += len(idle)
            self._fail_waiters_locked()
        for entry in idle:
            self._close_client(entry)

    def _notify_if_drained_locked(self) -> None:
        """(lock held) Wake :meth:`finish_close` once nothing is in use or being created."""
        if self._state is _CLOSING and not self._in_use and not self._creating:
            self._drained.notify_all()

    def finish_close(self, deadline: float) -> None:
        """Second half of :meth:`close`: wait for clients in use and creations in flight
        until ``deadline`` (monotonic), then close what is left."""
        with self._lock:
            if self._state is _CLOSED:
                return
            # Creations in flight are waited for too: none may open a client after close().
            while self._in_use or self._creating:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
                self._drained.wait(remaining)
            leftover = list(self._in_use.values())
            self._in_use.clear()
            self._size -= len(leftover)
            self._closed += len(leftover)
            self._state = _CLOSED
        if leftover:
            logger.warning("Pool %r closed %d client(s) still in use at shutdown.",
                           self.alias, len(leftover))
        for entry in leftover:
            self._close_client(entry)
        _LIVE_POOLS.discard(self)

    def retire(self) -> None:
        """Stop handing out clients without waiting: close idle ones now and each client
        in use when it is released. Used when settings are reloaded."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        with self._lock:
            if self._state is not _OPEN:
                return
            self._state = _RETIRED
            idle, self._idle = self._idle, []
            self._size -= len(idle)
            self._closed += len(idle)
            self._fail_waiters_locked()
        for entry in idle:
            self._close_client(entry)
        _LIVE_POOLS.discard(self)

    def _fail_waiters_locked(self) -> None:
        error = PoolClosed(f"Pool {self.alias!r} was {self._state} while waiting for a client.")
        while self._waiters:
            self._waiters.popleft().fail(error)

    def _after_fork_in_child(self) -> None:
        """Abandon every inherited client without I/O and start afresh."""
        with _FORK_LOCK:
            if self._pid == os.getpid():
                return
            _ABANDONED.extend(e.client for e in self._idle)
            _ABANDONED.extend(e.client for e in self._in_use.values())
            state = self._state
            self._reset_state()
            if state is not _OPEN:
                self._state = _CLOSED if state is _CLOSING else state

    # ------------------------------------------------------------------ stats

    def stats(self) -> PoolStats:
        """A consistent snapshot of this pool in this process."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        now = _monotonic()
        with self._lock:
            leases = [
                (e.lease_thread, now - e.lease_since, _where(e), e.leak_reported, e.lease_stack)
                for e in self._in_use.values()
            ]
            state = self._state
            if state is _OPEN and self._failing:
                state = "failing"
            counters = (
                self._size, len(self._idle), len(self._in_use), len(self._waiters),
                self._acquired, self._released, self._created, self._closed, self._timeouts,
                self._errors, self._check_failures, self._leaks, self._creating,
            )
            p50, p95, p99 = self._waits.percentiles(self._acquired)
            last_error = self._last_error_text() if self._last_error is not None else None
        (size, idle, in_use, waiting, acquired, released, created, closed, timeouts, errors,
         check_failures, leaks, creating) = counters
        backend_stats = getattr(self.backend, "stats", None)
        return PoolStats(
            alias=self.alias,
            backend=self.backend_path,
            target=self._target,
            pid=self._pid,
            min_size=self.settings.min_size,
            max_size=self._max_size,
            size=size,
            idle=idle,
            in_use=in_use,
            waiting=waiting,
            acquired_total=acquired,
            released_total=released,
            created_total=created,
            closed_total=closed,
            timeouts_total=timeouts,
            errors_total=errors,
            check_failures_total=check_failures,
            leaks_total=leaks,
            wait_ms_p50=p50,
            wait_ms_p95=p95,
            wait_ms_p99=p99,
            healthy=state == "open",
            last_error=last_error,
            leases=tuple(
                Lease(thread=_thread_name(tid), thread_id=tid, held_for=round(held, 3),
                      where=where, leaked=leaked, stack=stack)
                for tid, held, where, leaked, stack in leases
            ),
            state=state,
            creating=creating,
            timeout=self.settings.timeout,
            backend_stats=dict(backend_stats()) if callable(backend_stats) else {},
        )

    def waits_since(self, number: int) -> tuple[int, int, list[float]]:
        """Acquire waits after checkout ``number``: ``(latest checkout number, how many of
        those checkouts did not wait, the other waits in seconds)``. Only the most recent
        checkouts are remembered (see :class:`~pooled_clients.stats.WaitWindow`)."""
        with self._lock:
            acquired = self._acquired
            waits = self._waits.samples_since(number) if acquired > number else []
        return acquired, max(0, acquired - number - len(waits)), waits

    def _state_text(self) -> str:
        """(lock held) ``in use 10 / idle 0 / max 10 / waiting 3``."""
        return (f"in use {len(self._in_use)} / idle {len(self._idle)} / max {self._max_size} "
                f"/ waiting {len(self._waiters)}")

    def _holders_text(self, limit: int = 5) -> str:
        """(lock held) Who holds the clients, longest first."""
        now = _monotonic()
        entries = sorted(self._in_use.values(), key=lambda e: e.lease_since)[:limit]
        if not entries:
            return ""
        parts = [f"{_thread_name(e.lease_thread)} for {now - e.lease_since:.1f}s at {_where(e)}"
                 for e in entries]
        more = len(self._in_use) - len(entries)
        suffix = f" and {more} more" if more > 0 else ""
        return "; held by " + ", ".join(parts) + suffix

    # ------------------------------------------------------------------ health

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Borrow or open one client and validate it; raise a :class:`PoolError` if it cannot.

        With ``wait=False`` a saturated pool (every client in use, none free to borrow)
        passes without waiting: saturation is not a failure.
        """
        timeout = self.settings.timeout if timeout is None else timeout
        start = _monotonic()
        deadline = start + timeout
        with self._lock:
            if self._state is not _OPEN:
                raise PoolClosed(f"Pool {self.alias!r} is {self._state}.")
            if self._failing and (self._probing or start < self._next_probe):
                raise self._fail_fast_error()
            saturated = not self._idle and self._size >= self._max_size
        if saturated and not wait:
            return
        client = self._checkout(timeout, _getframe(1))
        try:
            entry = self._in_use[id(client)]
            # Opening a client proves nothing for every backend (an HTTP session connects
            # lazily): only a check made since ``start`` counts.
            if entry.checked_at < start or entry.checked_at == entry.created:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise PoolTimeout(f"Pool {self.alias!r}: no time left to check a client "
                                      f"within {timeout:g}s.")
                try:
                    with deadline_scope(deadline):
                        self.backend.check(client)
                except Exception as exc:
                    with self._lock:
                        self._check_failures += 1
                        self._record_error_locked(exc, _monotonic())
                    self._release(client, True, exc)
                    client = None  # type: ignore[assignment]
                    error = ClientCreationError(
                        f"Pool {self.alias!r}: a client to {self._target} failed its check: "
                        f"{mask_exception(exc, self._secrets)}."
                    )
                    raise error from exc
                entry.checked_at = _monotonic()
        finally:
            if client is not None:
                self._release(client, False, None)

    def _unknown_endpoint(self, endpoint: str) -> None:
        from pooled_clients.exceptions import PoolDoesNotExist

        raise PoolDoesNotExist(
            f"Pool {self.alias!r} has no endpoint {endpoint!r} (it defines no ENDPOINTS)."
        )

    def mask(self, text: str) -> str:
        """``text`` with this pool's secrets masked."""
        return mask_text(text, self._secrets)

    def iter_idle_clients(self) -> Iterator[T]:  # pragma: no cover - debugging aid
        """The idle clients (a copy), for debugging."""
        with self._lock:
            return iter([e.client for e in self._idle])


_FORK_LOCK = threading.RLock()


def _where(entry: _Entry[Any]) -> str:
    code = entry.lease_code
    if code is None:
        return "unknown"
    return f"{code.co_filename}:{_line_of(code, entry.lease_lasti)} in {code.co_name}"


def _line_of(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset ``lasti``."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return code.co_firstlineno


def _thread_name(ident: int) -> str:
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:
        return f"thread {ident} (ended)"
    return str(thread.name)


def _after_fork_in_child() -> None:
    """os.register_at_fork hook: every pool of this process starts afresh in the child."""
    global _FORK_LOCK
    _FORK_LOCK = threading.RLock()  # a lock held at fork time would never be released
    for pool in list(_LIVE_POOLS):
        pool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
