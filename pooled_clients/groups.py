"""Pools made of member pools: one member per endpoint (declared in settings) or per key
(learned at run time), under one alias and one shared cap.

A member is a plain :class:`~pooled_clients.pool.Pool` (or
:class:`~pooled_clients.aio.AsyncPool`) built with a :class:`SharedCapacity`: the members
share its lock, so a member reserving a slot sees every member's slots, and
``TOTAL_MAX_SIZE`` is a hard cap across the group. When the cap is reached and another
member has idle clients, its least recently used one is closed to make room; the slot is
free only once that client is closed, so the cap holds at the server too. Slots that come
free go to the member whose caller has waited longest (first come, first served across
members).

:class:`PoolGroup` is what an endpoint pool and a keyed pool have in common: checkout and
release through a member, close, retire, stats and health over every member. The two differ
only in how a checkout picks its member (:meth:`PoolGroup._attempts`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, Generic, TypeVar

from pooled_clients import fork
from pooled_clients.core import PoolCore, PoolSettings, clamp_timeout
from pooled_clients.exceptions import ClientCreationError, PoolError, PoolTimeout
from pooled_clients.masking import mask_exception, mask_text
from pooled_clients.stats import PoolStats, merge_views

T = TypeVar("T")

__all__ = ["PoolGroup", "SharedCapacity"]

_getframe = sys._getframe
_monotonic = time.monotonic
_get_ident = threading.get_ident


class SharedCapacity:
    """The TOTAL_MAX_SIZE of a group of member pools, and the lock they share."""

    def __init__(self, total_max_size: int | None) -> None:
        self.total_max_size = total_max_size
        self.members: list[PoolCore[Any]] = []
        # Re-entrant so that the group can hold it around every member's snapshot.
        self._lock = threading.RLock()
        self._pid = os.getpid()
        #: Set when a member was refused room; cleared once no member waits for any. Until
        #: then a release need not look at every member (thousands, in a keyed pool).
        self.refused = False
        #: Slots taken across the group, kept by the members as they take and free them
        #: (so a creation need not add up thousands of members).
        self.used = 0

    @property
    def lock(self) -> threading.RLock:
        """The shared lock; a fresh one in a forked child (the parent's may be held)."""
        pid = os.getpid()
        if self._pid != pid:
            self._lock = threading.RLock()
            self._pid = pid
            self.used = 0  # each member starts afresh in the child too
        return self._lock

    def used_locked(self) -> int:
        """(lock held) Slots taken across the group."""
        return self.used

    def room_locked(self, requester: PoolCore[Any]) -> bool:
        """(lock held) Whether the total cap allows one more client. When it does not,
        start closing one idle client of another member, unless enough closes are under
        way already for the callers who wait without a creation."""
        total = self.total_max_size
        if total is None or self.used < total:
            return True
        closing = sum(member.closing_locked() for member in self.members)
        demand = 1 + sum(member.unmet_locked() for member in self.members)
        if closing < demand:
            donors = [m for m in self.members if m is not requester and m.idle_count_locked()]
            if donors:
                max(donors, key=lambda m: m.idle_count_locked()).give_up_idle_locked()
        self.refused = True
        return False

    def freed(self, member: PoolCore[Any]) -> None:
        """A slot came free (or a client went idle): members whose callers wait with no
        creation started get a chance to use it, longest waiting first."""
        if self.total_max_size is None or not self.refused:
            return
        with self.lock:
            wanting = [m for m in self.members if m is not member and m.wants_room()]
            if not wanting:
                # A caller refused room queues under this lock: none is left waiting.
                if not member.wants_room():
                    self.refused = False
                return
        wanting.sort(key=lambda m: m.oldest_wait())
        for other in wanting:
            other.grow_for_waiters()

    def remove(self, member: PoolCore[Any]) -> None:
        """Forget ``member`` (a key evicted from a keyed pool)."""
        with self.lock:
            if member in self.members:
                self.members.remove(member)


class GroupConnection(Generic[T]):
    """``with pool.connection(...) as client:`` for a group: checked out of one member."""

    __slots__ = ("_client", "_group", "_member", "_selector", "_timeout")

    def __init__(self, group: PoolGroup[T], timeout: float | None, selector: Any) -> None:
        self._group = group
        self._timeout = timeout
        self._selector = selector

    def __enter__(self) -> T:
        self._client, self._member = self._group._checkout(
            self._timeout, _getframe(1), self._selector)
        return self._client

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        member = self._member
        member.release_from(self._client, exc_type is not None and member.discard_on_error,
                            exc)


class AsyncGroupConnection(Generic[T]):
    """``async with pool.aconnection(...) as client:`` for a group."""

    __slots__ = ("_client", "_frame", "_group", "_member", "_selector", "_timeout")

    def __init__(self, group: PoolGroup[T], timeout: float | None, selector: Any,
                 frame: FrameType) -> None:
        self._group = group
        self._timeout = timeout
        self._selector = selector
        self._frame = frame

    async def __aenter__(self) -> T:
        self._client, self._member = await self._group._acheckout(
            self._timeout, self._frame, self._selector)
        return self._client

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        member = self._member
        await member.arelease_from(self._client,
                                   exc_type is not None and member.discard_on_error, exc)


class PoolGroup(Generic[T]):
    """Member pools under one alias; see the module docstring."""

    #: What a member is called in messages ("endpoint", "key").
    member_kind = "member"

    def __init__(self, alias: str, capacity: SharedCapacity, settings: PoolSettings, *,
                 backend_path: str) -> None:
        self.alias = alias
        self.capacity = capacity
        self.total_max_size = capacity.total_max_size
        self.settings = settings
        self.backend_path = backend_path
        self._started = False
        self._pid = os.getpid()
        #: The member of each client checked out by ``acquire`` (by id), so that
        #: ``release`` need not ask every member; checked against the member itself.
        self._holders: dict[int, PoolCore[T]] = {}

    # ------------------------------------------------------------------ what members do

    def members(self) -> list[PoolCore[T]]:
        """The member pools, in order."""
        return list(self.capacity.members)

    def _attempts(self, timeout: float | None, selector: Any
                  ) -> Iterator[tuple[PoolCore[T], float | None]]:
        """The members a checkout tries, each with its timeout. Implemented by the kind."""
        raise NotImplementedError

    @property
    def target(self) -> str:
        """The masked targets of the members."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checkout / release

    def _checkout(self, timeout: float | None, frame: FrameType,
                  selector: Any) -> tuple[T, PoolCore[T]]:
        first_error: ClientCreationError | None = None
        for member, member_timeout in self._attempts(timeout, selector):
            try:
                return member.checkout_from(member_timeout, frame), member
            except ClientCreationError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    async def _acheckout(self, timeout: float | None, frame: FrameType,
                         selector: Any) -> tuple[T, PoolCore[T]]:
        first_error: ClientCreationError | None = None
        for member, member_timeout in self._attempts(timeout, selector):
            try:
                return await member.acheckout_from(member_timeout, frame), member
            except ClientCreationError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def _acquire(self, timeout: float | None, frame: FrameType, selector: Any) -> T:
        """``acquire``: a checkout whose member is remembered for ``release``."""
        client, member = self._checkout(timeout, frame, selector)
        self._holders[id(client)] = member
        return client

    async def _aacquire(self, timeout: float | None, frame: FrameType, selector: Any) -> T:
        """``aacquire``: a checkout whose member is remembered for ``arelease``."""
        client, member = await self._acheckout(timeout, frame, selector)
        self._holders[id(client)] = member
        return client

    def _enter_slow_path(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._started = False
        if not self._started:
            self._started = True
            for member in self.members():
                member.start()

    def start(self) -> None:
        """Start upkeep of every member in this process now (MIN_SIZE fills in the
        background); it starts on first use otherwise."""
        self._enter_slow_path()

    def owner(self, client: T) -> PoolCore[T] | None:
        """The member ``client`` is checked out of, or None."""
        member = self._holders.get(id(client))
        if member is not None and member.holds(client):
            return member
        for member in self.members():
            if member.holds(client):
                return member
        return None

    def _owner_or_raise(self, client: T) -> PoolCore[T] | None:
        """The member ``client`` is checked out of; None for a client inherited across a
        fork (the parent owns it, the child leaves it be); :class:`PoolError` otherwise."""
        member = self.owner(client)
        if member is None:
            if fork.is_abandoned(client):
                return None
            raise PoolError(
                f"Pool {self.alias!r} cannot release {type(client).__name__} object at "
                f"{id(client):#x}: it is not checked out of any of its members (released "
                "twice, or acquired from another pool)."
            )
        return member

    def release(self, client: T, discard: bool = False) -> None:
        """Return ``client`` to the member it came from."""
        member = self._owner_or_raise(client)
        if member is not None:
            self._forget_holder(client, member)
            try:
                member.release_from(client, discard, None)
            except PoolError:
                self._holders[id(client)] = member  # a refused release changed nothing
                raise

    async def arelease(self, client: T, discard: bool = False) -> None:
        """:meth:`release` for async code."""
        member = self._owner_or_raise(client)
        if member is not None:
            self._forget_holder(client, member)
            try:
                await member.arelease_from(client, discard, None)
            except PoolError:
                self._holders[id(client)] = member
                raise

    def _forget_holder(self, client: T, member: PoolCore[T]) -> None:
        """Before ``client`` goes back to ``member`` (where another caller may take it)."""
        key = id(client)
        if self._holders.get(key) is member:
            self._holders.pop(key, None)

    # ------------------------------------------------------------------ upkeep

    def maintain(self, now: float) -> float | None:
        """Run every member's upkeep (the maintenance thread does this by itself)."""
        delays = [d for d in (m.maintain(now) for m in self.members()) if d is not None]
        return min(delays) if delays else None

    @property
    def closed(self) -> bool:
        """True once the pool was closed or retired."""
        return all(member.closed for member in self.members())

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for clients in use on every member, then close all."""
        self.begin_close()
        self.finish_close(_monotonic() + clamp_timeout(timeout))

    def begin_close(self) -> None:
        """Refuse new acquires on every member and close idle clients."""
        for member in self.members():
            member.begin_close()

    def finish_close(self, deadline: float) -> None:
        """Wait for clients in use until ``deadline`` (monotonic), then close the rest."""
        for member in self.members():
            member.finish_close(deadline)

    def retire(self) -> None:
        """Stop handing out clients on every member without waiting."""
        for member in self.members():
            member.retire()

    def drain(self) -> None:
        """Replace every client of every member: idle ones close now, ones in use when they
        are released; nothing waiting fails."""
        for member in self.members():
            member.drain()

    def wait(self, timeout: float = 30.0) -> None:
        """Block until every member has its MIN_SIZE clients open; :class:`PoolTimeout`
        if they are not within ``timeout``."""
        deadline = _monotonic() + clamp_timeout(timeout)
        self._enter_slow_path()
        for member in self.members():
            member.wait(max(0.0, deadline - _monotonic()))

    # ------------------------------------------------------------------ stats / health

    def wait_sources(self) -> list[PoolCore[T]]:
        """The pools whose acquire waits make up this pool's (each member)."""
        return self.members()

    def _member_stats(self) -> list[tuple[PoolCore[T], PoolStats]]:
        with self.capacity.lock:  # one consistent snapshot across the members
            return [(m, m.stats()) for m in self.members()]

    def _totals(self, pairs: list[tuple[PoolCore[T], PoolStats]], **extra: Any) -> PoolStats:
        """The totals over ``pairs`` (member, its stats)."""
        values = [s for _, s in pairs]
        # The slowest member's waits: the figure worth alerting on.
        p50, p95, p99 = (_highest(getattr(s, name) for s in values)
                         for name in ("wait_ms_p50", "wait_ms_p95", "wait_ms_p99"))
        failed = [(m.last_error_at(), m, s) for m, s in pairs
                  if m.last_error_at() is not None and s.last_error]
        last_error = last_error_at = None
        recovered = False
        if failed:
            _, member, latest = max(failed, key=lambda item: item[0] or 0.0)
            last_error = f"{self._describe_member(member)}: {latest.last_error}"
            last_error_at, recovered = latest.last_error_at, latest.recovered
        states = {s.state for s in values}
        if not values:
            state = "open"
        elif len(states) == 1 or states & {"closed", "retired"}:
            state = values[0].state
        else:
            state = "open" if any(s.healthy for s in values) else "failing"

        def total(name: str) -> int:
            return sum(int(getattr(s, name)) for s in values)

        capacity = sum(m.settings.max_size for m, _ in pairs)
        if self.total_max_size is not None:
            capacity = min(capacity, self.total_max_size) if values else self.total_max_size
        return PoolStats(
            alias=self.alias,
            backend=self.backend_path,
            target=self.target,
            pid=os.getpid(),
            min_size=sum(m.settings.min_size for m, _ in pairs),
            max_size=capacity,
            size=total("size"),
            idle=total("idle"),
            in_use=total("in_use"),
            waiting=total("waiting"),
            acquired_total=total("acquired_total") + extra.pop("acquired_extra", 0),
            released_total=total("released_total") + extra.pop("released_extra", 0),
            created_total=total("created_total") + extra.pop("created_extra", 0),
            closed_total=total("closed_total") + extra.pop("closed_extra", 0),
            timeouts_total=total("timeouts_total") + extra.pop("timeouts_extra", 0),
            errors_total=total("errors_total") + extra.pop("errors_extra", 0),
            check_failures_total=total("check_failures_total")
            + extra.pop("check_failures_extra", 0),
            leaks_total=total("leaks_total") + extra.pop("leaks_extra", 0),
            wait_ms_p50=p50,
            wait_ms_p95=p95,
            wait_ms_p99=p99,
            healthy=state == "open" and (not values or any(s.healthy for s in values)),
            last_error=last_error,
            last_error_at=last_error_at,
            recovered=recovered,
            leases=tuple(lease for s in values for lease in s.leases),
            by_view=merge_views(s.by_view for s in values),
            state=state,
            creating=total("creating"),
            closing=total("closing"),
            timeout=self.settings.timeout,
            # Every member is drained together: the group's count is any member's.
            drains_total=max((s.drains_total for s in values), default=0),
            last_drained_at=_highest(s.last_drained_at for s in values),
            **extra,
        )

    def _describe_member(self, member: PoolCore[T]) -> str:
        return str(member.name)

    def check_members(self, members: list[PoolCore[T]], timeout: float | None = None, *,
                      wait: bool = True) -> dict[PoolCore[T], BaseException | None]:
        """Check ``members`` concurrently within ``timeout``: member -> None when it works,
        else the error."""
        timeout = clamp_timeout(self.settings.timeout if timeout is None else timeout)
        results: dict[PoolCore[T], BaseException | None] = {}

        def run(member: PoolCore[T]) -> None:
            try:
                member.check(timeout, wait=wait)
            except Exception as exc:
                results[member] = exc
            else:
                results[member] = None

        if len(members) == 1:
            run(members[0])
            return results
        deadline = _monotonic() + timeout
        threads = [threading.Thread(target=run, args=(m,), daemon=True,
                                    name=f"pooled_clients-check-{self.alias}")
                   for m in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Each check bounds itself by ``timeout``; the grace covers thread scheduling.
            thread.join(max(0.0, deadline - _monotonic()) + 0.25)
        return {
            m: results[m] if m in results else PoolTimeout(
                f"Pool {self.alias!r}: the check of {self._describe_member(m)} did not finish "
                f"within {timeout:g}s.")
            for m in members
        }

    def _check_all(self, members: list[PoolCore[T]], timeout: float | None,
                   wait: bool) -> None:
        """Raise only when none of ``members`` works."""
        results = self.check_members(members, timeout, wait=wait)
        errors = [(m, error) for m, error in results.items() if error is not None]
        if len(errors) < len(results):
            return
        preferred = errors[0][1]
        assert preferred is not None
        if all(isinstance(error, PoolTimeout) for _, error in errors):
            raise preferred
        detail = "; ".join(f"{self._describe_member(m)}: {self._describe_error(error)}"
                           for m, error in errors if error is not None)
        raise ClientCreationError(
            f"Pool {self.alias!r}: no {self.member_kind} works ({detail})."
        ) from preferred

    def _describe_error(self, error: BaseException) -> str:
        if isinstance(error, PoolError):
            return self.mask(str(error))
        return mask_exception(error, self.secrets()) or type(error).__name__

    def secrets(self) -> tuple[str, ...]:
        """The literal secrets of every member's backend."""
        return tuple(s for m in self.members() for s in m.secrets())

    def mask(self, text: str) -> str:
        """``text`` with the secrets of every member masked."""
        return mask_text(text, self.secrets())

    def iter_idle_clients(self) -> Iterator[T]:
        """The idle clients of every member (a copy), for debugging."""
        return itertools.chain.from_iterable(m.iter_idle_clients() for m in self.members())


def _highest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def member_settings(settings: PoolSettings, max_size: int, min_size: int) -> PoolSettings:
    """A member's settings: the pool's, with its own MAX_SIZE and MIN_SIZE."""
    return dataclasses.replace(settings, max_size=max_size, min_size=min_size)
