"""The sync driver: :class:`Pool`, a thread-safe, fork-aware pool over a ClientBackend.

Nothing here imports Django. The state and every rule live in
:class:`~pooled_clients.core.PoolCore`; this module does the I/O with threads. The hot path
(an idle client is there and nobody waits) is one lock round trip on acquire and one on
release; everything else (waiting, creating, validating, discarding) is the slow path.

Creation runs in short-lived daemon threads so that a caller's TIMEOUT bounds its wait even
when a connect hangs: the new client goes to the first waiter, or to the idle list when that
waiter has given up. Background upkeep (MIN_SIZE, MAX_IDLE, MAX_LIFETIME, keepalive checks,
leak reports, probes while failing) runs in one maintenance thread shared by every pool of
the process (:mod:`pooled_clients.maintenance`).

A sync pool also serves async code (``aacquire``, ``aconnection``): waiting happens on the
event loop, and only a checkout validation or a reset, which may do network I/O with a sync
client, runs in a small thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any, Generic, TypeVar

from pooled_clients import fork
from pooled_clients.backends.base import deadline_scope
from pooled_clients.core import (
    MAX_WAIT,
    Entry,
    PoolCore,
    PoolSettings,
    Waiter,
    clamp_timeout,
    current_view,
    task_owner,
)
from pooled_clients.exceptions import PoolTimeout

T = TypeVar("T")

__all__ = ["Connection", "Pool", "PoolSettings"]

_monotonic = time.monotonic
_get_ident = threading.get_ident
_getframe = sys._getframe


class Connection(Generic[T]):
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
            pool._release(self._client, pool.discard_on_error, exc, _get_ident())


# --------------------------------------------------------------------------- thread pool

_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    """The process's small thread pool for sync I/O (validation, reset) of sync clients
    used from async code.

    Not the loop's default executor: under WSGI each request may run in a new loop whose
    executor is shut down with it, and a release must outlive the loop that started it.
    """
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="pooled_clients-async")
    return _executor


def _after_fork_in_child() -> None:
    # A forked child inherits the executor object but not its threads: make a new one.
    global _executor, _executor_lock
    _executor = None
    _executor_lock = threading.Lock()


fork.on_fork_in_child(_after_fork_in_child)


class Pool(PoolCore[T]):
    """A thread-safe pool of clients made by one sync :class:`ClientBackend`."""

    # ------------------------------------------------------------------ public API

    def connection(self, timeout: float | None = None,
                   endpoint: str | None = None, key: object = None) -> Connection[T]:
        """Context manager yielding a client, returned (reset or discarded) on exit."""
        if endpoint is not None or key is not None:
            raise self._not_routable(endpoint, key)
        return Connection(self, timeout)

    def acquire(self, timeout: float | None = None, endpoint: str | None = None,
                    key: object = None) -> T:
        """Check a client out; return it with :meth:`release`.

        Raises :class:`PoolTimeout` when none came free within ``timeout`` (default
        TIMEOUT), :class:`ClientCreationError` when the service cannot be reached,
        :class:`PoolExhausted` past MAX_WAITING and :class:`PoolClosed` once closed.
        """
        if endpoint is not None or key is not None:
            raise self._not_routable(endpoint, key)
        return self._checkout(timeout, _getframe(1))

    # ------------------------------------------------------------------ members of a group

    def checkout_from(self, timeout: float | None, frame: FrameType) -> T:
        """A group's checkout of this member (``frame`` is the caller's)."""
        return self._checkout(timeout, frame)

    def release_from(self, client: T, discard: bool, exc: BaseException | None) -> None:
        """A group's release to this member."""
        self._release(client, discard, exc, _get_ident())

    # ------------------------------------------------------------------ checkout

    def _checkout(self, timeout: float | None, frame: FrameType) -> T:
        now = _monotonic()
        with self._lock:
            idle = self._idle
            # With LEAK_TIMEOUT set, the slow path records the acquiring stack.
            if idle and self._fast_ok and not self._waiters:
                entry = idle.pop()
                # Entry.fresh() and Entry.lease(), inline: a call costs more than the rest.
                if entry.fresh_until > now:
                    self._in_use[entry.key] = entry
                    # Every release clears owner_task: a fast lease has none to clear.
                    entry.owner = entry.lease_thread = _get_ident()
                    entry.lease_since = now
                    entry.lease_code = frame.f_code
                    entry.lease_lasti = frame.f_lasti
                    if self._record_views:  # attribution in use: one context read
                        entry.lease_view = current_view()
                    self._acquired += 1
                    return entry.client
                idle.append(entry)  # the slow path validates or replaces it
        return self._slow_checkout(timeout, frame, now)

    def _slow_checkout(self, timeout: float | None, frame: FrameType, start: float) -> T:
        self._enter_slow_path()
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        deadline = start + timeout
        while True:
            entry: Entry[T] | None = None
            waiter: Waiter | None = None
            try:
                entry, waiter, spawn = self._take_or_wait(start, Waiter, frame)
                if spawn is not None:
                    self._spawn_creation(spawn)
                if waiter is not None:
                    entry = self._wait(waiter, deadline, timeout)
                    if waiter.leased:
                        return entry.client
                assert entry is not None
                if self._validate(entry, start, deadline):
                    return self._lease(entry, frame, start)
            except BaseException:
                # Interrupted (a signal, an exception thrown into this thread) before the
                # client reached the caller: the waiter leaves the queue, and a client it
                # holds or was handed goes back.
                handed = waiter is not None and waiter.entry is not None
                if waiter is not None:
                    self._abandon_wait(waiter)  # takes back what was handed over, once
                if entry is not None and not handed:
                    self._recover(entry)
                raise

    def _wait(self, waiter: Waiter, deadline: float, timeout: float) -> Entry[T]:
        try:
            remaining = deadline - _monotonic()
            # deliver() and fail() set the outcome before releasing the waiter's lock.
            woken = remaining > 0 and waiter.lock.acquire(timeout=min(remaining, MAX_WAIT))
        except BaseException:
            # A signal handler raised in the wait (a request deadline, SIGINT): leave the
            # queue, and give back a client handed over meanwhile.
            self._abandon_wait(waiter)
            raise
        try:
            return self._wait_outcome(waiter, timeout, woken)
        except BaseException:
            if waiter.entry is not None or waiter.leased:
                self._abandon_wait(waiter)
            raise

    def _validate(self, entry: Entry[T], start: float, deadline: float) -> bool:
        """Check an entry taken off the idle list or handed over, per CHECK; False when it
        was discarded (expired, condemned or failed its check)."""
        now = _monotonic()
        verdict = self._expired_or_check(entry, now, start)
        if verdict is not True:
            return verdict is None
        try:
            # A server that stopped answering costs the caller its TIMEOUT at most.
            with deadline_scope(min(now + self.settings.connect_timeout, deadline)):
                self.backend.check(entry.client)
        except Exception as exc:
            self._check_failed(entry, exc, now, "Discarded a client of pool %r that failed "
                                                "its check: %s")
            return False
        entry.checked(now)
        self._reached(now)
        return True

    # ------------------------------------------------------------------ release

    def release(self, client: T, discard: bool = False) -> None:
        """Return ``client``: reset for the next caller, or closed when ``discard``."""
        # An entry holds its client, so no other live object can share its id.
        entry = self._in_use.get(id(client))
        me = _get_ident()
        if entry is None or discard or not self._fast_release or entry.owner != me:
            self._release(client, discard, None, me)
            return
        try:
            ok = self.backend.reset(client)
        except Exception as error:
            self._finish_release(entry, False, True, error, me)
            return
        if not ok:
            self._finish_release(entry, False, self._is_broken(client), None, me)
            return
        self._put_back_fast(entry, me)

    def _release(self, client: T, discard: bool, exc: BaseException | None,
                 owner: int) -> None:
        """The general release: validates ownership, resets unless ``discard``."""
        entry = self._entry_to_release(client, owner)
        if entry is None:
            return  # inherited across fork(): the parent owns it, the child leaves it be
        ok = False
        if not discard:
            try:
                ok = self.backend.reset(entry.client)
            except Exception as error:
                exc = exc or error
        self._finish_release(entry, ok, not ok and self._is_broken(entry.client), exc, owner)

    # ------------------------------------------------------------------ async access

    async def _avalidate(self, entry: Entry[T], start: float, deadline: float) -> bool:
        now = _monotonic()
        if not entry.usable(now, self._stale_before) or not entry.needs_check(now, start):
            return self._validate(entry, start, deadline)  # no I/O on this branch
        future: concurrent.futures.Future[Any] = _threads().submit(
            self._validate, entry, start, deadline)
        try:
            return bool(await asyncio.shield(asyncio.wrap_future(future)))
        except asyncio.CancelledError:
            # The check goes on in its thread; whoever finishes it puts a good client back.
            def give_back(done: concurrent.futures.Future[Any]) -> None:
                if done.cancelled() or (done.exception() is None and done.result()):
                    self._give_back(entry)

            future.add_done_callback(give_back)
            raise

    async def _arelease(self, client: T, discard: bool, exc: BaseException | None) -> None:
        owner = task_owner()
        entry = self._entry_to_release(client, owner)
        if entry is None:  # a bad release fails at once
            return
        if not discard and entry.expires > _monotonic() and self._reset_nowait(client):
            # Clean as it is (no I/O to reset it), and not to be closed: back at once.
            self._finish_release(entry, True, False, exc, owner)
            return
        # A sync reset may be a network round trip (a ROLLBACK): never on the loop. Once
        # submitted, the release completes even if this task is cancelled.
        future = _threads().submit(self._release, client, discard, exc, owner)
        await asyncio.shield(asyncio.wrap_future(future))

    # ------------------------------------------------------------------ driver points

    def _spawn_creation(self, probe: bool) -> None:
        """Run one creation job in a daemon thread (a slot is already reserved)."""
        thread = threading.Thread(target=self._create_job, args=(probe,), daemon=True,
                                  name=f"pooled_clients-create-{self._label}")
        try:
            thread.start()
        except RuntimeError as exc:  # interpreter shutting down
            self._creation_failed(exc, probe)

    def _create_job(self, probe: bool) -> None:
        attempts = 1 if probe else 1 + self.settings.connect_retries
        last: BaseException | None = None
        try:
            for attempt in range(1, attempts + 1):
                if not self._creating_allowed():
                    break
                began = _monotonic()
                try:
                    with deadline_scope(None):
                        # Callables in OPTIONS are resolved once per attempt, before
                        # connecting: a client never mixes old and new credentials.
                        client = self.backend.creation_backend().create()
                except Exception as exc:
                    last = exc
                    delay = self._attempt_failed(exc, attempt, attempts)
                    if delay is None:
                        break
                    time.sleep(delay)
                    continue
                self._creation_done(client, probe, began=began)
                return
        except BaseException as exc:
            # Whatever ends this thread, the slot it reserved comes back.
            self._creation_failed(exc, probe)
            if not isinstance(exc, Exception):
                raise
            return
        self._creation_failed(last, probe)

    def _close_now(self, entry: Entry[T]) -> bool:
        self.backend.close(entry.client)
        return True

    def _keepalive(self, entry: Entry[T]) -> None:
        now = _monotonic()
        try:
            with deadline_scope(now + self.settings.connect_timeout):
                self.backend.check(entry.client)
        except Exception as exc:
            self._keepalive_done(entry, exc, now)
            return
        self._keepalive_done(entry, None, now)

    # ------------------------------------------------------------------ health

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Borrow or open one client and validate it; raise a :class:`PoolError` if it cannot.

        With ``wait=False`` a saturated pool (every client in use, none free to borrow)
        passes without waiting: saturation is not a failure.
        """
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        start = _monotonic()
        deadline = start + timeout
        if self._refuse_fast_check(start) and not wait:
            return
        client = self._checkout(timeout, _getframe(1))
        me = _get_ident()
        discard = False
        try:
            entry = self.entry_of(client)
            assert entry is not None
            # Opening a client proves nothing for every backend (an HTTP session connects
            # lazily): only a check made since ``start`` counts.
            if entry.checked_at < start or entry.checked_at == entry.created:
                if deadline - _monotonic() <= 0:
                    raise PoolTimeout(f"Pool {self._label!r}: no time left to check a client "
                                      f"within {timeout:g}s.")
                try:
                    with deadline_scope(deadline):
                        self.backend.check(client)
                except Exception as exc:
                    discard = True
                    raise self._check_error(exc) from exc
                entry.checked(_monotonic())
                self._reached(_monotonic())
        finally:
            self._release(client, discard, None, me)
