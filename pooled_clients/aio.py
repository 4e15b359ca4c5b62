"""Async access to pools: ``aacquire``/``arelease``/``aconnection`` and async backends.

Two halves:

* Every :class:`~pooled_clients.pool.Pool` gets an async API. A task that has to wait queues
  an ``_AsyncWaiter`` in the pool's one FIFO (threads and tasks are served in order) and
  awaits a future that the releasing side resolves through ``call_soon_threadsafe``: the
  event loop is never blocked. Taking an idle client is synchronous (one lock round trip);
  only a checkout validation or a reset, which may do network I/O with a sync client, runs
  in a small thread pool.
* :class:`AsyncPool` serves backends whose ``is_async`` is true (coroutine ``create``,
  ``check``, ``reset``, ``close``). Their clients belong to the event loop that created
  them: each is recorded with its loop, and a checkout from another loop (Django running an
  async view under WSGI makes a loop per request) discards it, without awaiting anything on
  the dead loop, and creates a new one on the caller's loop.

A task cancelled at any point (while waiting, validating, using or resetting) never loses a
client: an entry handed over to a cancelled waiter goes back to the pool, and a client whose
reset was interrupted is discarded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from pooled_clients.backends.base import ClientBackend
from pooled_clients.exceptions import ClientCreationError, PoolClosed, PoolError, PoolTimeout
from pooled_clients.masking import mask_exception
from pooled_clients.pool import (
    _ABANDONED,
    _OPEN,
    Pool,
    PoolSettings,
    _AsyncWaiter,
    _Entry,
    _monotonic,
)

T = TypeVar("T")

__all__ = ["AsyncClientBackend", "AsyncConnection", "AsyncPool", "acquire", "release"]

logger = logging.getLogger("pooled_clients")

_running_loop = asyncio._get_running_loop


# --------------------------------------------------------------------------- thread pool

_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_pid = 0


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    """The process's small thread pool for sync I/O (validation, reset) of sync clients.

    Not the loop's default executor: under WSGI each request may run in a new loop whose
    executor is shut down with it, and a release must outlive the loop that started it.
    """
    global _executor, _executor_pid
    pid = os.getpid()
    if _executor is None or _executor_pid != pid:
        with _executor_lock:
            if _executor is None or _executor_pid != pid:
                # A forked child inherits the object but not its threads: make a new one.
                _executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="pooled_clients-async")
                _executor_pid = pid
    return _executor


async def _in_thread(func: Any, *args: Any) -> Any:
    """Run ``func(*args)`` in the thread pool; a cancelled caller does not stop it."""
    future = _threads().submit(func, *args)
    return await asyncio.shield(asyncio.wrap_future(future))


# --------------------------------------------------------------------------- shared helpers


async def _wait_for_entry(pool: Pool[Any], waiter: _AsyncWaiter, deadline: float,
                          timeout: float) -> _Entry[Any]:
    """Await the hand-over to ``waiter``; raise the pool's timeout error when none came."""
    remaining = deadline - _monotonic()
    woken = False
    try:
        if remaining > 0:
            async with asyncio.timeout(remaining):
                await waiter.future
            woken = True  # deliver() and fail() set the outcome before waking the future
    except TimeoutError:
        pass
    except BaseException:
        # Cancelled: an entry already handed over goes back, or the waiter leaves the queue.
        _abandon_waiter(pool, waiter)
        raise
    return pool._wait_outcome(waiter, timeout, woken)


def _abandon_waiter(pool: Pool[Any], waiter: _AsyncWaiter) -> None:
    with pool._lock:
        entry, waiter.entry = waiter.entry, None
        if entry is None:
            if waiter.error is None:
                with contextlib.suppress(ValueError):
                    pool._waiters.remove(waiter)
            return
    _return_taken(pool, entry)


def _return_taken(pool: Pool[Any], entry: _Entry[Any]) -> None:
    """Give back an entry that is neither idle nor in use (handed over, or being checked)."""
    with pool._lock:
        if pool._state is _OPEN:
            if not (pool._waiters and pool._handoff_locked(entry)):
                pool._idle.append(entry)
            return
        pool._size -= 1
        pool._closed += 1
    pool._close_client(entry)


