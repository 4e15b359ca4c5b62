"""The engine core: one pool's state, and every rule that changes it, written once.

:class:`PoolCore` holds the idle list, the clients in use, the FIFO of waiters, the slot
count and the counters, under one lock. It decides (take, wait, hand over, create, close)
and does no client I/O itself: the two drivers do, :class:`~pooled_clients.pool.Pool` with
threads and :class:`~pooled_clients.aio.AsyncPool` with event-loop tasks. A driver plugs in
at three named points, and nowhere else:

* :meth:`PoolCore._spawn_creation` — open one client for a slot already reserved, then
  call :meth:`PoolCore._creation_done` or :meth:`PoolCore._creation_failed`;
* :meth:`PoolCore._close_now` — close one client;
* :meth:`PoolCore._keepalive` — validate one idle client in the background, then call
  :meth:`PoolCore._keepalive_done`.

Where each rule lives:

* **Slots**: :meth:`_reserve_locked` and :meth:`_drop_locked` are the only places the slot
  count changes. Slots = idle + in use + creating + closing: a slot is free only once its
  client is closed, so MAX_SIZE and a group's TOTAL_MAX_SIZE hold at the server too.
  ``PoolStats.size`` is idle + in use + creating; ``PoolStats.closing`` the rest.
* **A client's own answers** (expired? needs a check? lease it): :class:`Entry`.
* **Hand over, put back or close**: :meth:`_put_back_locked` (one tail for every path).
* **Retry and probe delays**: :func:`backoff`.
* **Fork**: :mod:`pooled_clients.fork` (one registry); :meth:`_after_fork_in_child` here.
* **Shared capacity** (endpoints and keyed pools): a :class:`Capacity` given at
  construction, consulted by :meth:`_has_room_locked`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from types import CodeType, FrameType, TracebackType
from typing import Any, Generic, Protocol, TypeVar

from pooled_clients import attribution, fork, maintenance
from pooled_clients.backends.base import ClientBackend
from pooled_clients.exceptions import (
    ClientCreationError,
    PoolClosed,
    PoolDoesNotExist,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from pooled_clients.masking import mask_exception, mask_text, printable
from pooled_clients.stats import Lease, PoolStats, ViewTable, WaitWindow

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

__all__ = [
    "AsyncConnection",
    "AsyncWaiter",
    "Capacity",
    "ClientPool",
    "Entry",
    "PoolCore",
    "PoolSettings",
    "Waiter",
    "backoff",
]

logger = logging.getLogger("pooled_clients")

_monotonic = time.monotonic
_get_ident = threading.get_ident
_getframe = sys._getframe
_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
#: The one context-variable read of a checkout: who it is attributed to.
#: The view (or attributed name) of the running code: one context-variable read.
current_view = attribution.current.get
#: What a release records beyond the counters, for every pool of the process: hold times
#: per view ("views", once attribution is in use) and for OpenTelemetry's use_time ("use").
#: Both off, a release reads one flag.
_recording = {"views": False, "use": False}

#: The longest wait a lock or a sleep accepts; longer timeouts are clamped to it.
MAX_WAIT = min(threading.TIMEOUT_MAX, 365 * 86400.0)

# Pool states.
OPEN, CLOSING, CLOSED, RETIRED = "open", "closing", "closed", "retired"

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

    @property
    def check_window(self) -> float:
        """The CHECK policy as one number: a client idle longer than this is validated."""
        if self.check == "never":
            return math.inf
        if self.check == "always":
            return -1.0
        return self.check_idle_after


def backoff(settings: PoolSettings, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed creations (>= 1) before the
    next attempt: RETRY_BACKOFF doubled each time, at most RETRY_BACKOFF_MAX, jittered
    downwards. Always finite and at most :data:`MAX_WAIT`, whatever the settings."""
    exponent = min(max(failures, 1) - 1, 60)
    delay = min(settings.retry_backoff * 2.0 ** exponent, settings.retry_backoff_max)
    if not math.isfinite(delay) or delay < 0:
        delay = settings.retry_backoff_max if math.isfinite(settings.retry_backoff_max) else 0
    return min(jitter(max(0.0, delay)), MAX_WAIT)


def jitter(seconds: float) -> float:
    """``seconds`` less up to 20%, so that many clients or workers do not move in step."""
    return seconds * random.uniform(0.8, 1.0)


def clamp_timeout(timeout: float) -> float:
    """A caller's timeout as a wait can take it: NaN refused, infinity clamped."""
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds, not NaN")
    return min(max(0.0, timeout), MAX_WAIT)


