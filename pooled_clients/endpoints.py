"""Pools with named endpoints: primary/replica databases, one client set per tenant.

An :class:`EndpointPool` is a :class:`~pooled_clients.groups.PoolGroup` with one member per
endpoint declared in settings, each with its own backend (built from the pool's ``OPTIONS``
with the endpoint's merged over them) and its own ``MAX_SIZE``, under one
``TOTAL_MAX_SIZE``.

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

import itertools
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pooled_clients.backends.base import ClientBackend
from pooled_clients.core import PoolCore, PoolSettings, clamp_timeout
from pooled_clients.exceptions import PoolDoesNotExist, PoolError
from pooled_clients.groups import (
    AsyncGroupConnection,
    GroupConnection,
    PoolGroup,
    SharedCapacity,
    member_settings,
)
from pooled_clients.pool import Pool
from pooled_clients.stats import PoolStats

if TYPE_CHECKING:
    from pooled_clients.conf import PoolDefinition

T = TypeVar("T")

__all__ = ["ROUTINGS", "EndpointPool"]

_getframe = sys._getframe
_monotonic = time.monotonic

ROUTINGS = ("first", "round_robin", "least_busy")


class EndpointPool(PoolGroup[T]):
    """A pool of named endpoints with the surface of a plain pool.

    ``acquire(endpoint="replica-1")`` uses one endpoint (an unknown name raises
    :class:`PoolDoesNotExist`); without a name ``ROUTING`` picks, with failover.
    ``subpools`` are the per-endpoint pools and ``backends`` their backends.
    """

    member_kind = "endpoint"

    def __init__(self, alias: str, subpools: list[PoolCore[T]], capacity: SharedCapacity, *,
                 routing: str = "first", settings: PoolSettings | None = None,
                 backend_path: str | None = None) -> None:
        if not subpools:
            raise ValueError("an endpoint pool needs at least one endpoint")
        if routing not in ROUTINGS:
            raise ValueError(f"routing {routing!r} is not one of {', '.join(ROUTINGS)}")
        super().__init__(alias, capacity, settings or subpools[0].settings,
                         backend_path=backend_path or subpools[0].backend_path)
        self.subpools = list(subpools)
        self.backends: list[ClientBackend[T]] = [sub.backend for sub in self.subpools]
        self.backend = self.backends[0]
        self.routing = routing
        self._by_name = {str(sub.name): sub for sub in self.subpools}
        self._target = ", ".join(f"{sub.name}={sub.target}" for sub in self.subpools)
        self._counter = itertools.count()

    @classmethod
    def from_definition(cls, definition: PoolDefinition) -> EndpointPool[Any]:
        """Build the pool and one member per endpoint from a parsed definition."""
        # An async backend with ENDPOINTS never gets here: parsing rejects it (E016).
        capacity = SharedCapacity(definition.total_max_size)
        for spec in definition.endpoints:
            backend = definition.backend_class.from_options(definition.alias, spec.options)
            capacity.members.append(Pool(
                definition.alias, backend,
                member_settings(definition.settings, spec.max_size, spec.min_size),
                backend_path=definition.backend_path, capacity=capacity, name=spec.name,
                failover=True))
        return EndpointPool(definition.alias, capacity.members, capacity,
                            routing=definition.routing, settings=definition.settings,
                            backend_path=definition.backend_path)

    def __repr__(self) -> str:
        names = ", ".join(self._by_name)
        return (f"<EndpointPool {self.alias!r} {self.backend_path} endpoints=[{names}] "
                f"routing={self.routing}>")

    __str__ = __repr__

    @property
    def target(self) -> str:
        """``name=target`` of every endpoint, masked."""
        return self._target

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names, in declaration order."""
        return tuple(self._by_name)

    def subpool(self, endpoint: str) -> PoolCore[T]:
        """The pool of one endpoint; :class:`PoolDoesNotExist` for an unknown name."""
        try:
            return self._by_name[endpoint]
        except KeyError:
            raise PoolDoesNotExist(
                f"Pool {self.alias!r} has no endpoint {endpoint!r} (endpoints: "
                f"{', '.join(repr(name) for name in self._by_name)})."
            ) from None

    def endpoint_of(self, client: T) -> str | None:
        """The name of the endpoint ``client`` is checked out of, or None."""
        member = self.owner(client)
        return None if member is None else str(member.name)

    # ------------------------------------------------------------------ checkout

    def connection(self, timeout: float | None = None, endpoint: str | None = None,
                   key: object = None) -> GroupConnection[T]:
        """Context manager yielding a client of ``endpoint`` (routed when None)."""
        self._refuse_key(key)
        if endpoint is not None:
            self.subpool(endpoint)
        return GroupConnection(self, timeout, endpoint)

    def acquire(self, timeout: float | None = None, endpoint: str | None = None,
                key: object = None) -> T:
        """Check a client out of ``endpoint``, or of the endpoint ``ROUTING`` picks."""
        self._refuse_key(key)
        return self._acquire(timeout, _getframe(1), endpoint)

    def aconnection(self, timeout: float | None = None, endpoint: str | None = None,
                    key: object = None) -> AsyncGroupConnection[T]:
        """``async with pool.aconnection(endpoint=...) as client:`` (routed when None)."""
        self._refuse_key(key)
        if endpoint is not None:
            self.subpool(endpoint)
        return AsyncGroupConnection(self, timeout, endpoint, _getframe(1))

    async def aacquire(self, timeout: float | None = None, endpoint: str | None = None,
                       key: object = None) -> T:
        """:meth:`acquire` for async code: waits without blocking the event loop."""
        self._refuse_key(key)
        return await self._aacquire(timeout, _getframe(1), endpoint)

    def _refuse_key(self, key: object) -> None:
        if key is not None:
            raise PoolError(f"Pool {self.alias!r} is not keyed: it has ENDPOINTS, chosen with "
                            "endpoint=, not key=.")

    def _attempts(self, timeout: float | None, selector: Any
                  ) -> Iterator[tuple[PoolCore[T], float | None]]:
        """The named endpoint alone, or every endpoint in :meth:`route` order sharing one
        deadline. Being asked for the next one means the previous one was unreachable (a
        ``ClientCreationError``), so after the first the next is tried only while time is
        left."""
        self._enter_slow_path()
        if selector is not None:
            yield self.subpool(selector), timeout
            return
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        deadline = _monotonic() + timeout
        for number, sub in enumerate(self.route()):
            remaining = deadline - _monotonic()
            if number and remaining <= 0:
                return
            yield sub, max(0.0, remaining)

    def route(self) -> list[PoolCore[T]]:
        """The endpoints in the order a routed acquire tries them: those routing may pick,
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

    # ------------------------------------------------------------------ stats / health

    def stats(self) -> PoolStats:
        """The totals over every endpoint; ``endpoints`` holds each endpoint's own stats."""
        pairs = self._member_stats()
        return self._totals(pairs, endpoints={str(m.name): s for m, s in pairs})

    def check(self, timeout: float | None = None, *, wait: bool = True,
              endpoint: str | None = None) -> None:
        """Validate one client of ``endpoint``; without a name, of every endpoint at once,
        raising only when none of them works (see :meth:`check_endpoints` for each)."""
        if endpoint is not None:
            self.subpool(endpoint).check(timeout, wait=wait)
            return
        self._check_all(self.subpools, timeout, wait)

    def check_endpoints(self, timeout: float | None = None, *,
                        wait: bool = True) -> dict[str, BaseException | None]:
        """Check every endpoint concurrently within ``timeout``: name -> None when it works,
        else the error."""
        results = self.check_members(self.subpools, timeout, wait=wait)
        return {str(member.name): error for member, error in results.items()}
