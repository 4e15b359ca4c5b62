"""Pools with named endpoints: primary/replica databases, one client per tenant or API key.

An :class:`EndpointPool` holds one :class:`EndpointSubpool` per endpoint, each with its own
backend (built from the pool's ``OPTIONS`` with the endpoint's merged over them) and its own
``MAX_SIZE``. The sub-pools share one lock, which lets a sub-pool count every endpoint's
clients when it reserves a new one: ``TOTAL_MAX_SIZE`` is a hard cap across the pool. When
the cap is reached and another endpoint has idle clients, its least recently used one is
closed to make room, so callers of a busy endpoint are not starved by idle ones elsewhere.

Without an endpoint name, ``ROUTING`` picks among the endpoints that are not failing:
``"first"`` (declaration order: the first is preferred, the others take over when it
fails), ``"round_robin"`` or ``"least_busy"`` (fewest clients in use or awaited relative to
MAX_SIZE). An endpoint fails when a client fails its check or breaks (every idle client is
presumed dead and a probe is started at once) or when it cannot create clients; routing
skips it until a probe connects again. A routed acquire that meets an endpoint which cannot
be reached moves on to the next one within the same timeout; when every endpoint fails it
raises the preferred endpoint's :class:`ClientCreationError`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pooled_clients.backends.base import ClientBackend
from pooled_clients.exceptions import (
    ClientCreationError,
    PoolDoesNotExist,
    PoolError,
    PoolTimeout,
)
from pooled_clients.masking import mask_exception, mask_text
from pooled_clients.pool import Pool, PoolSettings
from pooled_clients.stats import PoolStats

if TYPE_CHECKING:
    from pooled_clients.conf import PoolDefinition

T = TypeVar("T")

__all__ = ["EndpointPool", "EndpointSubpool"]

logger = logging.getLogger("pooled_clients")

_getframe = sys._getframe
_monotonic = time.monotonic

ROUTINGS = ("first", "round_robin", "least_busy")


class _Group:
    """What the sub-pools of one endpoint pool share: a lock and the total cap."""

    def __init__(self, total_max_size: int | None) -> None:
        self.total_max_size = total_max_size
        self.subpools: list[EndpointSubpool[Any]] = []
        # Re-entrant so that the endpoint pool can hold it around every sub-pool's snapshot.
        self._lock = threading.RLock()
        self._pid = os.getpid()

    def lock(self) -> threading.RLock:
        """The shared lock; a fresh one in a forked child (the parent's may be held)."""
        pid = os.getpid()
        if self._pid != pid:
            self._lock = threading.RLock()
            self._pid = pid
        return self._lock

    def room_locked(self, requester: EndpointSubpool[Any]) -> bool:
        """(shared lock held) Whether the total cap allows one more client, closing an idle
        client of another endpoint when that is what it takes."""
        total = self.total_max_size
        if total is None:
            return True
        if sum(sub._size for sub in self.subpools) < total:
            return True
        donors = [sub for sub in self.subpools if sub is not requester and sub._idle]
        if not donors:
            return False
        max(donors, key=lambda sub: len(sub._idle))._give_up_idle_locked()
        return True


class EndpointSubpool(Pool[T]):
    """The pool of one endpoint. Its stats report the endpoint pool's alias; its messages
    name the endpoint (``Pool 'replicated[replica-1]' ...``)."""

    def __init__(self, alias: str, endpoint: str, backend: ClientBackend[T],
                 settings: PoolSettings, *, backend_path: str, group: _Group) -> None:
        self.endpoint = endpoint
        self.pool_alias = alias
        self._group = group
        self._suspect = False
        super().__init__(f"{alias}[{endpoint}]", backend, settings, backend_path=backend_path)

    def _reset_state(self) -> None:
        super()._reset_state()
        self._lock = self._group.lock()  # type: ignore[assignment]
        self._drained = threading.Condition(self._lock)
        self._suspect = False

    @property
    def routable(self) -> bool:
        """True while routing may pick this endpoint: open, neither failing nor suspect."""
        return self._state == "open" and not self._failing and not self._suspect

    @property
    def load(self) -> float:
        """Clients in use or awaited, relative to MAX_SIZE (read without the lock)."""
        return (len(self._in_use) + len(self._waiters)) / self._max_size

    # ------------------------------------------------------------------ shared cap

    def _has_room_locked(self) -> bool:
        return self._size < self._max_size and self._group.room_locked(self)

    def _give_up_idle_locked(self) -> None:
        """(lock held) Close the least recently used idle client so another endpoint can
        open one; closing happens off the lock."""
        entry = self._idle.pop(0)
        self._size -= 1
        self._closed += 1
        threading.Thread(target=self._close_entries, args=([entry],), daemon=True,
                         name=f"pooled_clients-close-{self.alias}").start()

    def _poke_siblings(self) -> None:
        """Let siblings waiting on the total cap use room this endpoint just freed."""
        if self._group.total_max_size is None:
            return
        for sibling in self._group.subpools:
            if sibling is not self and len(sibling._waiters) > sibling._creating:
                Pool._after_shrink(sibling)

    def _after_shrink(self) -> None:
        super()._after_shrink()
        self._poke_siblings()

    def release(self, client: T, discard: bool = False) -> None:
        super().release(client, discard)
        self._poke_siblings()

    def _release(self, client: T, discard: bool, exc: BaseException | None) -> None:
        super()._release(client, discard, exc)
        self._poke_siblings()

    def _creation_failed(self, exc: BaseException | None, probe: bool) -> None:
        super()._creation_failed(exc, probe)
        self._poke_siblings()

    # ------------------------------------------------------------------ failover

    def _purge_stale_locked(self, now: float) -> None:
        super()._purge_stale_locked(now)
        if self._state == "open" and not self._suspect:
            # A client failed its check or broke: the endpoint is presumed down until a
            # probe connects, so routing stops sending callers to it at once.
            self._suspect = True
            logger.warning("Endpoint %r of pool %r failed a check: %s; routing skips it until "
                           "it answers again.", self.endpoint, self.pool_alias,
                           self._last_error_text())
            from pooled_clients import maintenance

            maintenance.wake()

    def _add_created(self, client: T) -> None:
        super()._add_created(client)
        if self._suspect:
            self._suspect = False
            logger.info("Endpoint %r of pool %r answers again.", self.endpoint, self.pool_alias)

    def maintain(self, now: float) -> float | None:
        """The engine's upkeep, plus a probe of a suspect endpoint."""
        delay = super().maintain(now)
        if delay is None:
            return None
        if self._suspect:
            spawn = False
            with self._lock:
                if (self._suspect and self._state == "open" and not self._failing
                        and not self._probing and self._has_room_locked()):
                    self._probing = True
                    self._size += 1
                    self._creating += 1
                    spawn = True
            if spawn:
                self._spawn_creator(probe=True)
            delay = min(delay, 0.1)
        self._poke_siblings()
        return delay

    def stats(self) -> PoolStats:
        """This endpoint's snapshot, under the endpoint pool's alias."""
        stats = super().stats()
        changes: dict[str, Any] = {"alias": self.pool_alias}
        if self._suspect and stats.state == "open":
            changes.update(state="failing", healthy=False)
        return dataclasses.replace(stats, **changes)


class _EndpointConnection(Generic[T]):
    """``with pool.connection(endpoint=...) as client:`` for an endpoint pool."""

    __slots__ = ("_client", "_endpoint", "_pool", "_sub", "_timeout")

    def __init__(self, pool: EndpointPool[T], timeout: float | None,
                 endpoint: str | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._endpoint = endpoint

    def __enter__(self) -> T:
        self._client, self._sub = self._pool._route_checkout(
            self._timeout, _getframe(1), self._endpoint)
        return self._client

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        sub = self._sub
        sub._release(self._client, exc_type is not None and sub._discard_on_error, exc)


class _AsyncEndpointConnection(Generic[T]):
    """``async with pool.aconnection(endpoint=...) as client:`` for an endpoint pool."""

    __slots__ = ("_client", "_endpoint", "_frame", "_pool", "_sub", "_timeout")

    def __init__(self, pool: EndpointPool[T], timeout: float | None, endpoint: str | None,
                 frame: FrameType) -> None:
        self._pool = pool
        self._timeout = timeout
        self._endpoint = endpoint
        self._frame = frame

    async def __aenter__(self) -> T:
        self._client, self._sub = await self._pool._aroute_checkout(
            self._timeout, self._frame, self._endpoint)
        return self._client

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        from pooled_clients.aio import release

        sub = self._sub
        await release(sub, self._client, exc_type is not None and sub._discard_on_error, exc)


class EndpointPool(Pool[T]):
    """A pool of named endpoints with the surface of :class:`Pool`.

    ``acquire(endpoint="replica-1")`` uses one endpoint (an unknown name raises
    :class:`PoolDoesNotExist`); without a name ``ROUTING`` picks, with failover.
    ``subpools`` are the per-endpoint pools and ``backends`` their backends.
    """

    def __init__(self, alias: str, subpools: Sequence[EndpointSubpool[T]], *,
                 routing: str = "first", total_max_size: int | None = None,
                 settings: PoolSettings | None = None, backend_path: str | None = None
                 ) -> None:
        # Pool.__init__ is deliberately not called: the clients live in the sub-pools.
        if not subpools:
            raise ValueError("an endpoint pool needs at least one endpoint")
        if routing not in ROUTINGS:
            raise ValueError(f"routing {routing!r} is not one of {', '.join(ROUTINGS)}")
        self.alias = alias
        self.subpools: list[EndpointSubpool[T]] = list(subpools)
        self.backends: list[ClientBackend[T]] = [sub.backend for sub in self.subpools]
        self.backend = self.backends[0]
        self.backend_path = backend_path or self.subpools[0].backend_path
        self.routing = routing
        self.total_max_size = total_max_size
        capacity = sum(sub.settings.max_size for sub in self.subpools)
        if total_max_size is not None:
            capacity = min(capacity, total_max_size)
        base = settings or self.subpools[0].settings
        self.settings = dataclasses.replace(
            base, max_size=capacity, min_size=sum(sub.settings.min_size for sub in self.subpools))
        self._max_size = capacity
        self._by_name = {sub.endpoint: sub for sub in self.subpools}
        self._group = self.subpools[0]._group
        self._target = ", ".join(f"{sub.endpoint}={sub.target}" for sub in self.subpools)
        self._secrets = tuple(secret for sub in self.subpools for secret in sub._secrets)
        self._counter = itertools.count()
        self._started = False
        self._pid = os.getpid()

    @classmethod
    def from_definition(cls, definition: PoolDefinition) -> EndpointPool[Any]:
        """Build the pool and one sub-pool per endpoint from a parsed definition."""
        # An async backend with ENDPOINTS never gets here: parsing rejects it (E016).
        group = _Group(definition.total_max_size)
        for spec in definition.endpoints:
            backend = definition.backend_class(definition.alias, spec.options)
            settings = dataclasses.replace(definition.settings, max_size=spec.max_size,
                                           min_size=spec.min_size)
            group.subpools.append(EndpointSubpool(
                definition.alias, spec.name, backend, settings,
                backend_path=definition.backend_path, group=group))
        return EndpointPool(definition.alias, group.subpools, routing=definition.routing,
                            total_max_size=definition.total_max_size,
                            settings=definition.settings, backend_path=definition.backend_path)

    def __repr__(self) -> str:
        names = ", ".join(self._by_name)
        return (f"<EndpointPool {self.alias!r} {self.backend_path} endpoints=[{names}] "
                f"routing={self.routing}>")

    __str__ = __repr__

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names, in declaration order."""
        return tuple(self._by_name)

    @property
    def closed(self) -> bool:
        """True once the pool was closed or retired."""
        return all(sub.closed for sub in self.subpools)

    def subpool(self, endpoint: str) -> EndpointSubpool[T]:
        """The pool of one endpoint; :class:`PoolDoesNotExist` for an unknown name."""
        try:
            return self._by_name[endpoint]
        except KeyError:
            raise PoolDoesNotExist(
                f"Pool {self.alias!r} has no endpoint {endpoint!r} (endpoints: "
                f"{', '.join(repr(name) for name in self._by_name)})."
            ) from None

    # ------------------------------------------------------------------ checkout / release

    def connection(  # type: ignore[override]
            self, timeout: float | None = None, endpoint: str | None = None
    ) -> _EndpointConnection[T]:
        """Context manager yielding a client of ``endpoint`` (routed when None)."""
        if endpoint is not None:
            self.subpool(endpoint)
        return _EndpointConnection(self, timeout, endpoint)

    def acquire(self, timeout: float | None = None, endpoint: str | None = None) -> T:
        """Check a client out of ``endpoint``, or of the endpoint ``ROUTING`` picks."""
        return self._route_checkout(timeout, _getframe(1), endpoint)[0]

    def release(self, client: T, discard: bool = False) -> None:
        """Return ``client`` to the endpoint it came from."""
        self._release(client, discard, None)

    def aconnection(  # type: ignore[override]
            self, timeout: float | None = None, endpoint: str | None = None
    ) -> _AsyncEndpointConnection[T]:
        """``async with pool.aconnection(endpoint=...) as client:`` (routed when None)."""
        if endpoint is not None:
            self.subpool(endpoint)
        return _AsyncEndpointConnection(self, timeout, endpoint, _getframe(1))

    async def aacquire(self, timeout: float | None = None, endpoint: str | None = None) -> T:
        """:meth:`acquire` for async code: waits without blocking the event loop."""
        return (await self._aroute_checkout(timeout, _getframe(1), endpoint))[0]

    async def arelease(self, client: T, discard: bool = False) -> None:
        """:meth:`release` for async code."""
        from pooled_clients.aio import release

        await release(self._owner_or_raise(client), client, discard, None)

    async def _aroute_checkout(self, timeout: float | None, frame: FrameType,
                               endpoint: str | None) -> tuple[T, EndpointSubpool[T]]:
        from pooled_clients.aio import acquire

        first_error: ClientCreationError | None = None
        for sub, sub_timeout in self._attempts(timeout, endpoint):
            try:
                return await acquire(sub, sub_timeout, frame), sub
            except ClientCreationError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def _checkout(self, timeout: float | None, frame: FrameType,
                  endpoint: str | None = None) -> T:
        return self._route_checkout(timeout, frame, endpoint)[0]

    def _route_checkout(self, timeout: float | None, frame: FrameType,
                        endpoint: str | None) -> tuple[T, EndpointSubpool[T]]:
        first_error: ClientCreationError | None = None
        for sub, sub_timeout in self._attempts(timeout, endpoint):
            try:
                return sub._checkout(sub_timeout, frame), sub
            except ClientCreationError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def _attempts(self, timeout: float | None, endpoint: str | None
                  ) -> Iterator[tuple[EndpointSubpool[T], float | None]]:
        """The sub-pools an acquire tries, each with its timeout: the named endpoint alone,
        or every sub-pool in :meth:`route` order sharing one deadline. Being asked for the
        next one means the previous one was unreachable (a ``ClientCreationError``), so
        after the first the next is tried only while time is left."""
        self._enter_slow_path()
        if endpoint is not None:
            yield self.subpool(endpoint), timeout
            return
        if timeout is None:
            timeout = self.settings.timeout
        deadline = _monotonic() + timeout
        for number, sub in enumerate(self.route()):
            remaining = deadline - _monotonic()
            if number and remaining <= 0:
                return
            yield sub, max(0.0, remaining)

    def route(self) -> list[EndpointSubpool[T]]:
        """The sub-pools in the order a routed acquire tries them: those routing may pick,
        ordered by ``ROUTING``, then the failing ones in declaration order."""
        healthy = [sub for sub in self.subpools if sub.routable]
        failing = [sub for sub in self.subpools if not sub.routable]
        count = len(healthy)
        if count > 1 and self.routing != "first":
            turn = next(self._counter) % count
            if self.routing == "round_robin":
                healthy = healthy[turn:] + healthy[:turn]
            else:
                # Least busy first; ties go round robin so an idle pool still spreads.
                order = sorted(range(count),
                               key=lambda i: (healthy[i].load, (i - turn) % count))
                healthy = [healthy[i] for i in order]
        return healthy + failing

    def owner(self, client: T) -> EndpointSubpool[T] | None:
        """The sub-pool ``client`` is checked out of, or None."""
        key = id(client)
        for sub in self.subpools:
            entry = sub._in_use.get(key)
            if entry is not None and entry.client is client:
                return sub
        return None

    def endpoint_of(self, client: T) -> str | None:
        """The name of the endpoint ``client`` is checked out of, or None."""
        sub = self.owner(client)
        return None if sub is None else sub.endpoint

    def _owner_or_raise(self, client: T) -> EndpointSubpool[T]:
        sub = self.owner(client)
        if sub is None:
            raise PoolError(
                f"Pool {self.alias!r} cannot release {type(client).__name__} object at "
                f"{id(client):#x}: it is not checked out of any of its endpoints (released "
                "twice, or acquired from another pool)."
            )
        return sub

    def _release(self, client: T, discard: bool, exc: BaseException | None) -> None:
        self._owner_or_raise(client)._release(client, discard, exc)

    # ------------------------------------------------------------------ upkeep

    def _start(self) -> None:
        """First use in this process: start (and warm) every endpoint."""
        self._started = True
        for sub in self.subpools:
            if not sub._started:
                sub._start()

    def maintain(self, now: float) -> float | None:
        """Run every endpoint's upkeep (the maintenance thread does this by itself)."""
        delays = [d for d in (sub.maintain(now) for sub in self.subpools) if d is not None]
        return min(delays) if delays else None

    def _after_fork_in_child(self) -> None:
        for sub in self.subpools:
            sub._after_fork_in_child()
        self._pid = os.getpid()
        self._started = False

    # ------------------------------------------------------------------ close

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for clients in use on every endpoint, then close all."""
        self.begin_close()
        self.finish_close(_monotonic() + max(0.0, timeout))

    def begin_close(self) -> None:
        """Refuse new acquires on every endpoint and close idle clients."""
        for sub in self.subpools:
            sub.begin_close()

    def finish_close(self, deadline: float) -> None:
        """Wait for clients in use until ``deadline`` (monotonic), then close the rest."""
        for sub in self.subpools:
            sub.finish_close(deadline)

    def retire(self) -> None:
        """Stop handing out clients on every endpoint without waiting."""
        for sub in self.subpools:
            sub.retire()

    # ------------------------------------------------------------------ stats / health

    def stats(self) -> PoolStats:
        """The totals over every endpoint; ``endpoints`` holds each endpoint's own stats."""
        with self._group.lock():  # one consistent snapshot across the endpoints
            per = {sub.endpoint: sub.stats() for sub in self.subpools}
        values = list(per.values())
        # The slowest endpoint's waits: the figure worth alerting on (each endpoint's own
        # percentiles are in ``endpoints``).
        p50, p95, p99 = (_highest(getattr(s, name) for s in values)
                         for name in ("wait_ms_p50", "wait_ms_p95", "wait_ms_p99"))
        last = max((sub for sub in self.subpools if sub._last_error_at is not None),
                   key=lambda sub: sub._last_error_at or 0.0, default=None)
        last_error = (f"{last.endpoint}: {per[last.endpoint].last_error}"
                      if last is not None and per[last.endpoint].last_error else None)
        states = {s.state for s in values}
        if len(states) == 1 or states & {"closed", "retired"}:
            state = values[0].state
        else:
            state = "open" if any(s.healthy for s in values) else "failing"

        def total(name: str) -> int:
            return sum(int(getattr(s, name)) for s in values)

        return PoolStats(
            alias=self.alias,
            backend=self.backend_path,
            target=self._target,
            pid=values[0].pid,
            min_size=self.settings.min_size,
            max_size=self._max_size,
            size=total("size"),
            idle=total("idle"),
            in_use=total("in_use"),
            waiting=total("waiting"),
            acquired_total=total("acquired_total"),
            released_total=total("released_total"),
            created_total=total("created_total"),
            closed_total=total("closed_total"),
            timeouts_total=total("timeouts_total"),
            errors_total=total("errors_total"),
            check_failures_total=total("check_failures_total"),
            leaks_total=total("leaks_total"),
            wait_ms_p50=p50,
            wait_ms_p95=p95,
            wait_ms_p99=p99,
            healthy=state == "open" and any(s.healthy for s in values),
            last_error=last_error,
            endpoints=per,
            leases=tuple(lease for s in values for lease in s.leases),
            state=state,
            creating=total("creating"),
            timeout=self.settings.timeout,
        )

    def check(self, timeout: float | None = None, *, wait: bool = True,
              endpoint: str | None = None) -> None:
        """Validate one client of ``endpoint``; without a name, of every endpoint at once,
        raising only when none of them works (see :meth:`check_endpoints` for each)."""
        if endpoint is not None:
            self.subpool(endpoint).check(timeout, wait=wait)
            return
        results = self.check_endpoints(timeout, wait=wait)
        errors = [(name, error) for name, error in results.items() if error is not None]
        if len(errors) < len(results):
            return
        preferred = errors[0][1]
        if all(isinstance(error, PoolTimeout) for _, error in errors):
            raise preferred
        detail = "; ".join(f"{name}: {self._describe_error(error)}" for name, error in errors)
        raise ClientCreationError(
            f"Pool {self.alias!r}: no endpoint works ({detail})."
        ) from preferred

    def check_endpoints(self, timeout: float | None = None, *,
                        wait: bool = True) -> dict[str, BaseException | None]:
        """Check every endpoint concurrently within ``timeout``: name -> None when it works,
        else the error."""
        timeout = self.settings.timeout if timeout is None else timeout
        results: dict[str, BaseException | None] = {}

        def run(sub: EndpointSubpool[T]) -> None:
            try:
                sub.check(timeout, wait=wait)
            except Exception as exc:
                results[sub.endpoint] = exc
            else:
                results[sub.endpoint] = None

        if len(self.subpools) == 1:
            run(self.subpools[0])
            return results
        deadline = _monotonic() + timeout
        threads = [threading.Thread(target=run, args=(sub,), daemon=True,
                                    name=f"pooled_clients-check-{sub.alias}")
                   for sub in self.subpools]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Each check bounds itself by ``timeout``; the grace covers thread scheduling.
            thread.join(max(0.0, deadline - _monotonic()) + 0.25)
        return {
            sub.endpoint: results[sub.endpoint] if sub.endpoint in results else PoolTimeout(
                f"Pool {sub.alias!r}: the check did not finish within {timeout:g}s.")
            for sub in self.subpools
        }

    def _describe_error(self, error: BaseException) -> str:
        if isinstance(error, PoolError):
            return self.mask(str(error))
        return mask_exception(error, self._secrets) or type(error).__name__

    def mask(self, text: str) -> str:
        """``text`` with the secrets of every endpoint masked."""
        return mask_text(text, self._secrets)

    def iter_idle_clients(self) -> Iterator[T]:  # pragma: no cover - debugging aid
        """The idle clients of every endpoint (a copy), for debugging."""
        return itertools.chain.from_iterable(sub.iter_idle_clients() for sub in self.subpools)


def _highest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None
