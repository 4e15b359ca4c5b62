"""Keyed pools: clients by a key known only at run time (a tenant's API key, a URL path,
a ``(host, port)``, a database name).

A :class:`KeyedPool` is a :class:`~pooled_clients.groups.PoolGroup` whose members are made
on demand, one per key: a key's first use builds its member pool, with the backend built
from the pool's ``OPTIONS`` and ``backend.key_options(key)`` merged over them. Endpoints are
the same thing declared in settings.

- ``KEYS["MAX"]`` bounds the live keys: a new key beyond it evicts the least recently used
  key with no client in use (or raises :class:`PoolExhausted` when every key is busy).
- ``KEYS["IDLE_TIMEOUT"]`` closes a key with no client in use for that long.
- ``TOTAL_MAX_SIZE`` caps the clients of every key together, at the server: an idle client
  of another key is closed to make room before anyone waits (see
  :class:`~pooled_clients.groups.SharedCapacity`).
- A key is shown only through ``backend.describe_key(key)`` (a short hash by default: a key
  may be a secret); metrics carry no per-key label.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pooled_clients import maintenance
from pooled_clients.backends.base import ClientBackend
from pooled_clients.core import PoolCore, PoolSettings
from pooled_clients.exceptions import PoolError, PoolExhausted
from pooled_clients.groups import (
    AsyncGroupConnection,
    GroupConnection,
    PoolGroup,
    SharedCapacity,
)
from pooled_clients.masking import mask_exception
from pooled_clients.stats import PoolStats

if TYPE_CHECKING:
    from pooled_clients.conf import PoolDefinition

T = TypeVar("T")

__all__ = ["KeyedPool"]

_getframe = sys._getframe
_monotonic = time.monotonic

#: Keys shown on the admin page (the busiest).
TOP_KEYS = 20
#: Recently used keys a health check tries (never opening a client for every key).
HEALTH_KEYS = 3

_COUNTERS = ("acquired_total", "released_total", "created_total", "closed_total",
             "timeouts_total", "errors_total", "check_failures_total", "leaks_total")


class KeyedPool(PoolGroup[T]):
    """A pool whose clients are grouped by a key given at checkout:
    ``pool.connection(key=...)``, ``pool.acquire(key=...)``, ``pool.aconnection(key=...)``.
    """

    member_kind = "key"

    def __init__(self, alias: str, backend_class: type[ClientBackend[T]],
                 options: dict[str, Any], settings: PoolSettings, *, max_keys: int,
                 idle_timeout: float | None, total_max_size: int | None = None,
                 backend_path: str | None = None) -> None:
        path = backend_path or f"{backend_class.__module__}.{backend_class.__qualname__}"
        if total_max_size is None:
            total_max_size = settings.max_size * max_keys
        super().__init__(alias, SharedCapacity(total_max_size), settings, backend_path=path)
        self.backend_class = backend_class
        self.options = dict(options)
        #: Builds nothing: answers ``key_options`` and ``describe_key`` for every key.
        self.backend = backend_class.from_options(
            alias, backend_class.keyed_placeholders() | self.options)
        self.max_keys = max_keys
        self.idle_timeout = idle_timeout
        self._members: dict[Hashable, PoolCore[T]] = {}
        self._used: dict[Hashable, float] = {}
        self._keys_lock = threading.Lock()
        self._evictions = 0
        #: Counters of members evicted and fully closed, so the totals stay monotonic.
        self._gone = dict.fromkeys(_COUNTERS, 0)
        self._retired: list[PoolCore[T]] = []
        self._sweep_name = f"pooled_clients-keys-{alias}-{id(self)}"

    @classmethod
    def from_definition(cls, definition: PoolDefinition) -> KeyedPool[Any]:
        """Build the (empty) pool from a parsed definition with ``KEYS``."""
        keys = definition.keys
        assert keys is not None
        return KeyedPool(definition.alias, definition.backend_class, definition.options,
                         definition.settings, max_keys=keys.max_keys,
                         idle_timeout=keys.idle_timeout,
                         total_max_size=definition.total_max_size,
                         backend_path=definition.backend_path)

    def __repr__(self) -> str:
        return (f"<KeyedPool {self.alias!r} {self.backend_path} keys={len(self._members)}/"
                f"{self.max_keys}>")

    __str__ = __repr__

    @property
    def target(self) -> str:
        """The masked target of the pool's own OPTIONS, and that it is keyed."""
        return f"{self.backend.describe()} (keyed)"

    # ------------------------------------------------------------------ checkout

    def connection(self, timeout: float | None = None, endpoint: str | None = None,
                   key: Hashable | None = None) -> GroupConnection[T]:
        """Context manager yielding a client of ``key``."""
        self._require_key(key, endpoint)
        return GroupConnection(self, timeout, key)

    def acquire(self, timeout: float | None = None, endpoint: str | None = None,
                key: Hashable | None = None) -> T:
        """Check a client of ``key`` out; return it with :meth:`release`."""
        self._require_key(key, endpoint)
        return self._acquire(timeout, _getframe(1), key)

    def aconnection(self, timeout: float | None = None, endpoint: str | None = None,
                    key: Hashable | None = None) -> AsyncGroupConnection[T]:
        """``async with pool.aconnection(key=...) as client:``."""
        self._require_key(key, endpoint)
        return AsyncGroupConnection(self, timeout, key, _getframe(1))

    async def aacquire(self, timeout: float | None = None, endpoint: str | None = None,
                       key: Hashable | None = None) -> T:
        """:meth:`acquire` for async code."""
        self._require_key(key, endpoint)
        return await self._aacquire(timeout, _getframe(1), key)

    def _require_key(self, key: Hashable | None, endpoint: str | None) -> None:
        if endpoint is not None:
            raise PoolError(f"Pool {self.alias!r} is keyed (KEYS): it has no endpoints; pass "
                            "key= instead of endpoint=.")
        if key is None:
            raise PoolError(f"Pool {self.alias!r} is keyed (KEYS): pass key= to say whose "
                            "client you want.")
        try:
            hash(key)
        except TypeError:
            raise PoolError(f"Pool {self.alias!r}: a key must be hashable, not "
                            f"{type(key).__name__} (use a str, a tuple, a frozenset).") from None

    def _attempts(self, timeout: float | None, selector: Any
                  ) -> Iterator[tuple[PoolCore[T], float | None]]:
        self._enter_slow_path()
        yield self.member(selector), timeout

    def _enter_slow_path(self) -> None:
        if not self._started and self.idle_timeout is not None:
            ref = weakref.ref(self)

            def sweep() -> None:
                pool = ref()
                if pool is not None:
                    pool.sweep(_monotonic())

            maintenance.add_periodic(self._sweep_name,
                                     max(0.05, min(self.idle_timeout / 2, 5.0)), sweep)
        super()._enter_slow_path()

    # ------------------------------------------------------------------ members

    def member(self, key: Hashable) -> PoolCore[T]:
        """The pool of ``key``, built on its first use (evicting an idle key at KEYS MAX)."""
        now = _monotonic()
        member = self._members.get(key)
        if member is not None and not member.closed:
            self._used[key] = now
            return member
        evicted: list[PoolCore[T]] = []
        with self._keys_lock:
            member = self._members.get(key)
            if member is None or member.closed:
                member = self._build_member(key, evicted)
            self._used[key] = now
        for old in evicted:
            old.retire()
        self._forget_closed()
        return member

    def _build_member(self, key: Hashable, evicted: list[PoolCore[T]]) -> PoolCore[T]:
        """(keys lock held) Build the member of ``key``, evicting to stay within MAX."""
        self._members.pop(key, None)
        while len(self._members) >= self.max_keys:
            victim = self._least_recently_used_idle()
            if victim is None:
                raise PoolExhausted(
                    f"Pool {self.alias!r} has {len(self._members)} keys with clients in use "
                    f"(KEYS['MAX']={self.max_keys}): none can make room for a new key.")
            evicted.append(self._evict_locked(victim))
        try:
            options = self.options | self.backend.key_options(key)
            backend = self.backend_class.from_options(self.alias, options)
        except Exception as exc:
            raise PoolError(
                f"Pool {self.alias!r}: key {self.backend.describe_key(key)} cannot be used: "
                f"{mask_exception(exc, self.backend.secrets())}") from None
        member: PoolCore[T]
        kwargs: dict[str, Any] = {"backend_path": self.backend_path,
                                  "capacity": self.capacity,
                                  "name": self.backend.describe_key(key)}
        if self.backend_class.is_async:
            from pooled_clients.aio import AsyncPool

            member = AsyncPool(self.alias, backend, self.settings,  # type: ignore[arg-type]
                               **kwargs)
        else:
            from pooled_clients.pool import Pool

            member = Pool(self.alias, backend, self.settings, **kwargs)
        with self.capacity.lock:
            self.capacity.members.append(member)
        self._members[key] = member
        if self._started:
            member.start()
        return member

    def _least_recently_used_idle(self) -> Hashable | None:
        """(keys lock held) The least recently used key with nothing in use or awaited."""
        best: Hashable | None = None
        best_used = float("inf")
        for key, member in self._members.items():
            used = self._used.get(key, 0.0)
            if used < best_used and not member.busy():
                best, best_used = key, used
        return best

    def _evict_locked(self, key: Hashable) -> PoolCore[T]:
        """(keys lock held) Drop ``key``; its member is retired by the caller, off the lock.
        Its slots stay counted in the shared cap until its clients are closed."""
        member = self._members.pop(key)
        self._used.pop(key, None)
        self._evictions += 1
        self._retired.append(member)
        return member

    def _forget_closed(self) -> None:
        """Fold retired members whose clients are all closed into the totals."""
        if not self._retired:
            return
        with self._keys_lock:
            done = [(m, s) for m in self._retired
                    if (s := m.stats()).size + s.closing == 0]
            for member, stats in done:
                self._retired.remove(member)
                for name in _COUNTERS:
                    self._gone[name] += int(getattr(stats, name))
                self.capacity.remove(member)

    def sweep(self, now: float) -> None:
        """Close the keys with no client in use for KEYS IDLE_TIMEOUT (maintenance thread)."""
        if self.idle_timeout is None or self.closed_for_good:
            return
        evicted: list[PoolCore[T]] = []
        with self._keys_lock:
            for key, member in list(self._members.items()):
                if now - self._used.get(key, now) > self.idle_timeout and not member.busy():
                    evicted.append(self._evict_locked(key))
        for member in evicted:
            member.retire()
        self._forget_closed()

    def members(self) -> list[PoolCore[T]]:
        """Every member, live and evicted ones still closing clients."""
        return list(self.capacity.members)

    def live_keys(self) -> int:
        """How many keys have a member now."""
        return len(self._members)

    # ------------------------------------------------------------------ close

    closed_for_good = False

    def begin_close(self) -> None:
        """Refuse new acquires on every key and close idle clients."""
        self.closed_for_good = True
        maintenance.remove_periodic(self._sweep_name)
        super().begin_close()

    def retire(self) -> None:
        """Stop handing out clients on every key without waiting."""
        self.closed_for_good = True
        maintenance.remove_periodic(self._sweep_name)
        super().retire()

    @property
    def closed(self) -> bool:
        """True once the pool was closed or retired."""
        return self.closed_for_good

    # ------------------------------------------------------------------ stats / health

    def stats(self, key: Hashable | None = None) -> PoolStats:
        """The totals over every key (``keys``: live keys; ``top_keys``: the busiest,
        by ``describe_key``); with ``key``, that key's own stats."""
        if key is not None:
            member = self._members.get(key)
            if member is None:
                raise PoolError(f"Pool {self.alias!r} has no live key "
                                f"{self.backend.describe_key(key)}.")
            return member.stats()
        self._forget_closed()
        members = self.members()
        with self.capacity.lock:
            per = [(m, m.stats()) for m in members]
        live = set(map(id, self._members.values()))
        busiest = sorted((s for m, s in per if id(m) in live),
                         key=lambda s: (s.in_use, s.acquired_total), reverse=True)[:TOP_KEYS]
        extra: dict[str, Any] = {f"{name.removesuffix('_total')}_extra": self._gone[name]
                                 for name in _COUNTERS}
        return self._totals(per, keys=len(live), key_evictions_total=self._evictions,
                            top_keys={str(s.name): s for s in busiest}, **extra)

    def check(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Validate the most recently used keys (never opening a client for every key):
        healthy while one of them works, or when no key was used yet."""
        with self._keys_lock:
            recent = sorted(self._members, key=lambda k: self._used.get(k, 0.0),
                            reverse=True)[:HEALTH_KEYS]
            members = [self._members[k] for k in recent]
        if members:
            self._check_all(members, timeout, wait)

    def _describe_member(self, member: PoolCore[T]) -> str:
        return f"key {member.name}"
