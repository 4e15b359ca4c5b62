"""The async driver: :class:`AsyncPool`, the pool of a backend whose ``is_async`` is true.

The state and every rule live in :class:`~pooled_clients.core.PoolCore`; this module does
the I/O with event-loop tasks (coroutine ``create``, ``check``, ``reset``, ``close``).
Clients belong to the event loop that created them: each entry records its loop, and a
checkout from another loop (Django running an async view under WSGI makes a loop per
request) discards it, without awaiting anything on the dead loop, and creates a new one on
the caller's loop.

A task cancelled at any point (while waiting, validating, using or resetting) never loses a
client: an entry handed over to a cancelled waiter goes back to the pool, and a client whose
reset was interrupted is discarded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from types import FrameType
from typing import Any, NoReturn, TypeVar

from pooled_clients import fork
from pooled_clients.backends.base import AsyncClientBackend
from pooled_clients.core import (
    OPEN,
    AsyncConnection,
    Entry,
    PoolCore,
    PoolSettings,
    clamp_timeout,
    task_owner,
)
from pooled_clients.exceptions import ClientCreationError, PoolClosed, PoolError, PoolTimeout
from pooled_clients.masking import mask_exception

T = TypeVar("T")

__all__ = ["AsyncClientBackend", "AsyncConnection", "AsyncPool"]

logger = logging.getLogger("pooled_clients")

_running_loop = asyncio._get_running_loop
_monotonic = time.monotonic
_getframe = __import__("sys")._getframe
_tokens = itertools.count(1)


def _loop_alive(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is not None and not loop.is_closed()


class AsyncPool(PoolCore[T]):
    """The pool of an async backend: the same rules, stats, close and retire as every
    pool, with clients bound to the event loop that created them.

    Only the async API works (``aconnection``, ``aacquire``, ``arelease``); the sync one
    raises :class:`PoolError`.
    """

    _loop_bound = True

    def __init__(self, alias: str, backend: AsyncClientBackend[T],
                 settings: PoolSettings | None = None, **kwargs: Any) -> None:
        self.abackend = backend
        super().__init__(alias, backend, settings, **kwargs)

    # ------------------------------------------------------------------ sync API: refused

    def _sync_api_error(self, name: str) -> PoolError:
        return PoolError(
            f"Pool {self.alias!r} uses the async backend {self.backend_path}: {name} is not "
            f"available. Use 'async with pools[{self.alias!r}].aconnection() as client' or "
            f"'await pools[{self.alias!r}].aacquire()' / '.arelease(client)'."
        )

    def connection(self, timeout: float | None = None,
                   endpoint: str | None = None, key: object = None) -> NoReturn:
        """Refused: use :meth:`aconnection`."""
        raise self._sync_api_error("connection()")

    def acquire(self, timeout: float | None = None, endpoint: str | None = None,
                    key: object = None) -> NoReturn:
        """Refused: use :meth:`aacquire`."""
        raise self._sync_api_error("acquire()")

    def release(self, client: T, discard: bool = False) -> NoReturn:
        """Refused: use :meth:`arelease`."""
        raise self._sync_api_error("release()")

    # ------------------------------------------------------------------ async API

    def wait(self, timeout: float = 30.0) -> NoReturn:
        """Refused: clients of an async backend belong to an event loop, which sync code
        waiting here does not run (they open on first use in async code)."""
        raise self._sync_api_error("wait()")

    def checkout_from(self, timeout: float | None, frame: FrameType) -> NoReturn:
        """Refused: a group's sync checkout of an async member."""
        raise self._sync_api_error("acquire()")

    def release_from(self, client: T, discard: bool, exc: BaseException | None) -> NoReturn:
        """Refused: a group's sync release of an async member."""
        raise self._sync_api_error("release()")

    async def _avalidate(self, entry: Entry[T], start: float, deadline: float) -> bool:
        if entry.loop is not _running_loop():
            # Made on another (usually dead) event loop: useless here.
            self._discard(entry, broken=False)
            return False
        now = _monotonic()
        verdict = self._expired_or_check(entry, now, start)
        if verdict is not True:
            return verdict is None
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
        entry.checked(now)
        self._reached(now)
        return True

    async def _arelease(self, client: T, discard: bool, exc: BaseException | None) -> None:
        owner = task_owner()
        entry = self._entry_to_release(client, owner)
        if entry is None:
            return
        ok = False
        if not discard and self._state is OPEN and entry.loop is _running_loop():
            if self._reset_nowait(client):
                self._finish_release(entry, True, False, exc, owner)
                return
            try:
                # asyncio.timeout, not wait_for: no task and no extra loop turns per release.
                async with asyncio.timeout(self.settings.connect_timeout):
                    ok = bool(await self.abackend.reset(client))
            except asyncio.CancelledError:
                # Interrupted mid-reset: the client's state is unknown, so it goes.
                self._finish_release(entry, False, False, exc, owner)
                raise
            except Exception as error:
                exc = exc or error
        self._finish_release(entry, ok, not ok and self._is_broken(client), exc, owner)

    # ------------------------------------------------------------------ driver: creation

    def _loop_for_creation(self) -> asyncio.AbstractEventLoop | None:
        """The loop a new client should belong to: the caller's, else the first waiter's,
        else the last loop seen using the pool while it still runs (MIN_SIZE, probes)."""
        running = _running_loop()
        if running is not None:
            return running
        with self._lock:
            for waiter in self._waiters:
                if _loop_alive(waiter.loop):
                    return waiter.loop
        last = self._last_loop
        if last is not None and last.is_running() and not last.is_closed():
            return last
        return None

    def _spawn_creation(self, probe: bool) -> None:
        """Create one client on an event loop (a slot is already reserved)."""
        loop = self._loop_for_creation()
        if loop is None:
            self._give_back_slot(probe)
            return
        token = next(_tokens)
        with self._lock:
            self._loop_creations[token] = (loop, probe)
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
            return self._loop_creations.pop(token, None) is not None

    def _give_back_slot(self, probe: bool) -> None:
        with self._lock:
            self._drop_locked(creating=True, probe=probe)

    async def _acreate_job(self, token: int, probe: bool) -> None:
        attempts = 1 if probe else 1 + self.settings.connect_retries
        last: BaseException | None = None
        try:
            for attempt in range(1, attempts + 1):
                if not self._creating_allowed():
                    break
                began = _monotonic()
                try:
                    client = await self._acreate_one()
                except Exception as exc:
                    last = exc
                    delay = self._attempt_failed(exc, attempt, attempts)
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
                    continue
                if not self._claim(token):
                    self._close_nowait(client)
                    return
                self._creation_done(client, probe, asyncio.get_running_loop(), began)
                return
        except BaseException as exc:
            # Cancelled (the loop is shutting down), or anything unexpected: free the slot.
            if self._claim(token):
                self._creation_failed(None if isinstance(exc, asyncio.CancelledError)
                                      else exc, probe)
            raise
        if self._claim(token):
            self._creation_failed(last, probe)

    async def _acreate_one(self, timeout: float | None = None) -> T:
        timeout = self.settings.connect_timeout if timeout is None else timeout
        start = _monotonic()
        # Callables in OPTIONS are resolved once per attempt (bounded on their own).
        backend = await self.abackend.acreation_backend()
        try:
            return await asyncio.wait_for(backend.create(),
                                          max(0.001, timeout - (_monotonic() - start)))
        except TimeoutError as exc:
            if str(exc):
                raise
            raise TimeoutError(f"no client within CONNECT_TIMEOUT ({timeout:g}s)") from None

    # ------------------------------------------------------------------ driver: closing

    def _close_now(self, entry: Entry[T]) -> bool:
        """Close on the client's own loop when it runs (the slot is freed once that close
        is done: a new client never opens beside one still closing); else at once, without
        awaiting anything. A pool shutting down closes at once."""
        loop = entry.loop
        client = entry.client
        if self._state is OPEN and loop is not None and not loop.is_closed():
            token = next(_tokens)
            with self._lock:
                self._loop_closes[token] = loop
            if loop is _running_loop():
                task = loop.create_task(self._aclose(client, token))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return False
            if loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(self._aclose(client, token), loop)
                    return False
                except RuntimeError:
                    pass
            with self._lock:
                del self._loop_closes[token]
        # Its loop is gone (or stopped): close without awaiting anything on it.
        self._close_nowait(client)
        return True

    async def _aclose(self, client: T, token: int) -> None:
        try:
            await asyncio.wait_for(self.abackend.close(client), self.settings.connect_timeout)
        except asyncio.CancelledError:
            self._close_nowait(client)
            raise
        except Exception as exc:
            logger.debug("Closing a client of pool %r failed: %s", self._label,
                         mask_exception(exc, self._secrets))
            self._close_nowait(client)
        finally:
            if self._claim_close(token):
                self._closed_later()

    def _claim_close(self, token: int) -> bool:
        """Whether this close of ``token`` still owns its slot (maintenance frees the slots
        of closes whose loop died before they ran)."""
        with self._lock:
            return self._loop_closes.pop(token, None) is not None

    def _close_nowait(self, client: T) -> None:
        try:
            self.abackend.close_nowait(client)
        except Exception as exc:
            logger.debug("Closing a client of pool %r failed: %s", self._label,
                         mask_exception(exc, self._secrets))

    # ------------------------------------------------------------------ maintenance

    def _quiet_until_locked(self, now: float) -> float:
        """An event loop may close unseen, leaving idle clients to close: a round a
        second while there are idle clients."""
        due = super()._quiet_until_locked(now)
        return min(due, now + 1.0) if self._idle else due

    def maintain(self, now: float) -> float | None:
        """One round of upkeep, after dropping what dead event loops left behind."""
        if self._state is OPEN and not fork.forked_since(self._pid):
            self._reap_dead_loops()
        return super().maintain(now)

    def _reap_dead_loops(self) -> None:
        """Close idle clients of closed loops, forget their waiters, free their creations."""
        with self._lock:
            dead = [e for e in self._idle if not _loop_alive(e.loop)]
            if dead:
                self._idle = [e for e in self._idle if e not in dead]
                self._to_close_locked(dead)
            for waiter in [w for w in self._waiters if not _loop_alive(w.loop)]:
                self._waiters.remove(waiter)
            unclosed = [t for t, loop in self._loop_closes.items() if loop.is_closed()]
            for token in unclosed:
                del self._loop_closes[token]
            if unclosed:
                self._drop_locked(len(unclosed), closing=True)
            lost = [t for t, (loop, _) in self._loop_creations.items() if loop.is_closed()]
            for token in lost:
                _, probe = self._loop_creations.pop(token)
                self._drop_locked(creating=True, probe=probe)
        self._close_entries(dead)
        if lost or unclosed:
            self._after_shrink()

    def _keepalive(self, entry: Entry[T]) -> None:
        """(maintenance thread) Check an idle client on its own loop, if it still runs."""
        loop = entry.loop
        if not _loop_alive(loop):
            self._discard(entry, broken=False)
            return
        assert loop is not None
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._akeepalive(entry), loop)
                return
            except RuntimeError:
                pass
        self._keepalive_done(entry, None, _monotonic())  # cannot check it now; later

    async def _akeepalive(self, entry: Entry[T]) -> None:
        now = _monotonic()
        try:
            await asyncio.wait_for(self.abackend.check(entry.client), self.settings.connect_timeout)
        except asyncio.CancelledError:
            self._discard(entry, broken=False)
            raise
        except Exception as exc:
            self._keepalive_done(entry, exc, now)
            return
        self._keepalive_done(entry, None, now)

    # ------------------------------------------------------------------ health

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Borrow or open one client and validate it, from sync code; raise a
        :class:`PoolError` if it cannot.

        An idle client is checked on its own loop while that loop runs; otherwise a client
        is opened, checked and closed on a fresh loop in a thread. Bounded by ``timeout``.
        """
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        deadline = _monotonic() + timeout
        if fork.forked_since(self._pid):
            self._after_fork_in_child()
        current = _running_loop()
        while True:
            entry: Entry[T] | None = None
            reserved = False
            with self._lock:
                if self._state is not OPEN:
                    raise PoolClosed(f"Pool {self._label!r} is {self._state}.")
                if self._failing and (self._probing or _monotonic() < self._next_probe):
                    raise self._fail_fast_error()
                for index in range(len(self._idle) - 1, -1, -1):
                    candidate = self._idle[index].loop
                    if (candidate is not None and candidate is not current
                            and candidate.is_running() and not candidate.is_closed()):
                        entry = self._idle.pop(index)
                        break
                if entry is None and self._recently_reached(_monotonic()):
                    # In a WSGI worker no loop of the pool's runs here: rather than open and
                    # close a client per probe, trust an answer as recent as CHECK trusts.
                    return
                if entry is None and self._size < self._max_size:
                    self._reserve_locked()
                    reserved = True
            if entry is not None:
                self._check_on_loop(entry, deadline, timeout)
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
                raise PoolTimeout(f"Pool {self._label!r}: no client to check within "
                                  f"{timeout:g}s; {state}.")
            time.sleep(min(0.05, remaining))

    def _check_on_loop(self, entry: Entry[T], deadline: float, timeout: float) -> None:
        assert entry.loop is not None
        try:
            future = asyncio.run_coroutine_threadsafe(self._check_taken(entry, deadline),
                                                      entry.loop)
        except RuntimeError:
            self._give_back(entry)
            raise PoolTimeout(f"Pool {self._label!r}: the event loop of its clients stopped "
                              "before the check could run.") from None
        try:
            future.result(max(0.0, deadline - _monotonic()))
        except PoolError:
            raise
        except TimeoutError:
            raise PoolTimeout(f"Pool {self._label!r}: checking a client to {self._target} "
                              f"took longer than {timeout:g}s.") from None

    async def _check_taken(self, entry: Entry[T], deadline: float) -> None:
        try:
            await asyncio.wait_for(self.abackend.check(entry.client),
                                   max(0.001, deadline - _monotonic()))
        except asyncio.CancelledError:
            self._discard(entry, broken=False)
            raise
        except Exception as exc:
            error = self._check_error(exc)
            self._discard(entry, broken=True)
            raise error from exc
        entry.checked(_monotonic())
        self._reached(_monotonic())
        self._give_back(entry)

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
                    self._drop_locked(creating=True)

        thread = threading.Thread(target=run, daemon=True,
                                  name=f"pooled_clients-check-{self._label}")
        thread.start()
        thread.join(max(0.0, deadline - _monotonic()) + 0.05)
        if not outcome:
            raise PoolTimeout(f"Pool {self._label!r}: opening and checking a client to "
                              f"{self._target} took longer than {timeout:g}s.")
        error = outcome[0]
        if error is not None:
            raise error

    async def _fresh_check(self, deadline: float) -> None:
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise PoolTimeout(f"Pool {self._label!r}: no time left to check a client.")
        try:
            client = await self._acreate_one(min(remaining, self.settings.connect_timeout))
        except Exception as exc:
            self._attempt_failed(exc, 1, 1)
            raise ClientCreationError(
                f"Pool {self._label!r} could not open a client to {self._target}: "
                f"{mask_exception(exc, self._secrets) or 'timed out'}."
            ) from exc
        with self._lock:
            self._created += 1
        try:
            await asyncio.wait_for(self.abackend.check(client),
                                   max(0.001, deadline - _monotonic()))
            self._reached(_monotonic())
        except Exception as exc:
            raise self._check_error(exc) from exc
        finally:
            with self._lock:
                self._closed += 1
            try:
                await asyncio.wait_for(self.abackend.close(client), 1.0)
            except Exception:
                self._close_nowait(client)