class Entry(Generic[T]):
    """One open client and its bookkeeping, reused for every lease of that client.

    The entry answers the questions every path asks of a client, so each rule is written
    once: :meth:`fresh` (may it be handed out with no check?), :meth:`usable` (has it not
    expired?), :meth:`needs_check` and :meth:`lease`.
    """

    __slots__ = (
        "checked_at",
        "client",
        "closing",
        "created",
        "expires",
        "fresh_until",
        "key",
        "last_used",
        "leak_reported",
        "lease_code",
        "lease_lasti",
        "lease_since",
        "lease_stack",
        "lease_thread",
        "lease_view",
        "lease_wait",
        "loop",
        "owner",
        "owner_task",
        "released_by",
        "window",
    )

    def __init__(self, client: T, now: float, expires: float, window: float,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.client = client
        self.key = id(client)
        #: Set once the pool decided to close it: it is never put back after that.
        self.closing = False
        self.created = now
        self.expires = expires
        self.window = window
        self.last_used = now
        self.checked_at = now
        self.fresh_until = min(expires, now + window)
        #: The event loop an async client belongs to (None for sync clients).
        self.loop = loop
        self.lease_thread = 0
        self.lease_since = 0.0
        self.lease_code: CodeType | None = None
        self.lease_lasti = 0
        self.lease_stack: str | None = None
        self.lease_view = attribution.UNATTRIBUTED
        #: How long the current lease waited for the client (0.0 for most).
        self.lease_wait = 0.0
        self.leak_reported = False
        #: Who holds it (the thread, or the task for async code), and who released it
        #: last: together they tell a stale second release.
        self.owner = 0
        self.owner_task: weakref.ref[asyncio.Task[Any]] | None = None
        self.released_by = 0

    def fresh(self, now: float) -> bool:
        """Whether it may be handed out without a check: not expired, and idle for no
        longer than the CHECK window (the hot path reads ``fresh_until`` inline)."""
        return self.fresh_until > now

    def usable(self, now: float, stale_before: float) -> bool:
        """Whether it has neither expired (MAX_LIFETIME) nor been condemned by a purge."""
        return self.expires > now and self.created >= stale_before

    def needs_check(self, now: float, since: float) -> bool:
        """Whether a checkout must validate it: idle longer than the CHECK window, and not
        checked since ``since`` (the acquire's start) without being used after that check."""
        if now - self.last_used <= self.window:
            return False
        return not (self.checked_at >= since and self.checked_at >= self.last_used)

    def condemn(self) -> None:
        """Never hand it out again: it is closed when released."""
        self.expires = self.fresh_until = 0.0

    def touched(self, now: float) -> None:
        """It was returned (or created) at ``now``."""
        self.last_used = now
        fresh_until = now + self.window
        self.fresh_until = fresh_until if fresh_until < self.expires else self.expires

    def checked(self, now: float) -> None:
        """It passed a check at ``now``."""
        self.checked_at = now

    def lease(self, thread: int, code: CodeType | None, lasti: int, now: float, view: str,
              task: asyncio.Task[Any] | None = None) -> None:
        """Record who holds it from ``now``: the thread (or ``task``) and the caller's code
        and offset (the line is worked out only when shown: ``f_lineno`` costs more than
        the rest)."""
        if task is None:
            self.owner = thread
            self.owner_task = None
        else:
            self.owner = id(task)
            self.owner_task = weakref.ref(task)
        self.lease_thread = thread
        self.lease_since = now
        self.lease_code = code
        self.lease_lasti = lasti
        self.lease_view = view
        self.leak_reported = False

    def holder_alive(self) -> bool:
        """Whether the thread or task holding it still runs."""
        ref = self.owner_task
        if ref is None:
            return self.owner in threading._active  # type: ignore[attr-defined]
        task = ref()
        return task is not None and not task.done()

    def released(self, now: float, releaser: int) -> None:
        """It came back at ``now`` from ``releaser``, which is remembered only when it
        released its own lease: a later release by the same caller, while someone else
        holds the client, is then a stale second release."""
        self.touched(now)
        self.released_by = releaser if releaser == self.owner else 0
        self.owner_task = None
        self.lease_stack = None

    def stale_release(self, releaser: int) -> bool:
        """Whether a release by ``releaser`` is a stale second one: it released its own
        lease of this client before, and another caller, still running, holds it now."""
        return self.released_by == releaser != self.owner and self.holder_alive()

    def where(self) -> str:
        """``file:line in function`` of the acquire that holds it."""
        code = self.lease_code
        if code is None:
            return "unknown"
        return f"{code.co_filename}:{_line_of(code, self.lease_lasti)} in {code.co_name}"


class Waiter:
    """A thread waiting for a client; served first come, first served."""

    __slots__ = ("code", "entry", "error", "lasti", "leased", "lock", "loop", "since", "task",
                 "thread", "view")

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.entry: Entry[Any] | None = None
        self.error: BaseException | None = None
        self.since = now
        self.thread = _get_ident()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        # Where the caller acquires from, so that a hand-off can complete its lease.
        self.code: CodeType | None = None
        self.lasti = 0
        self.leased = False
        #: Who the checkout is attributed to, read here: a hand-off leases in another thread.
        self.view = current_view()

    def deliver(self, entry: Entry[Any]) -> bool:
        """Hand ``entry`` over (pool lock held). False if this waiter can no longer take it."""
        self.entry = entry
        self.lock.release()
        return True

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with an error (pool lock held)."""
        self.error = error
        self.lock.release()


class AsyncWaiter:
    """A task waiting on its event loop for a client, in the same queue as threads.

    The entry is recorded under the pool lock and the task woken through its loop, so a
    task cancelled after the hand-over still finds the entry and returns it.
    """

    __slots__ = ("code", "deadline", "entry", "error", "future", "lasti", "leased", "loop",
                 "since", "task", "thread", "view")

    def __init__(self, now: float) -> None:
        self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()
        self.entry: Entry[Any] | None = None
        self.error: BaseException | None = None
        self.since = now
        #: When it gives up (monotonic), set by the acquire that queued it.
        self.deadline = math.inf
        self.thread = _get_ident()
        self.task = _current_task()
        # Where the caller acquires from, so that a hand-off can complete its lease.
        self.code: CodeType | None = None
        self.lasti = 0
        self.leased = False
        self.view = current_view()

    def wake(self) -> None:
        """Resume the waiting task (on its loop): served, failed or timed out."""
        if not self.future.done():
            self.future.set_result(None)

    def deliver(self, entry: Entry[Any]) -> bool:
        """Hand ``entry`` over (pool lock held). False once the waiter's loop is closed."""
        self.entry = entry
        loop = self.loop
        assert loop is not None
        if loop is _running_loop():
            # On the waiter's own loop: wake it directly, not through the loop's self-pipe.
            self.wake()
            return True
        try:
            loop.call_soon_threadsafe(self.wake)
        except RuntimeError:  # the loop is closed: nobody will ever take it
            self.entry = None
            return False
        return True

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with an error (pool lock held)."""
        self.error = error
        loop = self.loop
        assert loop is not None
        if loop is _running_loop():
            self.wake()
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.wake)


AnyWaiter = Waiter | AsyncWaiter
_W = TypeVar("_W", Waiter, AsyncWaiter)


class Capacity(Protocol):
    """A cap shared by several pools (an endpoint or keyed pool's TOTAL_MAX_SIZE).

    The members share the capacity's ``lock`` as their own, so :meth:`room_locked` sees
    every member's slots at once.
    """

    #: Slots taken across the members (the members add and subtract theirs, lock held).
    used: int

    @property
    def lock(self) -> threading.RLock:
        """The lock every member uses as its own."""

    def room_locked(self, requester: PoolCore[Any]) -> bool:
        """(lock held) Whether ``requester`` may open one more client; may start closing
        another member's idle client to make room (the slot frees once it is closed)."""

    def freed(self, member: PoolCore[Any]) -> None:
        """(lock not held) ``member`` freed a slot: let waiting members use it."""


class ClientPool(Protocol[T_co]):
    """What every pool offers, whatever its kind: a plain pool, an async pool, an endpoint
    pool or a keyed pool. ``pools[alias]`` returns one."""

    alias: str
    backend_path: str
    settings: PoolSettings

    @property
    def target(self) -> str:
        """The masked target(s)."""

    @property
    def closed(self) -> bool:
        """True once closed or retired."""

    def connection(self, timeout: float | None = None) -> AbstractContextManager[T_co]:
        """``with pool.connection() as client:``."""

    def acquire(self, timeout: float | None = None) -> T_co:
        """Check a client out."""

    def release(self, client: Any, discard: bool = False) -> None:
        """Return a client."""

    def aconnection(self, timeout: float | None = None
                    ) -> AbstractAsyncContextManager[T_co]:
        """``async with pool.aconnection() as client:``."""

    async def aacquire(self, timeout: float | None = None) -> T_co:
        """Check a client out from async code."""

    async def arelease(self, client: Any, discard: bool = False) -> None:
        """Return a client from async code."""

    def stats(self) -> PoolStats:
        """A consistent snapshot."""

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Validate one client; raise a :class:`PoolError` if none works."""

    def maintain(self, now: float) -> float | None:
        """One round of upkeep."""

    def close(self, timeout: float = 5.0) -> None:
        """Close, waiting up to ``timeout`` for clients in use."""

    def begin_close(self) -> None:
        """Refuse new acquires and close idle clients."""

    def finish_close(self, deadline: float) -> None:
        """Wait for clients in use until ``deadline``, then close the rest."""

    def retire(self) -> None:
        """Stop handing out clients without waiting."""

    def drain(self) -> None:
        """Replace every client: idle ones now, ones in use when released."""

    def start(self) -> None:
        """Start upkeep in this process now (MIN_SIZE fills in the background)."""

    def wait(self, timeout: float = 30.0) -> None:
        """Block until MIN_SIZE clients are open."""

    def mask(self, text: str) -> str:
        """``text`` with the pool's secrets masked."""

    def wait_sources(self) -> list[PoolCore[Any]]:
        """The pools whose acquire waits make up this one's (for metrics)."""


class AsyncConnection(Generic[T]):
    """``async with pool.aconnection() as client:`` for a sync or an async pool."""

    __slots__ = ("_client", "_frame", "_pool", "_timeout")

    def __init__(self, pool: PoolCore[T], timeout: float | None, frame: FrameType) -> None:
        self._pool = pool
        self._timeout = timeout
        self._frame = frame

    async def __aenter__(self) -> T:
        pool = self._pool
        entry = pool._take_fresh(self._frame)
        client: T = (entry.client if entry is not None
                     else await pool._acheckout(self._timeout, self._frame))
        self._client = client
        return client

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        pool = self._pool
        if exc_type is None:
            if not pool._release_nowait(self._client, task_owner()):
                await pool._arelease(self._client, False, None)
        else:
            await pool._arelease(self._client, pool.discard_on_error, exc)


def task_owner() -> int:
    """Who holds a client checked out from async code: the task (or the thread)."""
    task = _current_task()
    return _get_ident() if task is None else id(task)


class PoolCore(Generic[T]):
    """State and rules of one pool; see the module docstring for where each rule lives."""

    def __init__(self, alias: str, backend: ClientBackend[T],
                 settings: PoolSettings | None = None, *, backend_path: str | None = None,
                 capacity: Capacity | None = None, name: str | None = None,
                 failover: bool = False) -> None:
        self.alias = alias
        #: The endpoint or key this pool serves inside a group, else None.
        self.name = name
        self.backend = backend
        self.settings = settings = settings or PoolSettings()
        self.backend_path = backend_path or (
            f"{type(backend).__module__}.{type(backend).__qualname__}"
        )
        self.capacity = capacity
        #: Inside an endpoint group: a failed check marks the pool suspect, so routing
        #: skips it until a probe connects again.
        self.failover = failover
        backend.connect_timeout = settings.connect_timeout
        #: Whether a client whose ``with`` block raised is discarded rather than reset.
        self.discard_on_error = bool(getattr(backend, "discard_on_error", True))
        self._max_size = settings.max_size
        self._window = settings.check_window
        self._fast_leases = settings.leak_timeout is None
        self._label = alias if name is None else f"{alias}[{name}]"
        self._target = printable(backend.describe())
        self._static_secrets = tuple(backend.secrets())
        self._reset_state()
        maintenance.register(self)

    @property
    def _secrets(self) -> tuple[str, ...]:
        """The backend's secrets, with what callables in OPTIONS returned lately."""
        return self._static_secrets + self.backend.provided_secrets()

    @property
    def _state(self) -> str:
        """"open", "closing", "closed" or "retired"."""
        return self._state_value

    @_state.setter
    def _state(self, value: str) -> None:
        self._state_value = value
        self._refresh_fast_flags()

    def _refresh_fast_flags(self) -> None:
        """The hot paths read one flag each instead of comparing states and settings: a
        fast checkout needs an open pool with no acquiring stack to record, a fast release
        also no hold time or view to record."""
        self._fast_ok = self._state_value is OPEN and self._fast_leases
        self._fast_release = self._fast_ok and not self._track_returns

    def _follow_recording(self) -> None:
        """Take up what releases record in this process (see :func:`record_views` and
        :func:`record_use_times`); the caller refreshes the fast flags."""
        self._record_use = _recording["use"]
        self._record_views = _recording["views"]
        # The release paths read one flag, off unless either is on.
        self._track_returns = self._record_use or self._record_views

    def _reset_state(self) -> None:
        """Fresh bookkeeping: at construction and in a forked child."""
        capacity = self.capacity
        self._lock: threading.Lock | threading.RLock = (
            threading.Lock() if capacity is None else capacity.lock)
        self._pid = os.getpid()
        #: Monotonic time before which the maintenance thread may skip this pool: set by a
        #: round that found it settled (see :meth:`_settled_locked`), reset to 0 by any
        #: change that needs upkeep sooner.
        self.next_upkeep = 0.0
        self._follow_recording()
        self._state = OPEN  # which refreshes the fast flags
        self._idle: list[Entry[T]] = []
        self._in_use: dict[int, Entry[T]] = {}
        self._waiters: deque[AnyWaiter] = deque()
        self._size = 0
        self._creating = 0
        self._closing = 0
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
        self._views = ViewTable()
        #: Hold times (numbered by release) and creation times (by creation), drained by
        #: OpenTelemetry; hold times only while :func:`record_use_times` is on.
        self._uses = WaitWindow()
        self._creates = WaitWindow()
        # Failure state.
        self._failing = False
        self._suspect = False
        self._last_error: BaseException | None = None
        self._last_error_at: float | None = None
        self._last_error_wall: float | None = None
        #: Whether the last attempt to reach the service (open or check a client) failed,
        #: and when (monotonic) it last answered: one notion of healthy for every surface.
        self._unreachable = False
        self._reached_at: float | None = None
        self._consecutive_failures = 0
        self._next_probe = 0.0
        self._probing = False
        self._stale_before = 0.0
        self._next_keepalive = 0.0
        # Drains: how many, when last (Unix time), and since when creations count as fresh.
        self._drains = 0
        self._last_drained_at: float | None = None
        self._fresh_after = 0.0
        # Async drivers: creations scheduled on an event loop (token -> (loop, probe)), the
        # tasks they run, and the last loop seen using the pool.
        self._loop_creations: dict[int, tuple[asyncio.AbstractEventLoop, bool]] = {}
        #: Closes running on an event loop: token -> loop; the slot is freed by whoever pops
        #: the token (the close when it ends, or maintenance once the loop died).
        self._loop_closes: dict[int, asyncio.AbstractEventLoop] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Per event loop, the timer that ends the waits of its waiters (see _arm_timer).
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}
        self._last_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public surface

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self._label!r} {self.backend_path} "
                f"target={self._target!r} state={self._state}>")

    __str__ = __repr__

    @property
    def target(self) -> str:
        """The masked target of the backend."""
        return self._target

    @property
    def closed(self) -> bool:
        """True once the pool was closed or retired."""
        return self._state in (CLOSED, RETIRED, CLOSING)

    @property
    def routable(self) -> bool:
        """True while routing may pick this pool: open, neither failing nor suspect."""
        return self._state is OPEN and not self._failing and not self._suspect

    @property
    def load(self) -> float:
        """Clients in use or awaited, relative to MAX_SIZE (read without the lock)."""
        return (len(self._in_use) + len(self._waiters)) / self._max_size

    def busy(self) -> bool:
        """Whether any client is in use, awaited or being created (read without the lock)."""
        return bool(self._in_use or self._waiters or self._creating)

    def last_error_at(self) -> float | None:
        """Monotonic time of the last recorded error, or None."""
        return self._last_error_at

    def mask(self, text: str) -> str:
        """``text`` with this pool's secrets masked."""
        return mask_text(text, self._secrets)

    def secrets(self) -> tuple[str, ...]:
        """The literal secrets of this pool's backend."""
        return self._secrets

    def started(self) -> bool:
        """Whether the pool was used in this process (the maintenance thread serves it)."""
        return self._started

    def start(self) -> None:
        """Start upkeep in this process now (it starts on first use otherwise)."""
        if not self._started:
            self._enter_slow_path()

    @property
    def endpoint(self) -> str | None:
        """The endpoint this member pool serves (its name), else None."""
        return self.name

    @property
    def pid(self) -> int:
        """The process this pool's state belongs to."""
        return self._pid

    def presume_dead(self, now: float) -> None:
        """Presume every client open before ``now`` dead, as after a server restart."""
        with self._lock:
            self._purge_stale_locked(now)

    def drain(self) -> None:
        """Replace every client, as after a credential rotation or a failover: idle ones
        close now, ones in use when they are released, and creations under way close their
        client when they finish; new clients are created afresh (fresh credentials, fresh
        DNS). Nothing waiting fails: waiters get the new clients."""
        if fork.forked_since(self._pid):
            self._after_fork_in_child()
        now = _monotonic()
        with self._lock:
            self._drains += 1
            self._last_drained_at = time.time()
            self.next_upkeep = 0.0
            self._fresh_after = self._stale_before = now
            self._next_probe = 0.0  # a pool failing with the old credentials tries again now
            for entry in self._in_use.values():
                entry.condemn()
            stale, self._idle = self._idle, []
            self._to_close_locked(stale)
        self._close_in_background(stale)
        # MIN_SIZE is refilled by the next round of upkeep, once the old clients are closed.
        maintenance.wake()

    def wait(self, timeout: float = 30.0) -> None:
        """Block until MIN_SIZE clients are open, starting upkeep in this process if it has
        not started; raise :class:`PoolTimeout` if they are not within ``timeout``."""
        timeout = clamp_timeout(timeout)
        deadline = _monotonic() + timeout
        self._enter_slow_path()
        maintenance.wake()
        pause = 0.002
        while True:
            with self._lock:
                if self._state is not OPEN:
                    raise PoolClosed(f"Pool {self._label!r} is {self._state}.")
                opened = self._size - self._creating - self._closing
                if opened >= self.settings.min_size:
                    return
                state = self._state_text()
                error = self._last_error_text() if self._last_error is not None else None
            remaining = deadline - _monotonic()
            if remaining <= 0:
                reason = f"; last error: {error}" if error else ""
                raise PoolTimeout(
                    f"Pool {self._label!r}: {opened} of MIN_SIZE {self.settings.min_size} "
                    f"clients open after {timeout:g}s; {state}{reason}.")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)

    def probe_now(self) -> None:
        """While failing fast, let the next acquire try to connect at once."""
        with self._lock:
            self._next_probe = 0.0

    def iter_idle_clients(self) -> Iterator[T]:
        """The idle clients (a copy), for debugging."""
        with self._lock:
            return iter([e.client for e in self._idle])

    def entry_of(self, client: object) -> Entry[T] | None:
        """The entry of ``client`` if it is checked out of this pool, else None."""
        entry = self._in_use.get(id(client))
        return entry if entry is not None and entry.client is client else None

    def holds(self, client: object) -> bool:
        """Whether ``client`` is checked out of this pool."""
        return self.entry_of(client) is not None

    # ------------------------------------------------------------------ driver points

    def _spawn_creation(self, probe: bool) -> None:
        """Open one client for a reserved slot; report through :meth:`_creation_done` or
        :meth:`_creation_failed`. Implemented by the driver."""
        raise NotImplementedError

    def _close_now(self, entry: Entry[T]) -> bool | None:
        """Close one client (never in a forked child); False when the close was only
        started and the driver calls :meth:`_closed_later` once it is done. Implemented by
        the driver."""
        raise NotImplementedError

    def _keepalive(self, entry: Entry[T]) -> None:
        """Validate an idle client taken off the idle list; then
        :meth:`_keepalive_done`. Implemented by the driver."""
        raise NotImplementedError

    # ------------------------------------------------------------------ driver surface
    # What groups (endpoint and keyed pools) and the health surfaces call on any pool;
    # each driver implements these with its own I/O.

    def checkout_from(self, timeout: float | None, frame: FrameType) -> T:
        """Check a client out for a caller whose frame is ``frame``."""
        raise NotImplementedError

    def release_from(self, client: T, discard: bool, exc: BaseException | None) -> None:
        """Return ``client`` (``exc``: what the caller's block raised, if anything)."""
        raise NotImplementedError

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Borrow or open one client and validate it; raise a :class:`PoolError` if it
        cannot (``wait=False``: a saturated pool passes)."""
        raise NotImplementedError

    async def _avalidate(self, entry: Entry[T], start: float, deadline: float) -> bool:
        """Validate an entry taken for async code per CHECK (the I/O is the driver's);
        False when it was discarded. Cancelled mid-check, it gives the entry back or
        discards it. Implemented by the driver."""
        raise NotImplementedError

    async def _arelease(self, client: T, discard: bool, exc: BaseException | None) -> None:
        """Return a client from async code. Implemented by the driver."""
        raise NotImplementedError

    # ------------------------------------------------------------------ async API (every pool)

    def aconnection(self, timeout: float | None = None, endpoint: str | None = None,
                    key: object = None) -> AsyncConnection[T]:
        """``async with pool.aconnection() as client:`` — waits without blocking the loop."""
        if endpoint is not None or key is not None:
            raise self._not_routable(endpoint, key)
        return AsyncConnection(self, timeout, _getframe(1))

    async def aacquire(self, timeout: float | None = None, endpoint: str | None = None,
                       key: object = None) -> T:
        """Check a client out from async code; return it with :meth:`arelease`. Same
        timeout, limits, errors and stats as ``acquire``."""
        if endpoint is not None or key is not None:
            raise self._not_routable(endpoint, key)
        frame = _getframe(1)
        entry = self._take_fresh(frame)
        if entry is not None:
            return entry.client
        return await self._acheckout(timeout, frame)

    async def arelease(self, client: T, discard: bool = False) -> None:
        """Return ``client`` from async code; a reset never blocks the event loop."""
        if discard or not self._release_nowait(client, task_owner()):
            await self._arelease(client, discard, None)

    async def acheckout_from(self, timeout: float | None, frame: FrameType) -> T:
        """A group's async checkout of this member (``frame`` is the caller's)."""
        entry = self._take_fresh(frame)
        if entry is not None:
            return entry.client
        return await self._acheckout(timeout, frame)

    async def arelease_from(self, client: T, discard: bool, exc: BaseException | None) -> None:
        """A group's async release to this member."""
        if discard or exc is not None or not self._release_nowait(client, task_owner()):
            await self._arelease(client, discard, exc)

    # ------------------------------------------------------------------ fast paths

    #: Whether clients belong to the event loop that made them (the async driver): a fast
    #: async checkout then takes only a client of the running loop.
    _loop_bound = False

    def _take_fresh(self, frame: FrameType) -> Entry[T] | None:
        """The fast checkout of async code, one lock round trip with nothing awaited: the
        newest idle client, when nobody waits, it needs no check and it belongs to the
        running loop (async pools), leased to the running task. None: take the slow path."""
        now = _monotonic()
        with self._lock:
            idle = self._idle
            if not idle or not self._fast_ok or self._waiters:
                return None
            entry = idle[-1]
            if entry.fresh_until <= now or (self._loop_bound and entry.loop is not
                                            _running_loop()):
                return None
            idle.pop()
            self._in_use[entry.key] = entry
            # Entry.lease(), inline: a call costs more than the rest.
            task = _current_task()
            if task is None:
                entry.owner = _get_ident()
                entry.owner_task = None
            else:
                entry.owner = id(task)
                entry.owner_task = weakref.ref(task)
            entry.lease_thread = _get_ident()
            entry.lease_since = now
            entry.lease_code = frame.f_code
            entry.lease_lasti = frame.f_lasti
            if self._record_views:
                entry.lease_view = current_view()
            self._acquired += 1
            return entry

    def _release_nowait(self, client: T, owner: int) -> bool:
        """The fast release of async code, with nothing awaited: the caller's own lease,
        on its own loop, whose backend says it is clean without any I/O
        (``reset_nowait``), goes straight back. False: take the general release."""
        entry = self._in_use.get(id(client))
        if (entry is None or not self._fast_release or entry.owner != owner
                or entry.expires <= _monotonic()
                or (self._loop_bound and entry.loop is not _running_loop())):
            return False
        if not self._reset_nowait(client):
            return False  # the general release runs the full reset
        self._put_back_fast(entry, owner)
        return True

    def _reset_nowait(self, client: T) -> bool:
        """The backend's ``reset_nowait``; False (run the full reset) if it raised."""
        try:
            return self.backend.reset_nowait(client) is True
        except Exception:
            return False

    def _put_back_fast(self, entry: Entry[T], releaser: int) -> None:
        """The tail of both fast releases: a reset client of the releaser's own lease goes
        to a waiter or the idle list (closed instead when it expired meanwhile)."""
        now = _monotonic()
        with self._lock:
            if self._in_use.pop(entry.key, None) is not entry:
                raise self._release_error(entry.client)
            self._released += 1
            # Entry.released(), inline. (With hold times or views to record, releases take
            # the general path.)
            entry.last_used = now
            expires = entry.expires
            fresh_until = now + entry.window
            entry.fresh_until = fresh_until if fresh_until < expires else expires
            entry.released_by = releaser
            entry.owner_task = None
            # A purge condemns the clients in use that it presumes dead.
            if expires > now and self._fast_ok:
                if not (self._waiters and self._handoff_locked(entry, now)):
                    self._idle.append(entry)
                capacity = self.capacity
                if capacity is None:
                    return
            else:
                capacity = None
                self._to_close_locked([entry])
        if capacity is None:
            self._close_entries([entry])
        else:
            # An idle client here may be what another member's caller needs room for.
            capacity.freed(self)

    # ------------------------------------------------------------------ slots

    def _has_room_locked(self) -> bool:
        """(lock held) Whether one more client may be opened."""
        if self._size >= self._max_size:
            return False
        capacity = self.capacity
        return capacity is None or capacity.room_locked(self)

    def _reserve_locked(self, probe: bool = False) -> None:
        """(lock held) Take a slot for a creation about to start."""
        self._size += 1
        self._creating += 1
        self.next_upkeep = 0.0
        capacity = self.capacity
        if capacity is not None:
            capacity.used += 1
        if probe:
            self._probing = True

    def _drop_locked(self, count: int = 1, *, creating: bool = False, closing: bool = False,
                     probe: bool = False) -> None:
        """(lock held) Free ``count`` slots: of creations that ended without a client
        (``creating``) or of clients now closed (``closing``)."""
        self._size -= count
        capacity = self.capacity
        if capacity is not None:
            capacity.used -= count
        if creating:
            self._creating -= count
            if probe:
                self._probing = False
        if closing:
            self._closing -= count
        self._notify_if_drained_locked()

    def _to_close_locked(self, entries: list[Entry[T]]) -> list[Entry[T]]:
        """(lock held) ``entries`` (off the idle list or out of use) are to be closed; their
        slots stay taken until :meth:`_close_entries` has closed them."""
        for entry in entries:
            entry.closing = True
        self._closing += len(entries)
        self.next_upkeep = 0.0
        self._closed += len(entries)
        return entries

    def _close_entries(self, entries: list[Entry[T]]) -> None:
        """Close ``entries`` (lock not held), then free their slots."""
        if not entries:
            return
        forked = fork.forked_since(self._pid)
        done = 0
        for entry in entries:
            if forked:
                fork.abandon([entry.client])
                done += 1
                continue
            try:
                # False: the close finishes later (on the client's event loop), and the
                # driver frees the slot then, through _closed_later().
                done += self._close_now(entry) is not False
            except Exception as exc:
                done += 1
                logger.debug("Closing a client of pool %r failed: %s", self._label,
                             mask_exception(exc, self._secrets))
        if done:
            self._closed_later(done)

    def _closed_later(self, count: int = 1) -> None:
        """``count`` clients finished closing: free their slots."""
        with self._lock:
            self._drop_locked(count, closing=True)
        self._after_shrink()

    def _close_in_background(self, entries: list[Entry[T]]) -> None:
        """:meth:`_close_entries` in a daemon thread: closing can block on a dead socket."""
        if not entries:
            return
        thread = threading.Thread(target=self._close_entries, args=(entries,), daemon=True,
                                  name=f"pooled_clients-close-{self._label}")
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            self._close_entries(entries)

    def give_up_idle_locked(self) -> bool:
        """(lock held) Start closing the least recently used idle client, so that another
        member of a shared capacity can open one once it is closed."""
        if not self._idle:
            return False
        self._close_in_background(self._to_close_locked([self._idle.pop(0)]))
        return True

    def _after_shrink(self) -> None:
        """Slots came free: start creations for waiters left without a client, here and
        then (through the shared capacity) in the other members of a group."""
        self.grow_for_waiters()
        capacity = self.capacity
        if capacity is not None:
            capacity.freed(self)

    def grow_for_waiters(self) -> None:
        """Start a creation for each caller that waits with none started for it, while
        there is room."""
        spawn = 0
        with self._lock:
            if self._state is OPEN:
                while (len(self._waiters) > self._creating and not self._failing
                       and self._has_room_locked()):
                    self._reserve_locked()
                    spawn += 1
        for _ in range(spawn):
            self._spawn_creation(False)

    def wants_room(self) -> bool:
        """Whether callers wait with no creation started for them (read without the lock)."""
        return len(self._waiters) > self._creating and self._state is OPEN

    def oldest_wait(self) -> float:
        """When the longest-waiting caller started waiting (read without the lock)."""
        waiters = self._waiters
        try:
            return waiters[0].since
        except IndexError:
            return math.inf

    def size_locked(self) -> int:
        """(lock held) Slots taken: idle + in use + creating + closing."""
        return self._size

    def closing_locked(self) -> int:
        """(lock held) Clients being closed (their slots are still taken)."""
        return self._closing

    def unmet_locked(self) -> int:
        """(lock held) Callers waiting with no creation started for them."""
        return max(0, len(self._waiters) - self._creating)

    def idle_count_locked(self) -> int:
        """(lock held) Idle clients."""
        return len(self._idle)

    # ------------------------------------------------------------------ hand over / put back

    def _put_back_locked(self, entry: Entry[T], now: float) -> bool:
        """(lock held) The one tail of every path that ends with a client nobody holds:
        hand it to the first waiter that can take it, or put it on the idle list; False
        when it must be closed instead (the caller then calls :meth:`_close_entries`)."""
        if self._state is OPEN and entry.usable(now, self._stale_before):
            if not (self._waiters and self._handoff_locked(entry, now)):
                self._idle.append(entry)
            return True
        self._to_close_locked([entry])
        return False

    def _give_back(self, entry: Entry[T]) -> None:
        """Put back (or close) an entry that is neither idle nor in use."""
        with self._lock:
            kept = self._put_back_locked(entry, _monotonic())
        if not kept:
            self._close_entries([entry])

    def _handoff_locked(self, entry: Entry[T], now: float) -> bool:
        """(lock held) Give ``entry`` to the first waiter that can take it: one on the
        client's own event loop first, if it belongs to one.

        A waiting thread's checkout is completed here when the client needs no check, so
        the woken thread returns at once instead of queueing for the pool lock again.
        """
        waiters = self._waiters
        loop = entry.loop
        if loop is not None:
            for waiter in waiters:
                if waiter.loop is loop:
                    waiters.remove(waiter)
                    if self._deliver_locked(waiter, entry, now):
                        return True
                    break
        while waiters:
            if self._deliver_locked(waiters.popleft(), entry, now):
                return True
        return False

    def _deliver_locked(self, waiter: AnyWaiter, entry: Entry[T], now: float) -> bool:
        """(lock held) Hand ``entry`` to ``waiter``, leased to it already when it needs no
        check and may be used where the waiter runs (so the woken caller returns at once,
        without taking the pool lock again). False when the waiter can no longer take it."""
        if (waiter.code is not None and self._fast_leases
                and (entry.loop is None or entry.loop is waiter.loop)
                and not entry.needs_check(now, waiter.since)):
            self._lease_locked(entry, waiter.thread, waiter.code, waiter.lasti, now,
                               now - waiter.since, waiter.view, waiter.task)
            waiter.leased = True
        if waiter.deliver(entry):
            return True
        if waiter.leased:  # its event loop is closed: nobody holds the client after all
            waiter.leased = False
            del self._in_use[entry.key]
            self._acquired -= 1
        return False

    def _lease_locked(self, entry: Entry[T], thread: int, code: CodeType | None, lasti: int,
                      now: float, waited: float, view: str,
                      task: asyncio.Task[Any] | None = None) -> None:
        """(lock held) Count a checkout and record its lease."""
        self._in_use[entry.key] = entry
        entry.lease(thread, code, lasti, now, view, task)
        entry.lease_wait = waited
        self._acquired += 1
        self._waits.add(waited, self._acquired)

    def _returned_locked(self, entry: Entry[T], now: float) -> None:
        """(lock held) A lease ended at ``now``: count it for its view, and keep its hold
        time for OpenTelemetry (each only while asked for, see :func:`record_views` and
        :func:`record_use_times`)."""
        held = now - entry.lease_since
        if self._record_views:
            # ViewTable.record(), inline: a call costs more than the rest.
            usage = self._views.get(entry.lease_view)
            if usage is None:
                usage = self._views.usage_of(entry.lease_view)
            usage.count += 1
            usage.hold_total += held
            usage.holds.append(held)
            if entry.lease_wait:
                usage.waits.add(entry.lease_wait, usage.count)
                entry.lease_wait = 0.0
        if self._record_use:
            self._uses.add(held, self._released)

    def _lease(self, entry: Entry[T], frame: FrameType, start: float,
               task: asyncio.Task[Any] | None = None) -> T:
        """Lease a validated entry to the calling thread (or ``task``)."""
        now = _monotonic()
        with self._lock:
            self._lease_locked(entry, _get_ident(), frame.f_code, frame.f_lasti, now,
                               now - start, current_view(), task)
        if self.settings.leak_timeout is not None:
            entry.lease_stack = "".join(traceback.format_stack(frame))
        return entry.client

    # ------------------------------------------------------------------ checkout (shared)

    def _enter_slow_path(self) -> None:
        """What every acquire that cannot take the fast path does first: notice a fork the
        at-fork hook did not see (uWSGI without py-call-osafterfork), and start upkeep."""
        if fork.forked_since(self._pid):
            fork.run_child_callbacks()
            self._after_fork_in_child()
        if not self._started:
            self._start()

    def _take_or_wait(self, start: float, waiter_type: type[_W],
                      frame: FrameType | None = None
                      ) -> tuple[Entry[T] | None, _W | None, bool | None]:
        """Under the lock: take an idle client, or queue a waiter (reserving a slot for a
        creation when there is room). The third item says what to spawn: None for nothing,
        False for a creation, True for a probe while failing fast."""
        with self._lock:
            if self._state is not OPEN:
                raise PoolClosed(f"Pool {self._label!r} is {self._state}: it hands out nothing.")
            if self._idle and not self._waiters:
                return self._idle.pop(), None, None
            max_waiting = self.settings.max_waiting
            if max_waiting and len(self._waiters) >= max_waiting:
                raise PoolExhausted(
                    f"Pool {self._label!r} has {len(self._waiters)} callers waiting already "
                    f"(MAX_WAITING={max_waiting}); {self._state_text()}."
                )
            spawn: bool | None = None
            if len(self._waiters) >= self._creating and self._has_room_locked():
                if self._failing:
                    if self._probing or _monotonic() < self._next_probe:
                        raise self._fail_fast_error()
                    spawn = True
                else:
                    spawn = False
                self._reserve_locked(probe=spawn)
            waiter = waiter_type(start)
            if frame is not None:
                waiter.code = frame.f_code
                waiter.lasti = frame.f_lasti
            self._waiters.append(waiter)
            self.next_upkeep = 0.0
            return None, waiter, spawn

    def _wait_outcome(self, waiter: AnyWaiter, timeout: float, woken: bool) -> Entry[T]:
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

    def _abandon_wait(self, waiter: AnyWaiter) -> None:
        """A waiter leaves by an exception of its own (a signal, a cancellation, an error
        in the wait itself): it leaves the queue, and a client already handed to it (even
        leased to it) goes back, so no capacity is lost."""
        with self._lock:
            entry, waiter.entry = waiter.entry, None
            waiter.leased = False
            if entry is None:
                if waiter.error is None:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                return
            close = self._take_back_locked(entry)
        if close:
            self._close_entries([entry])

    def _recover(self, entry: Entry[T]) -> None:
        """A caller was interrupted while it held ``entry`` on its way out of the pool
        (taken off the idle list, being validated, or checked out but not yet returned to
        it): the client goes back."""
        with self._lock:
            close = self._take_back_locked(entry)
        if close:
            self._close_entries([entry])

    def _take_back_locked(self, entry: Entry[T]) -> bool:
        """(lock held) Take back an entry an interrupted caller held, wherever it got to:
        out of use if it was leased; nothing to do if it is idle or being closed already.
        True when it must be closed (the caller then calls :meth:`_close_entries`)."""
        if self._in_use.get(entry.key) is entry:
            del self._in_use[entry.key]
            self._released += 1
            if self._track_returns:
                self._returned_locked(entry, _monotonic())
        elif entry.closing or any(e is entry for e in self._idle):
            return False
        return not self._put_back_locked(entry, _monotonic())

    async def _acheckout(self, timeout: float | None, frame: FrameType) -> T:
        """The slow checkout of async code, for sync and async pools alike: take an idle
        client or wait on the event loop for one, until the driver's :meth:`_avalidate`
        accepts it (``frame`` is the caller's)."""
        start = _monotonic()
        self._last_loop = _running_loop()
        self._enter_slow_path()
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        deadline = start + timeout
        while True:
            entry, waiter, spawn = self._take_or_wait(start, AsyncWaiter, frame)
            if spawn is not None:
                self._spawn_creation(spawn)
            if waiter is not None:
                waiter.deadline = deadline
                if deadline > _monotonic():
                    self._arm_timer(waiter)
                    try:
                        await waiter.future
                    except BaseException:
                        self._abandon_wait(waiter)
                        raise
                # deliver() and fail() set the outcome before waking the future.
                entry = self._wait_outcome(
                    waiter, timeout, waiter.entry is not None or waiter.error is not None)
                if waiter.leased:
                    return entry.client
            assert entry is not None
            # _avalidate gives back or discards the entry when it is cancelled mid-check.
            if await self._avalidate(entry, start, deadline):
                return self._lease(entry, frame, start, _current_task())

    def _arm_timer(self, waiter: AsyncWaiter) -> None:
        """Make sure the pool's timer on the waiter's event loop fires by its deadline.

        One timer per loop, at the earliest deadline of the loop's waiters, rather than one
        per wait: waiters queue in order, so most deadlines come after the armed one and
        cost nothing, and a timer per wait was a quarter of a contended checkout."""
        loop = waiter.loop
        assert loop is not None
        when = loop.time() + (waiter.deadline - _monotonic())
        timer = self._timers.get(loop)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[loop] = loop.call_at(when, self._expire_waiters, loop)

    def _expire_waiters(self, loop: asyncio.AbstractEventLoop) -> None:
        """(the pool's timer on ``loop``) Wake the waiters of ``loop`` whose deadline
        passed, each to raise its timeout, and arm the timer for the next deadline."""
        self._timers.pop(loop, None)
        now = _monotonic()
        nearest: AsyncWaiter | None = None
        with self._lock:
            for waiter in self._waiters:
                if waiter.loop is loop and type(waiter) is AsyncWaiter:
                    if waiter.deadline <= now:
                        waiter.wake()
                    elif nearest is None or waiter.deadline < nearest.deadline:
                        nearest = waiter
        if nearest is not None:
            self._arm_timer(nearest)

    def _timeout_error(self, waiter: AnyWaiter, timeout: float) -> PoolError:
        """(lock held) The error for a waiter that gave up."""
        if (self._last_error is not None and self._last_error_at is not None
                and self._last_error_at >= waiter.since and self._creating):
            error: PoolError = ClientCreationError(
                f"Pool {self._label!r} could not open a client to {self._target} within "
                f"{timeout:g}s: {self._last_error_text()}."
            )
            error.__cause__ = self._last_error
            return error
        connecting = (f"; {self._creating} connection attempt(s) to {self._target} still "
                      "unanswered" if self._creating else "")
        return PoolTimeout(
            f"Pool {self._label!r} timed out after {timeout:g}s waiting for a client to "
            f"{self._target}; {self._state_text()}{self._holders_text()}{connecting}."
        )

    def _fail_fast_error(self) -> ClientCreationError:
        """(lock held) The error raised at once while the service is down."""
        wait = max(0.0, self._next_probe - _monotonic())
        attempts = self._consecutive_failures
        error = ClientCreationError(
            f"Pool {self._label!r} cannot reach {self._target} (failing fast after "
            f"{attempts} failed attempt{'s' if attempts != 1 else ''}; next attempt in "
            f"{wait:.1f}s): {self._last_error_text()}."
        )
        error.__cause__ = self._last_error
        return error

    def _expired_or_check(self, entry: Entry[T], now: float, start: float) -> bool | None:
        """The checkout rule for an entry taken off the idle list or handed over: False
        when it was discarded (expired or condemned), None when it may be leased as is,
        True when it needs a check first (per CHECK)."""
        if not entry.usable(now, self._stale_before):
            self._discard(entry, broken=False)
            return False
        return True if entry.needs_check(now, start) else None

    def _check_failed(self, entry: Entry[T], exc: BaseException, now: float,
                      message: str) -> None:
        """Count a failed check, condemn the idle clients older than ``now``, discard
        ``entry`` and log ``message`` (with the pool and the masked error)."""
        with self._lock:
            self._check_failures += 1
            self._unreachable = True
            self._record_error_locked(exc, now)
            # The service probably restarted: every idle client older than this one is
            # presumed dead too, instead of being tested one by one.
            self._purge_stale_locked(now)
        self._discard(entry, broken=True)
        self._log_failure(message, exc)

    # ------------------------------------------------------------------ release (shared)

    def _release_error(self, client: object) -> PoolError:
        return PoolError(
            f"Pool {self._label!r} cannot release {type(client).__name__} object at "
            f"{id(client):#x}: it is not checked out of this pool (released twice, or "
            "acquired from another pool)."
        )

    def _entry_to_release(self, client: T, owner: int) -> Entry[T] | None:
        """The entry ``owner`` (a thread or task id) may release, None for a client
        inherited across a fork; :class:`PoolError` for a client not checked out, or
        checked out by someone else after ``owner`` released it already."""
        entry = self.entry_of(client)
        if entry is None:
            if fork.is_abandoned(client):
                return None
            raise self._release_error(client)
        if entry.stale_release(owner):
            # ``owner`` released this client before and someone else holds it now: a stale
            # second release, which would make two callers share one client.
            raise PoolError(
                f"Pool {self._label!r}: {type(client).__name__} object at {id(client):#x} "
                "was released twice: it is now checked out by another caller, and stays "
                "theirs."
            )
        return entry

    def _finish_release(self, entry: Entry[T], ok: bool, broken: bool,
                        exc: BaseException | None, owner: int) -> None:
        """Take back a reset (``ok``) client for a waiter or the idle list, or close it;
        a ``broken`` one also counts as an error and condemns the older idle clients."""
        now = _monotonic()
        with self._lock:
            if self._in_use.pop(entry.key, None) is not entry:
                raise PoolError(f"Pool {self._label!r}: client released twice.")
            self._released += 1
            if self._track_returns:
                self._returned_locked(entry, now)
            entry.released(now, owner)
            if broken:
                self._errors += 1
                self._record_error_locked(exc, now)
                self._purge_stale_locked(now)
            if not ok:
                self._to_close_locked([entry])
                kept = False
            else:
                kept = self._put_back_locked(entry, now)
        if not kept:
            self._close_entries([entry])
            if broken:
                self._log_failure("Discarded a broken client of pool %r: %s", exc)
        elif self.capacity is not None:
            # An idle client here may be what another member's caller needs room for.
            self.capacity.freed(self)

    def _is_broken(self, client: T) -> bool:
        is_broken = getattr(self.backend, "is_broken", None)
        if is_broken is None:
            return False
        try:
            return bool(is_broken(client))
        except Exception:
            return True

    # ------------------------------------------------------------------ discard / purge

    def _discard(self, entry: Entry[T], broken: bool) -> None:
        """Close an entry that is neither idle nor in use (taken for validation)."""
        with self._lock:
            self._to_close_locked([entry])
            if broken:
                self._errors += 1
        self._close_entries([entry])

    def _purge_stale_locked(self, now: float) -> None:
        """(lock held) Presume every client created before ``now`` dead: idle ones close
        now (in the background), ones in use when they are released."""
        self._stale_before = now
        self.next_upkeep = 0.0
        for entry in self._in_use.values():
            if entry.created < now:
                entry.condemn()
        if self.failover and self._state is OPEN and not self._suspect:
            # The endpoint is presumed down until a probe connects, so routing stops
            # sending callers to it at once.
            self._suspect = True
            logger.warning("Endpoint %r of pool %r failed a check: %s; routing skips it "
                           "until it answers again.", self.name, self.alias,
                           self._last_error_text())
            maintenance.wake()
        stale = [e for e in self._idle if e.created < now]
        if stale:
            self._idle = [e for e in self._idle if e.created >= now]
            self._close_in_background(self._to_close_locked(stale))

    # ------------------------------------------------------------------ creation results

    def _new_entry(self, client: T, loop: asyncio.AbstractEventLoop | None = None) -> Entry[T]:
        now = _monotonic()
        lifetime = self.settings.max_lifetime
        expires = now + jitter(lifetime) if lifetime is not None else math.inf
        return Entry(client, now, expires, self._window, loop)

    def _creation_done(self, client: T, probe: bool,
                       loop: asyncio.AbstractEventLoop | None = None,
                       began: float | None = None) -> None:
        """A creation for a reserved slot produced ``client`` (its attempt started at
        ``began``)."""
        entry = self._new_entry(client, loop)
        with self._lock:
            if began is not None and began < self._fresh_after:
                entry.condemn()  # begun before a drain: maybe with the old credentials
            self._creating -= 1
            if probe:
                self._probing = False
            self._created += 1
            if began is not None:
                self._creates.add(entry.created - began, self._created)
            if self._failing or self._suspect:
                logger.info("Pool %r reached %s again.", self._label, self._target)
            self._failing = self._suspect = self._unreachable = False
            self._reached_at = entry.created
            self._consecutive_failures = 0
            if fork.forked_since(self._pid):
                kept = False
                self._to_close_locked([entry])
            else:
                kept = self._put_back_locked(entry, entry.created)
        if not kept:
            self._close_entries([entry])
        else:
            self._after_shrink()

    def _creation_failed(self, exc: BaseException | None, probe: bool) -> None:
        """A creation for a reserved slot gave up (after its retries) with ``exc``."""
        now = _monotonic()
        with self._lock:
            self._drop_locked(creating=True, probe=probe)
            if self._state is OPEN:
                self._record_error_locked(exc, now)
                self._unreachable = True
                self._consecutive_failures += 1
                if not self._failing:
                    self._failing = True
                    logger.warning("Pool %r cannot reach %s; failing fast until it does: %s",
                                   self._label, self._target, self._last_error_text())
                self._next_probe = now + backoff(self.settings, self._consecutive_failures)
                if self._size == 0 and self._waiters:
                    # Nothing open and nothing coming: nobody should wait out their timeout.
                    error = self._fail_fast_error()
                    while self._waiters:
                        self._waiters.popleft().fail(error)
        capacity = self.capacity
        if capacity is not None:
            capacity.freed(self)

    def _attempt_failed(self, exc: BaseException, attempt: int, attempts: int) -> float | None:
        """Creation attempt ``attempt`` of ``attempts`` failed with ``exc``: the seconds to
        wait before the next one, or None to give up now (the last attempt, or a wait
        longer than TIMEOUT: a retry after every caller gave up would hold the slot for
        nobody; probes take over)."""
        with self._lock:
            self._errors += 1
            self._unreachable = True
            self._record_error_locked(exc, _monotonic())
        delay = backoff(self.settings, attempt)
        if attempt >= attempts or delay > self.settings.timeout:
            return None
        return delay

    def _creating_allowed(self) -> bool:
        """Whether a creation in flight should go on (the pool is open, same process)."""
        return self._state is OPEN and not fork.forked_since(self._pid)

    def _record_error_locked(self, exc: BaseException | None, now: float) -> None:
        self.next_upkeep = 0.0
        if exc is not None:
            self._last_error = exc
            self._last_error_at = now
            self._last_error_wall = time.time()

    def _reached(self, now: float) -> None:
        """The service answered at ``now`` (a check passed). Written without the lock: two
        plain stores, read only by :meth:`stats` and the health check."""
        self._unreachable = False
        self._reached_at = now

    def _recently_reached(self, now: float) -> bool:
        """Whether the service answered within the CHECK window (CHECK_IDLE_AFTER; never
        with CHECK="always") and nothing failed since: the pool would hand out a client
        idle that long without a check, so a health probe may trust it too."""
        horizon = -1.0 if self.settings.check == "always" else self.settings.check_idle_after
        reached = self._reached_at
        return not self._unreachable and reached is not None and now - reached <= horizon

    def _last_error_text(self) -> str:
        return mask_exception(self._last_error, self._secrets) or "no error recorded"

    def _log_failure(self, message: str, exc: BaseException | None) -> None:
        logger.warning(message, self._label, mask_exception(exc, self._secrets)
                       or "it was found broken on release")

    # ------------------------------------------------------------------ maintenance

    def _start(self) -> None:
        """First slow-path use in this process: join the maintenance thread, warm up."""
        self._started = True
        maintenance.ensure_running()
        self.maintain(_monotonic())

    def maintain(self, now: float) -> float | None:
        """One round of upkeep; returns seconds until the pool wants the next round."""
        if self._state is not OPEN or fork.forked_since(self._pid):
            return None
        if self._timers:
            # A loop closed while its waiters' timer was pending (WSGI runs each async view
            # in a loop of its own): forget the timer, and with it the loop.
            for loop in [loop for loop in list(self._timers) if loop.is_closed()]:
                self._timers.pop(loop, None)
        settings = self.settings
        to_close: list[Entry[T]] = []
        to_check: list[Entry[T]] = []
        spawn: list[bool] = []
        leaked: list[Entry[T]] = []
        with self._lock:
            self._expire_idle_locked(now, to_close)
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
            if self._failing or self._suspect:
                if not self._probing and now >= self._next_probe and self._has_room_locked():
                    self._reserve_locked(probe=True)
                    spawn.append(True)
            else:
                while self._size < settings.min_size and self._has_room_locked():
                    self._reserve_locked()
                    spawn.append(False)
            if settings.leak_timeout is not None:
                for entry in self._in_use.values():
                    if not entry.leak_reported and now - entry.lease_since > settings.leak_timeout:
                        entry.leak_reported = True
                        self._leaks += 1
                        leaked.append(entry)
        self._close_entries(to_close)
        for probe in spawn:
            self._spawn_creation(probe)
        for entry in leaked:
            self._report_leak(entry, now)
        for entry in to_check:
            self._keepalive(entry)
        if self.capacity is not None and self.wants_room():
            self.capacity.freed(self)
        with self._lock:
            if self._settled_locked():
                self.next_upkeep = self._quiet_until_locked(now)
        return self._next_wakeup(now)

    #: The longest a settled pool goes without a round of upkeep.
    MAX_QUIET = 60.0

    def _quiet_until_locked(self, now: float) -> float:
        """(lock held, settled) When the clients there now next need upkeep: the first to
        pass MAX_LIFETIME, or MAX_IDLE above MIN_SIZE (a client in use idles from its
        release on, so no sooner than ``now + MAX_IDLE``), or the next keepalive check."""
        settings = self.settings
        due = now + self.MAX_QUIET
        if settings.keepalive_interval is not None and self._idle:
            due = min(due, self._next_keepalive)
        max_idle = settings.max_idle
        if max_idle is not None and self._in_use:
            due = min(due, now + max_idle)
        above_min = max_idle is not None and self._size > settings.min_size
        for entries in (self._idle, self._in_use.values()):
            for entry in entries:
                due = min(due, entry.expires)
        if above_min:
            assert max_idle is not None
            for entry in self._idle:
                due = min(due, entry.last_used + max_idle)
        return due

    def _settled_locked(self) -> bool:
        """(lock held) Whether only time can make upkeep due: nothing is being created,
        closed, probed or waited for, MIN_SIZE is met and no lease can leak. The maintenance
        thread then skips the pool until :attr:`next_upkeep`; whatever unsettles it (a slot
        taken, a client to close, a waiter, a failure, a drain) resets that to 0."""
        return (self._state is OPEN and not (
            self._failing or self._suspect or self._probing or self._waiters
            or self._creating or self._closing or self._loop_creations or self._loop_closes
            or self._timers)
            and self._size >= self.settings.min_size
            and (self.settings.leak_timeout is None or not self._in_use))

    def _expire_idle_locked(self, now: float, to_close: list[Entry[T]]) -> None:
        """(lock held) Move idle clients past MAX_LIFETIME, or idle past MAX_IDLE above
        MIN_SIZE, to ``to_close``."""
        max_idle = self.settings.max_idle
        keep: list[Entry[T]] = []
        removed: list[Entry[T]] = []
        for entry in self._idle:
            too_idle = (max_idle is not None and now - entry.last_used > max_idle
                        and self._size - self._closing - len(removed) > self.settings.min_size)
            if too_idle or not entry.usable(now, self._stale_before):
                removed.append(entry)
            else:
                keep.append(entry)
        if removed:
            self._idle = keep
            to_close.extend(self._to_close_locked(removed))

    def _next_wakeup(self, now: float) -> float | None:
        settings = self.settings
        delays = [30.0]
        if self._failing or self._suspect:
            delays.append(max(0.05, min(self._next_probe - now, 0.1 if self._suspect else 30)))
        if settings.keepalive_interval is not None:
            delays.append(min(1.0, settings.keepalive_interval))
        if settings.leak_timeout is not None:
            delays.append(min(1.0, settings.leak_timeout / 2))
        if settings.max_idle is not None:
            delays.append(min(settings.max_idle / 2, 10.0))
        if settings.max_lifetime is not None:
            delays.append(min(settings.max_lifetime / 10, 10.0))
        return max(0.01, min(delays))

    def _keepalive_done(self, entry: Entry[T], exc: BaseException | None, now: float) -> None:
        """A background check of ``entry`` (started at ``now``) ended with ``exc``."""
        if exc is not None:
            self._check_failed(entry, exc, now, "Keepalive check failed for a client of pool "
                                                "%r: %s")
            return
        entry.checked(now)
        self._reached(now)
        self._give_back(entry)

    def _report_leak(self, entry: Entry[T], now: float) -> None:
        thread = thread_name(entry.lease_thread)
        logger.warning(
            "Pool %r: a client has been held for %.1fs by thread %s in view %s "
            "(LEAK_TIMEOUT=%gs), acquired at:\n%s",
            self._label, now - entry.lease_since, thread, entry.lease_view,
            self.settings.leak_timeout, entry.lease_stack or entry.where(),
        )

    # ------------------------------------------------------------------ close / retire / fork

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for clients in use (and creations in flight), then close
        everything. Later acquires raise :class:`PoolClosed`. Safe to call more than once.
        """
        self.begin_close()
        self.finish_close(_monotonic() + max(0.0, clamp_timeout(timeout)))

    def begin_close(self) -> None:
        """First half of :meth:`close`: refuse new acquires, fail waiters, close idle clients."""
        if fork.forked_since(self._pid):
            self._after_fork_in_child()
        with self._lock:
            if self._state in (CLOSED, CLOSING):
                return
            self._state = CLOSING
            idle, self._idle = self._idle, []
            self._to_close_locked(idle)
            self._fail_waiters_locked()
        self._close_entries(idle)

    def _notify_if_drained_locked(self) -> None:
        """(lock held) Wake :meth:`finish_close` once nothing is in use, created or closed."""
        if (self._state is CLOSING and not self._in_use and not self._creating
                and not self._closing):
            self._drained.notify_all()

    def finish_close(self, deadline: float) -> None:
        """Second half of :meth:`close`: wait for clients in use and creations in flight
        until ``deadline`` (monotonic), then close what is left."""
        with self._lock:
            if self._state is CLOSED:
                return
            # Creations in flight are waited for too: none may open a client after close().
            while self._in_use or self._creating or self._closing:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
                self._drained.wait(min(remaining, MAX_WAIT))
            leftover = list(self._in_use.values())
            self._in_use.clear()
            self._to_close_locked(leftover)
            self._state = CLOSED
        if leftover:
            logger.warning("Pool %r closed %d client(s) still in use at shutdown.",
                           self._label, len(leftover))
        self._close_entries(leftover)
        maintenance.unregister(self)

    def retire(self) -> None:
        """Stop handing out clients without waiting: close idle ones now and each client
        in use when it is released. Used when settings are reloaded."""
        if fork.forked_since(self._pid):
            self._after_fork_in_child()
        with self._lock:
            if self._state is not OPEN:
                return
            self._state = RETIRED
            idle, self._idle = self._idle, []
            self._to_close_locked(idle)
            self._fail_waiters_locked()
        self._close_entries(idle)
        maintenance.unregister(self)

    def _fail_waiters_locked(self) -> None:
        error = PoolClosed(f"Pool {self._label!r} was {self._state} while waiting for a client.")
        while self._waiters:
            self._waiters.popleft().fail(error)

    def _after_fork_in_child(self) -> None:
        """Abandon every inherited client without I/O and start afresh."""
        with _FORK_LOCK:
            if not fork.forked_since(self._pid):
                return
            fork.abandon(e.client for e in self._idle)
            fork.abandon(e.client for e in self._in_use.values())
            state = self._state
            self._reset_state()
            if state is not OPEN:
                self._state = CLOSED if state is CLOSING else state

    # ------------------------------------------------------------------ stats

    def stats(self) -> PoolStats:
        """A consistent snapshot of this pool in this process."""
        if fork.forked_since(self._pid):
            self._after_fork_in_child()
        now = _monotonic()
        with self._lock:
            leases = tuple(
                Lease(thread=thread_name(e.lease_thread), thread_id=e.lease_thread,
                      held_for=round(now - e.lease_since, 3), where=e.where(),
                      leaked=e.leak_reported, stack=e.lease_stack, view=e.lease_view)
                for e in self._in_use.values()
            )
            state = self._state
            if state is OPEN and (self._failing or self._suspect or self._unreachable):
                state = "failing"
            recovered = (self._last_error_at is not None and self._reached_at is not None
                         and self._reached_at > self._last_error_at)
            last_error_at = self._last_error_wall
            p50, p95, p99 = self._waits.percentiles(self._acquired)
            by_view = self._views.snapshot()
            last_error = self._last_error_text() if self._last_error is not None else None
            counts = (self._size, len(self._idle), len(self._in_use), len(self._waiters),
                      self._acquired, self._released, self._created, self._closed,
                      self._timeouts, self._errors, self._check_failures, self._leaks,
                      self._creating, self._closing)
        (size, idle, in_use, waiting, acquired, released, created, closed, timeouts, errors,
         check_failures, leaks, creating, closing) = counts
        backend_stats = getattr(self.backend, "stats", None)
        return PoolStats(
            alias=self.alias,
            backend=self.backend_path,
            target=self._target,
            pid=self._pid,
            min_size=self.settings.min_size,
            max_size=self._max_size,
            wait_ms_p50=p50,
            wait_ms_p95=p95,
            wait_ms_p99=p99,
            healthy=state == "open",
            last_error=last_error,
            leases=leases,
            state=state,
            timeout=self.settings.timeout,
            backend_stats=dict(backend_stats()) if callable(backend_stats) else {},
            name=self.name,
            drains_total=self._drains, last_drained_at=self._last_drained_at,
            size=size - closing, idle=idle, in_use=in_use, waiting=waiting,
            acquired_total=acquired,
            released_total=released, created_total=created, closed_total=closed,
            timeouts_total=timeouts, errors_total=errors, check_failures_total=check_failures,
            leaks_total=leaks, creating=creating, closing=closing, by_view=by_view,
            last_error_at=None if last_error_at is None else utc_text(last_error_at),
            recovered=recovered,
        )

    def wait_sources(self) -> list[PoolCore[Any]]:
        """The pools whose acquire waits make up this one's: itself."""
        return [self]

    def waits_since(self, number: int) -> tuple[int, int, list[float]]:
        """Acquire waits after checkout ``number``: ``(latest checkout number, how many of
        those checkouts did not wait, the other waits in seconds)``. Only the most recent
        checkouts are remembered (see :class:`~pooled_clients.stats.WaitWindow`)."""
        with self._lock:
            acquired = self._acquired
            waits = self._waits.samples_since(number) if acquired > number else []
        return acquired, max(0, acquired - number - len(waits)), waits

    def use_times_since(self, number: int) -> tuple[int, list[float]]:
        """How long clients were held, for the releases after release ``number``:
        ``(latest release number, hold times in seconds)``; recorded only while
        :func:`record_use_times` is on, and only the most recent ones."""
        with self._lock:
            released = self._released
            return released, self._uses.samples_since(number) if released > number else []

    def create_times_since(self, number: int) -> tuple[int, list[float]]:
        """How long the creations after creation ``number`` took: ``(latest creation
        number, durations in seconds)``; only the most recent ones."""
        with self._lock:
            created = self._created
            return created, self._creates.samples_since(number) if created > number else []

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
        parts = [f"{thread_name(e.lease_thread)} for {now - e.lease_since:.1f}s at {e.where()}"
                 + ("" if e.lease_view == attribution.UNATTRIBUTED
                    else f" (view {e.lease_view})")
                 for e in entries]
        more = len(self._in_use) - len(entries)
        suffix = f" and {more} more" if more > 0 else ""
        return "; held by " + ", ".join(parts) + suffix

    def _refuse_fast_check(self, start: float) -> bool:
        """(for ``check()``) Raise when the pool is closed or failing fast; True when it is
        saturated (every client in use, none free to borrow)."""
        with self._lock:
            if self._state is not OPEN:
                raise PoolClosed(f"Pool {self._label!r} is {self._state}.")
            if self._failing and (self._probing or start < self._next_probe):
                raise self._fail_fast_error()
            return not self._idle and self._size >= self._max_size

    def _check_error(self, exc: BaseException) -> ClientCreationError:
        """Count a failed health check and describe it."""
        with self._lock:
            self._check_failures += 1
            self._unreachable = True
            self._record_error_locked(exc, _monotonic())
        error = ClientCreationError(
            f"Pool {self._label!r}: a client to {self._target} failed its check: "
            f"{mask_exception(exc, self._secrets) or 'timed out'}."
        )
        error.__cause__ = exc
        return error

    def _not_routable(self, endpoint: str | None, key: object) -> PoolError:
        """The error for ``endpoint=`` or ``key=`` on a pool that has neither."""
        if endpoint is not None:
            return PoolDoesNotExist(
                f"Pool {self.alias!r} has no endpoint {endpoint!r} (it defines no ENDPOINTS).")
        return PoolError(f"Pool {self.alias!r} is not keyed: it defines no KEYS, so key= "
                         "means nothing to it.")