def _needs_check(pool: Pool[Any], entry: _Entry[Any], now: float, start: float) -> bool:
    """The checkout check :meth:`Pool._validate` would run (same policy)."""
    if entry.expires <= now or entry.created < pool._stale_before:
        return False
    needs = pool._check_always or (
        not pool._check_never and now - entry.last_used > pool._check_idle_after
    )
    return needs and entry.checked_at < start


def _in_use_entry(pool: Pool[Any], client: object) -> _Entry[Any]:
    key = id(client)
    entry = pool._in_use.get(key)
    if entry is None or entry.client is not client:
        raise PoolError(
            f"Pool {pool.alias!r} cannot release {type(client).__name__} object at "
            f"{key:#x}: it is not checked out of this pool (released twice, or acquired "
            "from another pool)."
        )
    return entry


# --------------------------------------------------------------------------- sync pools


async def acquire(pool: Pool[T], timeout: float | None, frame: FrameType) -> T:
    """Check a client out of ``pool`` from async code (any pool)."""
    if isinstance(pool, AsyncPool):
        leased: T = await pool._aacquire(timeout, frame)
        return leased

    async def validate(entry: _Entry[Any], start: float, deadline: float) -> bool:
        return await _validate_sync_client(pool, entry, start, deadline)

    return await _acquire_loop(pool, timeout, frame, _monotonic(), validate)


async def _acquire_loop(pool: Pool[T], timeout: float | None, frame: FrameType, start: float,
                        validate: Callable[[_Entry[Any], float, float], Awaitable[bool]]) -> T:
    """Take an idle client or wait on the event loop for one, until ``validate`` accepts it:
    the async twin of ``Pool._slow_checkout``, shared by sync and async pools."""
    pool._enter_slow_path()
    if timeout is None:
        timeout = pool.settings.timeout
    deadline = start + timeout
    while True:
        entry, waiter, spawn = pool._take_or_wait(start, deadline, _AsyncWaiter)
        if spawn:
            pool._spawn_creator(probe=spawn == "probe")
        if waiter is not None:
            entry = await _wait_for_entry(pool, waiter, deadline, timeout)
        assert entry is not None
        if await validate(entry, start, deadline):
            client: T = pool._lease(entry, frame, start)
            return client


async def _validate_sync_client(pool: Pool[Any], entry: _Entry[Any], start: float,
                                deadline: float) -> bool:
    now = _monotonic()
    if not _needs_check(pool, entry, now, start):
        return pool._validate(entry, now, start, deadline)  # no I/O on this branch
    future: concurrent.futures.Future[Any] = _threads().submit(
        pool._validate, entry, now, start, deadline)
    try:
        return bool(await asyncio.shield(asyncio.wrap_future(future)))
    except asyncio.CancelledError:
        # The check goes on in its thread; whoever finishes it puts a good client back.
        def give_back(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled() or (done.exception() is None and done.result()):
                _return_taken(pool, entry)

        future.add_done_callback(give_back)
        raise


async def release(pool: Pool[T], client: T, discard: bool, exc: BaseException | None) -> None:
    """Return ``client`` to ``pool`` from async code (any pool)."""
    if isinstance(pool, AsyncPool):
        await pool._arelease(client, discard, exc)
        return
    _in_use_entry(pool, client)  # a bad release fails at once, with no thread hop
    # A sync reset may be a network round trip (a ROLLBACK): never on the loop. Once
    # submitted, the release completes even if this task is cancelled.
    await _in_thread(pool._release, client, discard, exc)


class AsyncConnection(Generic[T]):
    """``async with pool.aconnection() as client:`` for any pool."""

    __slots__ = ("_client", "_frame", "_pool", "_timeout")

    def __init__(self, pool: Pool[T], timeout: float | None, frame: FrameType) -> None:
        self._pool = pool
        self._timeout = timeout
        self._frame = frame

    async def __aenter__(self) -> T:
        self._client = await acquire(self._pool, self._timeout, self._frame)
        return self._client

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        pool = self._pool
        await release(pool, self._client, exc_type is not None and pool._discard_on_error, exc)


# --------------------------------------------------------------------------- async backends


class AsyncClientBackend(ClientBackend[T]):
    """Base class of backends whose clients are used from async code only.

    ``create``, ``close``, ``check`` and ``reset`` are coroutines run on the event loop
    that uses the client; the pool bounds each with ``CONNECT_TIMEOUT``.
    :meth:`close_nowait` closes a client whose loop is gone, without awaiting.
    """

    is_async: ClassVar[bool] = True

    async def create(self) -> T:  # type: ignore[override]
        """Open and return a new client on the running loop."""
        raise NotImplementedError(f"{type(self).__name__} must implement create()")

    async def close(self, client: T) -> None:  # type: ignore[override]
        """Close ``client``. Must not raise for a client that is already broken."""

    async def check(self, client: T) -> None:  # type: ignore[override]
        """Raise when ``client`` is unusable."""

    async def reset(self, client: T) -> bool:  # type: ignore[override]
        """Make ``client`` ready for the next caller; False discards it."""
        return True

    def close_nowait(self, client: T) -> None:
        """Close ``client`` without awaiting: its event loop is closed or not running.

        The default drops the client for the garbage collector.
        """


_tokens = itertools.count(1)


class AsyncPool(Pool[T]):
    """The pool of an async backend: the same bookkeeping, stats, close and retire as
    :class:`Pool`, with clients bound to the event loop that created them.

    Only the async API works (``aconnection``, ``aacquire``, ``arelease``); the sync one
    raises :class:`PoolError`.
    """

    def __init__(self, alias: str, backend: AsyncClientBackend[T],
                 settings: PoolSettings | None = None, *, backend_path: str | None = None) -> None:
        self.abackend = backend
        super().__init__(alias, backend, settings, backend_path=backend_path)

    def _reset_state(self) -> None:
        super()._reset_state()
        #: id(client) -> the loop the client was created on.
        self._client_loops: dict[int, asyncio.AbstractEventLoop] = {}
        #: Creations scheduled on a loop: token -> (loop, probe); the slot is given back
        #: by whoever pops the token (the creation itself, or maintenance once the loop died).
        self._creations: dict[int, tuple[asyncio.AbstractEventLoop, bool]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._last_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ sync API: refused

    def _sync_api_error(self, name: str) -> PoolError:
        return PoolError(
            f"Pool {self.alias!r} uses the async backend {self.backend_path}: {name} is not "
            f"available. Use 'async with pools[{self.alias!r}].aconnection() as client' or "
            f"'await pools[{self.alias!r}].aacquire()' / '.arelease(client)'."
        )

    def connection(self, timeout: float | None = None,
                   endpoint: str | None = None) -> NoReturn:
        """Refused: use :meth:`aconnection`."""
        raise self._sync_api_error("connection()")

    def acquire(self, timeout: float | None = None, endpoint: str | None = None) -> NoReturn:
        """Refused: use :meth:`aacquire`."""
        raise self._sync_api_error("acquire()")

    def release(self, client: T, discard: bool = False) -> NoReturn:
        """Refused: use :meth:`arelease`."""
        raise self._sync_api_error("release()")

    def _checkout(self, timeout: float | None, frame: FrameType) -> NoReturn:
        raise self._sync_api_error("acquire()")

    # ------------------------------------------------------------------ acquire

    async def _aacquire(self, timeout: float | None, frame: FrameType) -> T:
        start = _monotonic()
        loop = asyncio.get_running_loop()
        self._last_loop = loop

        async def validate(entry: _Entry[Any], start: float, deadline: float) -> bool:
            return await self._avalidate(entry, loop, start, deadline)

        return await _acquire_loop(self, timeout, frame, start, validate)

    async def _avalidate(self, entry: _Entry[T], loop: asyncio.AbstractEventLoop, start: float,
                         deadline: float) -> bool:
        if self._client_loops.get(entry.key) is not loop:
            # Made on another (usually dead) event loop: useless here.
            self._discard(entry, broken=False)
            return False
        now = _monotonic()
        if entry.expires <= now or entry.created < self._stale_before:
            self._discard(entry, broken=False)
            return False
        if not _needs_check(self, entry, now, start):
            return True
        limit = max(0.001, min(self.settings.connect_timeout, deadline - now))
        try:
            await asyncio.wait_for(self.abackend.check(entry.client), limit)
        except asyncio.CancelledError:
            self._discard(entry, broken=False)  # interrupted mid-check: state unknown
            raise
        except Exception as exc:
            self._check_failed(entry, exc, now,
                               "Discarded a client of pool %r that failed its check: %s")
            return False
        entry.checked_at = now
        return True

    def _handoff_locked(self, entry: _Entry[T]) -> bool:
        """(lock held) Prefer a waiter on the client's own loop; else the first in line
        (who will replace it with one made on its loop)."""
        loop = self._client_loops.get(entry.key)
        if loop is not None:
            for waiter in self._waiters:
                if isinstance(waiter, _AsyncWaiter) and waiter.loop is loop:
                    self._waiters.remove(waiter)
                    if waiter.deliver(entry):
                        return True
                    break
        return super()._handoff_locked(entry)

    # ------------------------------------------------------------------ release

    async def _arelease(self, client: T, discard: bool, exc: BaseException | None) -> None:
        entry = _in_use_entry(self, client)
        key = entry.key
        ok = False
        if (not discard and self._state is _OPEN
                and self._client_loops.get(key) is _running_loop()):
            try:
                ok = bool(await asyncio.wait_for(self.abackend.reset(client),
                                                 self.settings.connect_timeout))
            except asyncio.CancelledError:
                # Interrupted mid-reset: the client's state is unknown, so it goes.
                self._finish_release(entry, False, False, exc)
                raise
            except Exception as error:
                exc = exc or error
        broken = not ok and self._is_broken(client)
        self._finish_release(entry, ok, broken, exc)

    # ------------------------------------------------------------------ creation

    def _loop_for_creation(self) -> asyncio.AbstractEventLoop | None:
        """The loop a new client should belong to: the caller's, else the first waiter's,
        else the last loop seen using the pool while it still runs (MIN_SIZE, probes)."""
        running = _running_loop()
        if running is not None:
            return running
        with self._lock:
            for waiter in self._waiters:
                if isinstance(waiter, _AsyncWaiter) and not waiter.loop.is_closed():
                    return waiter.loop
        last = self._last_loop
        if last is not None and last.is_running() and not last.is_closed():
            return last
        return None

    def _spawn_creator(self, probe: bool) -> None:
        """Create one client on an event loop (a slot is already reserved)."""
        loop = self._loop_for_creation()
        if loop is None:
            self._give_back_slot(probe)
            return
        token = next(_tokens)
        with self._lock:
            self._creations[token] = (loop, probe)
        if loop is _running_loop():
            self._start_creation(token, probe)
            return
        try:
            loop.call_soon_threadsafe(self._start_creation, token, probe)
        except RuntimeError:  # closed meanwhile
            if self._claim(token):
                self._give_back_slot(probe)

    def _start_creation(self, token: int, probe: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._acreate_job(token, probe))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _claim(self, token: int) -> bool:
        with self._lock:
            return self._creations.pop(token, None) is not None

    def _give_back_slot(self, probe: bool) -> None:
        with self._lock:
            self._creating -= 1
            self._size -= 1
            if probe:
                self._probing = False

    async def _acreate_job(self, token: int, probe: bool) -> None:
        settings = self.settings
        attempts = 1 if probe else 1 + settings.connect_retries
        backoff = settings.retry_backoff
        last: BaseException | None = None
        try:
            for attempt in range(attempts):
                if self._state is not _OPEN or self._pid != os.getpid():
                    break
                try:
                    client = await self._acreate_one()
                except Exception as exc:
                    last = exc
                    with self._lock:
                        self._errors += 1
                        self._record_error_locked(exc, _monotonic())
                    if attempt + 1 < attempts:
                        await asyncio.sleep(self._jitter(min(backoff, settings.retry_backoff_max)))
                        backoff *= 2
                    continue
                if not self._claim(token):
                    self._close_nowait(client)
                    return
                self._client_loops[id(client)] = asyncio.get_running_loop()
                self._add_created(client)
                return
        except asyncio.CancelledError:
            # The loop is shutting down (or the task was cancelled): free the slot.
            if self._claim(token):
                self._give_back_slot(probe)
            raise
        if self._claim(token):
            self._creation_failed(last, probe)

    async def _acreate_one(self) -> T:
        timeout = self.settings.connect_timeout
        try:
            return await asyncio.wait_for(self.abackend.create(), timeout)
        except TimeoutError as exc:
            if str(exc):
                raise
            raise TimeoutError(f"no client within CONNECT_TIMEOUT ({timeout:g}s)") from None

    # ------------------------------------------------------------------ closing

    def _close_client(self, entry: _Entry[T]) -> None:
        if self._pid != os.getpid():
            _ABANDONED.append(entry.client)
            return
        loop = self._client_loops.pop(entry.key, None)
        client = entry.client
        if loop is not None and not loop.is_closed():
            if loop is _running_loop():
                task = loop.create_task(self._aclose(client))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            if loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(self._aclose(client), loop)
                    return
                except RuntimeError:
                    pass
        # Its loop is gone (or stopped): close without awaiting anything on it.
        self._close_nowait(client)

    async def _aclose(self, client: T) -> None:
        try:
            await asyncio.wait_for(self.abackend.close(client), self.settings.connect_timeout)
        except asyncio.CancelledError:
            self._close_nowait(client)
            raise
        except Exception as exc:
            logger.debug("Closing a client of pool %r failed: %s", self.alias,
                         mask_exception(exc, self._secrets))
            self._close_nowait(client)

    def _close_nowait(self, client: T) -> None:
        try:
            self.abackend.close_nowait(client)
        except Exception as exc:
            logger.debug("Closing a client of pool %r failed: %s", self.alias,
                         mask_exception(exc, self._secrets))

    # ------------------------------------------------------------------ maintenance

    def maintain(self, now: float) -> float | None:
        """One round of upkeep, after dropping what dead event loops left behind."""
        if self._state is _OPEN and self._pid == os.getpid():
            self._reap_dead_loops()
        return super().maintain(now)

    def _reap_dead_loops(self) -> None:
        """Close idle clients of closed loops, forget their waiters, free their creations."""
        with self._lock:
            dead = [e for e in self._idle
                    if (loop := self._client_loops.get(e.key)) is None or loop.is_closed()]
            if dead:
                self._idle = [e for e in self._idle if e not in dead]
                self._size -= len(dead)
                self._closed += len(dead)
            stale_waiters = [w for w in self._waiters
                             if isinstance(w, _AsyncWaiter) and w.loop.is_closed()]
            for waiter in stale_waiters:
                self._waiters.remove(waiter)
            lost = [t for t, (loop, _) in self._creations.items() if loop.is_closed()]
            probes = 0
            for token in lost:
                _, probe = self._creations.pop(token)
                probes += probe
            self._creating -= len(lost)
            self._size -= len(lost)
            if probes:
                self._probing = False
        for entry in dead:
            self._close_client(entry)
        if dead or lost:
            self._after_shrink()

    def _keepalive_check(self, entry: _Entry[T]) -> None:
        """(maintenance thread) Check an idle client on its own loop, if it still runs."""
        loop = self._client_loops.get(entry.key)
        if loop is None or loop.is_closed():
            self._discard(entry, broken=False)
            return
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._akeepalive(entry), loop)
                return
            except RuntimeError:
                pass
        entry.checked_at = _monotonic()  # cannot check it now; try again later
        _return_taken(self, entry)

    async def _akeepalive(self, entry: _Entry[T]) -> None:
        now = _monotonic()
        try:
            await asyncio.wait_for(self.abackend.check(entry.client), self.settings.connect_timeout)
        except asyncio.CancelledError:
            self._discard(entry, broken=False)
            raise
        except Exception as exc:
            self._check_failed(entry, exc, now,
                               "Keepalive check failed for a client of pool %r: %s")
            return
        entry.checked_at = now
        _return_taken(self, entry)

    # ------------------------------------------------------------------ health

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Borrow or open one client and validate it, from sync code; raise a
        :class:`PoolError` if it cannot.

        An idle client is checked on its own loop while that loop runs; otherwise a client
        is opened, checked and closed on a fresh loop in a thread. Bounded by ``timeout``.
        """
        timeout = self.settings.timeout if timeout is None else timeout
        deadline = _monotonic() + timeout
        if self._pid != os.getpid():
            self._after_fork_in_child()
        current = _running_loop()
        while True:
            entry: _Entry[T] | None = None
            loop: asyncio.AbstractEventLoop | None = None
            reserved = False
            with self._lock:
                if self._state is not _OPEN:
                    raise PoolClosed(f"Pool {self.alias!r} is {self._state}.")
                if self._failing and (self._probing or _monotonic() < self._next_probe):
                    raise self._fail_fast_error()
                for index in range(len(self._idle) - 1, -1, -1):
                    candidate = self._client_loops.get(self._idle[index].key)
                    if (candidate is not None and candidate is not current
                            and candidate.is_running() and not candidate.is_closed()):
                        entry, loop = self._idle.pop(index), candidate
                        break
                if entry is None and self._size < self._max_size:
                    self._size += 1
                    self._creating += 1
                    reserved = True
            if entry is not None and loop is not None:
                self._check_on_loop(entry, loop, deadline, timeout)
                return
            if reserved:
                self._check_fresh(deadline, timeout)
                return
            if not wait:
                return  # saturated: every client is in use, which is not a failure
            remaining = deadline - _monotonic()
            if remaining <= 0:
                with self._lock:
                    state = self._state_text()
                raise PoolTimeout(f"Pool {self.alias!r}: no client to check within "
                                  f"{timeout:g}s; {state}.")
            time.sleep(min(0.05, remaining))

    def _check_on_loop(self, entry: _Entry[T], loop: asyncio.AbstractEventLoop, deadline: float,
                       timeout: float) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(self._check_taken(entry, deadline), loop)
        except RuntimeError:
            _return_taken(self, entry)
            raise PoolTimeout(f"Pool {self.alias!r}: the event loop of its clients stopped "
                              "before the check could run.") from None
        try:
            future.result(max(0.0, deadline - _monotonic()))
        except PoolError:
            raise
        except TimeoutError:
            raise PoolTimeout(f"Pool {self.alias!r}: checking a client to {self._target} took "
                              f"longer than {timeout:g}s.") from None

    async def _check_taken(self, entry: _Entry[T], deadline: float) -> None:
        try:
            await asyncio.wait_for(self.abackend.check(entry.client),
                                   max(0.001, deadline - _monotonic()))
        except asyncio.CancelledError:
            self._discard(entry, broken=False)
            raise
        except Exception as exc:
            with self._lock:
                self._check_failures += 1
                self._record_error_locked(exc, _monotonic())
            self._discard(entry, broken=True)
            raise ClientCreationError(
                f"Pool {self.alias!r}: a client to {self._target} failed its check: "
                f"{mask_exception(exc, self._secrets)}."
            ) from exc
        entry.checked_at = _monotonic()
        _return_taken(self, entry)

    def _check_fresh(self, deadline: float, timeout: float) -> None:
        """Open, check and close one client on a fresh loop in a thread (slot reserved)."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                asyncio.run(self._fresh_check(deadline))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                with self._lock:
                    self._creating -= 1
                    self._size -= 1

        thread = threading.Thread(target=run, daemon=True,
                                  name=f"pooled_clients-check-{self.alias}")
        thread.start()
        thread.join(max(0.0, deadline - _monotonic()) + 0.05)
        if not outcome:
            raise PoolTimeout(f"Pool {self.alias!r}: opening and checking a client to "
                              f"{self._target} took longer than {timeout:g}s.")
        error = outcome[0]
        if error is not None:
            raise error

    async def _fresh_check(self, deadline: float) -> None:
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise PoolTimeout(f"Pool {self.alias!r}: no time left to check a client.")
        try:
            client = await asyncio.wait_for(
                self.abackend.create(), min(remaining, self.settings.connect_timeout))
        except Exception as exc:
            with self._lock:
                self._errors += 1
                self._record_error_locked(exc, _monotonic())
            raise ClientCreationError(
                f"Pool {self.alias!r} could not open a client to {self._target}: "
                f"{mask_exception(exc, self._secrets) or 'timed out'}."
            ) from exc
        with self._lock:
            self._created += 1
        try:
            await asyncio.wait_for(self.abackend.check(client),
                                   max(0.001, deadline - _monotonic()))
        except Exception as exc:
            with self._lock:
                self._check_failures += 1
                self._record_error_locked(exc, _monotonic())
            raise ClientCreationError(
                f"Pool {self.alias!r}: a client to {self._target} failed its check: "
                f"{mask_exception(exc, self._secrets) or 'timed out'}."
            ) from exc
        finally:
            with self._lock:
                self._closed += 1
            try:
                await asyncio.wait_for(self.abackend.close(client), 1.0)
            except Exception:
                self._close_nowait(client)