_FORK_LOCK = threading.RLock()


def utc_text(wall: float) -> str:
    """``2026-11-27 18:04:05 UTC``: the one clock every surface shows."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def record_views() -> None:
    """Count every pool's checkouts per view from now on (attribution is in use)."""
    _record("views", True)


def record_use_times(on: bool) -> None:
    """Keep (or stop keeping) how long each client is held, in every pool of the process."""
    _record("use", on)


def _record(what: str, on: bool) -> None:
    if _recording[what] is on:
        return
    _recording[what] = on
    for pool in maintenance.live_pools():
        if isinstance(pool, PoolCore):  # members of a group are registered themselves
            with pool._lock:
                if not pool._track_returns:
                    # Untracked releases left the waits of past leases on idle clients.
                    for entry in pool._idle:
                        entry.lease_wait = 0.0
                pool._follow_recording()
                pool._refresh_fast_flags()


def _line_of(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset ``lasti``."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return code.co_firstlineno


def thread_name(ident: int) -> str:
    """The name of thread ``ident``, or a note that it ended."""
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:
        return f"thread {ident} (ended)"
    # A thread's name is anyone's text: it must not start a new line of a log or a table.
    return printable(str(thread.name))


def _after_fork_in_child() -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.RLock()  # a lock held at fork time would never be released
    for pool in maintenance.live_pools():
        pool._after_fork_in_child()


fork.on_fork_in_child(_after_fork_in_child)
