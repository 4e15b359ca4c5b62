"""Every pool kind against a model, from several threads and tasks at once.

``Pool``, ``AsyncPool`` and an ``EndpointPool`` (two ``Pool`` members under one
``TOTAL_MAX_SIZE``) are driven through random sequences of acquire, release, discard,
break (a client found broken on release), expire (``presume_dead``, and a short
MAX_LIFETIME), check failure (an idle client whose server went away), fork (a real
``os.fork()``, checked in the child) and close. Each caller is a thread or an event-loop
task that may block in a wait while the next steps run.

After every step, once nothing is in flight but waits: size = idle + in use + creating; the
clients open at the fake server (counted from the start of ``create`` to the end of
``close``) never exceeded MAX_SIZE or TOTAL_MAX_SIZE, and are exactly the idle and held
ones; no client was handed out twice, closed, broken, condemned or expired; counters only
grow; every waiter was served or failed within its timeout; nobody waits while there is
room.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import os
import queue
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pooled_clients.aio import AsyncPool
from pooled_clients.backends.base import AsyncClientBackend, ClientBackend
from pooled_clients.endpoints import EndpointPool
from pooled_clients.exceptions import ClientCreationError, PoolClosed, PoolError, PoolTimeout
from pooled_clients.groups import SharedCapacity, member_settings
from pooled_clients.pool import Pool, PoolSettings
from tests.waiting import async_wait_until, wait_until

pytestmark = [
    pytest.mark.timeout(180),
    # The pools' own threads draw jitter from ``random`` while Hypothesis draws data.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

#: How late a waiter may come back after its timeout (thread scheduling on a busy machine).
GRACE = 0.5
#: An AsyncPool frees a slot when it schedules a close on the event loop, not once the close
#: is done, so MAX_SIZE does not hold at the server (see the strict xfail
#: ``test_an_async_pool_frees_a_slot_only_once_its_client_is_closed``). Its model checks
#: everything else; set this to False when that test passes.
KNOWN_ASYNC_CAP_OVERSHOOT = False
TIMEOUTS = (0.0, 0.05, 0.25)
MOVES = ("size", "idle", "in_use", "created_total", "closed_total")
COUNTERS = ("acquired_total", "released_total", "created_total", "closed_total",
            "timeouts_total", "errors_total", "check_failures_total")


class Client:
    def __init__(self, number: int, member: str) -> None:
        self.number = number
        self.member = member
        self.pid = os.getpid()
        self.closed = False
        self.dead = False  # its server went away: a check fails
        self.broken = False  # its holder found it broken
        self.dirty = False  # its reset fails (a transaction that cannot be rolled back)
        self.condemned = False  # presumed dead: never to be handed out again
        self.holder: str | None = None
        self.first_out: float | None = None

    def __repr__(self) -> str:
        return f"<client {self.member}{self.number}>"


class Ledger:
    """What the servers see: each client from the start of its creation to the end of its
    close, per member and in total, and every rule broken on the way."""

    def __init__(self, caps: dict[str, int], total_cap: int | None) -> None:
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)
        self.clients: list[Client] = []
        self.caps = caps
        self.total_cap = total_cap
        self.opening: Counter[str] = Counter()
        self.violations: list[str] = []
        #: Clients open at once beyond a cap, kept apart: see KNOWN_ASYNC_CAP_OVERSHOOT.
        self.over_cap: list[str] = []
        self.closing_held_ok = False

    def total(self) -> int:
        return sum(self.opening.values())

    def begin_create(self, member: str) -> None:
        with self.lock:
            self.opening[member] += 1
            if self.opening[member] > self.caps[member]:
                self.over_cap.append(f"{self.opening[member]} clients of {member} open at "
                                       f"once, MAX_SIZE={self.caps[member]}")
            if self.total_cap is not None and self.total() > self.total_cap:
                self.over_cap.append(f"{self.total()} clients open at once, "
                                       f"TOTAL_MAX_SIZE={self.total_cap}")

    def created(self, member: str) -> Client:
        with self.lock:
            client = Client(next(self.numbers), member)
            self.clients.append(client)
            return client

    def close(self, client: Client) -> None:
        with self.lock:
            if client.closed:
                self.violations.append(f"{client} closed twice")
                return
            if client.holder is not None and not self.closing_held_ok:
                self.violations.append(f"{client} closed while {client.holder} holds it")
            client.closed = True
            if client.pid == os.getpid():
                self.opening[client.member] -= 1

    def handed_out(self, client: Client, holder: str, start: float, check_always: bool,
                   lifetime: float | None, expires: float) -> None:
        with self.lock:
            problem = None
            if client.holder is not None:
                problem = f"held by {client.holder} too"
            elif client.closed:
                problem = "closed"
            elif client.broken:
                problem = "found broken before"
            elif client.dirty:
                problem = "its reset failed before"
            elif client.condemned:
                problem = "presumed dead before"
            elif client.dead and check_always:
                problem = "dead, with CHECK='always'"
            elif expires <= start or (lifetime is not None and client.first_out is not None
                                      and start > client.first_out + lifetime):
                problem = "expired (MAX_LIFETIME, or condemned) before the acquire started"
            if problem:
                self.violations.append(f"{client} handed to {holder}: {problem}")
            client.holder = holder
            if client.first_out is None:
                client.first_out = time.monotonic()

    def open_clients(self) -> set[Client]:
        with self.lock:
            return {c for c in self.clients if not c.closed and c.pid == os.getpid()}


class SyncBackend(ClientBackend[Client]):
    def __init__(self, ledger: Ledger, member: str) -> None:
        super().__init__("model", {})
        self.ledger = ledger
        self.member = member

    def create(self) -> Client:
        self.ledger.begin_create(self.member)
        return self.ledger.created(self.member)

    def close(self, client: Client) -> None:
        self.ledger.close(client)

    def check(self, client: Client) -> None:
        if client.dead:
            raise ConnectionResetError("server closed the connection")

    def reset(self, client: Client) -> bool:
        return not (client.broken or client.dead or client.dirty)

    def is_broken(self, client: Client) -> bool:
        return client.broken or client.dead


class AsyncBackend(AsyncClientBackend[Client]):
    """As :class:`SyncBackend`, with coroutines that yield to the loop like real I/O."""

    def __init__(self, ledger: Ledger, member: str) -> None:
        super().__init__("model", {})
        self.ledger = ledger
        self.member = member

    async def create(self) -> Client:  # type: ignore[override]
        self.ledger.begin_create(self.member)
        await asyncio.sleep(0)
        return self.ledger.created(self.member)

    async def close(self, client: Client) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.ledger.close(client)

    def close_nowait(self, client: Client) -> None:
        self.ledger.close(client)

    async def check(self, client: Client) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        if client.dead:
            raise ConnectionResetError("server closed the connection")

    async def reset(self, client: Client) -> bool:  # type: ignore[override]
        await asyncio.sleep(0)
        return not (client.broken or client.dead or client.dirty)

    def is_broken(self, client: Client) -> bool:
        return client.broken or client.dead


# --------------------------------------------------------------------------- callers


class Actor:
    """A caller: runs one operation at a time, in its thread or as its task."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held: list[Client] = []
        self.pending: concurrent.futures.Future[Any] | None = None

    def submit(self, sync: Callable[[], Any],
               coro: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class ThreadActor(Actor):
    is_task = False

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, sync: Callable[[], Any],
               coro: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.jobs.put((sync, future))
        return future

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(5.0)


class TaskActor(Actor):
    is_task = True

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name)
        self.loop = loop
        self.jobs: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.run_coroutine_threadsafe(self._run(), loop)

    async def _run(self) -> None:
        while True:
            job = await self.jobs.get()
            if job is None:
                return
            fn, future = job
            try:
                future.set_result(await fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, sync: Callable[[], Any],
               coro: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.jobs.put_nowait, (coro, future))
        return future

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.jobs.put_nowait, None)
        self.task.result(5.0)


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="model-loop",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


# --------------------------------------------------------------------------- the machine


class ConcurrentModel(RuleBasedStateMachine):
    """One pool of kind ``KIND``; callers block and run concurrently with later steps."""

    KIND = "pool"

    def __init__(self) -> None:
        super().__init__()
        self.actors: list[Actor] = []
        self.loop_thread: LoopThread | None = None
        self.pool: Any = None
        self.closing = False
        self.forks = 0
        self.steps = 0
        self.previous: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    @initialize(max_size=st.integers(1, 3), total=st.integers(1, 4),
                check=st.sampled_from(["always", "never"]),
                lifetime=st.sampled_from([None, None, 0.02]))
    def build(self, max_size: int, total: int, check: str, lifetime: float | None) -> None:
        self.check_always = check == "always"
        self.lifetime = lifetime
        base = PoolSettings(max_size=max_size, timeout=1.0, check=check, max_idle=None,
                            max_lifetime=lifetime, connect_retries=0)
        self.loop_thread = LoopThread()
        loop = self.loop_thread.loop
        if self.KIND == "endpoints":
            self.total_cap: int | None = total
            self.ledger = Ledger({"a": max_size, "b": max_size}, total)
            capacity = SharedCapacity(total)
            for name in ("a", "b"):
                capacity.members.append(Pool(
                    "model", SyncBackend(self.ledger, name),
                    member_settings(base, max_size, 0), capacity=capacity, name=name,
                    failover=True))
            self.pool = EndpointPool("model", capacity.members, capacity)
            self.members: list[Any] = list(capacity.members)
            self.actors = [ThreadActor("thread-0"), ThreadActor("thread-1"),
                           ThreadActor("thread-2"), TaskActor("task-0", loop)]
        elif self.KIND == "async":
            self.total_cap = None
            self.ledger = Ledger({"": max_size}, None)
            self.pool = AsyncPool("model", AsyncBackend(self.ledger, ""), base)
            self.members = [self.pool]
            self.actors = [TaskActor(f"task-{n}", loop) for n in range(4)]
        else:
            self.total_cap = None
            self.ledger = Ledger({"": max_size}, None)
            self.pool = Pool("model", SyncBackend(self.ledger, ""), base)
            self.members = [self.pool]
            self.actors = [ThreadActor("thread-0"), ThreadActor("thread-1"),
                           ThreadActor("thread-2"), TaskActor("task-0", loop),
                           TaskActor("task-1", loop)]
        self.max_size = max_size

    # -- helpers ---------------------------------------------------------------------------

    def collect(self) -> None:
        """Take in what finished operations returned."""
        for actor in self.actors:
            future = actor.pending
            if future is None or not future.done():
                continue
            actor.pending = None
            client = future.result()  # operations record their own problems
            if client is not None:
                actor.held.append(client)

    def at_rest(self) -> Any:
        """A stats snapshot taken at rest (nothing in flight but waits, nothing being
        created or closed, the server agreeing with the pool), or None; ``self.unrest``
        says why not."""
        self.collect()
        busy = sum(1 for a in self.actors if a.pending is not None)
        stats = self.pool.stats()
        if not (busy == stats.waiting and stats.creating == 0 and stats.closing == 0):
            self.unrest = f"{busy} callers busy: {stats}"
            return None
        opened = self.ledger.open_clients()
        if self.closing:
            self.unrest = f"open at the server after close: {opened}"
            return None if opened else stats
        held = [c for a in self.actors for c in a.held]
        expected = set(held) | set(self.idle_clients())
        with self.ledger.lock:
            total = self.ledger.total()
        again = self.pool.stats()
        self.unrest = (f"open at the server {opened} (counted {total}) != idle and held "
                       f"{expected}: {stats}")
        if opened != expected or total != stats.size:
            return None
        # Nothing moved meanwhile (a probe, an expiry).
        if [getattr(again, n) for n in MOVES] != [getattr(stats, n) for n in MOVES]:
            return None
        return stats

    def settle(self) -> Any:
        try:
            wait_until(lambda: self.at_rest() is not None, timeout=10.0)
        except AssertionError:
            raise AssertionError(f"the pool did not come to rest: {self.unrest}") from None
        return self.at_rest() or self.settle()

    def idle_clients(self) -> list[Client]:
        return list(self.pool.iter_idle_clients())

    def _acquire(self, actor: Actor, timeout: float, endpoint: str | None) -> None:
        kwargs = {} if endpoint is None else {"endpoint": endpoint}
        ledger = self.ledger

        def judge(start: float, client: Client | None, error: BaseException | None
                  ) -> Client | None:
            elapsed = time.monotonic() - start
            if elapsed > timeout + GRACE:
                ledger.violations.append(f"{actor.name} waited {elapsed:.3f}s with a "
                                         f"timeout of {timeout}s")
            if error is not None:
                if isinstance(error, PoolClosed) and not self.closing:
                    ledger.violations.append(f"{actor.name}: PoolClosed on an open pool")
                elif not (isinstance(error, PoolTimeout | PoolClosed) or (
                        # A timeout soon after a failed check is told as that failure.
                        isinstance(error, ClientCreationError)
                        and isinstance(error.__cause__, ConnectionResetError))):
                    ledger.violations.append(f"{actor.name}: acquire raised {error!r}")
                return None
            assert client is not None
            # The pool's own verdict on when it expires (condemned: at once).
            member = self.pool.owner(client) if self.KIND == "endpoints" else self.pool
            entry = None if member is None else member.entry_of(client)
            expires = math.inf if entry is None else entry.expires
            ledger.handed_out(client, actor.name, start, self.check_always, self.lifetime,
                              expires)
            return client

        def sync() -> Client | None:
            start = time.monotonic()
            try:
                client = self.pool.acquire(timeout=timeout, **kwargs)
            except PoolError as exc:
                return judge(start, None, exc)
            return judge(start, client, None)

        async def coro() -> Client | None:
            start = time.monotonic()
            try:
                client = await self.pool.aacquire(timeout=timeout, **kwargs)
            except PoolError as exc:
                return judge(start, None, exc)
            return judge(start, client, None)

        actor.pending = actor.submit(sync, coro)

    def _release(self, actor: Actor, index: int, discard: bool) -> None:
        client = actor.held.pop(index % len(actor.held))
        with self.ledger.lock:
            client.holder = None
        ledger = self.ledger

        def outcome(error: BaseException | None) -> None:
            if error is not None and not (isinstance(error, PoolError) and self.closing):
                ledger.violations.append(f"{actor.name}: release raised {error!r}")

        def sync() -> None:
            try:
                self.pool.release(client, discard=discard)
            except Exception as exc:
                outcome(exc)

        async def coro() -> None:
            try:
                await self.pool.arelease(client, discard=discard)
            except Exception as exc:
                outcome(exc)

        actor.pending = actor.submit(sync, coro)

    # -- rules -----------------------------------------------------------------------------

    # Rules draw the same data whatever the timing (an index taken modulo what is there,
    # a no-op when nothing fits), so that Hypothesis can replay a failing example.

    @rule(number=st.integers(0, 4), timeout=st.sampled_from(TIMEOUTS),
          endpoint=st.sampled_from([None, "a", "b"]))
    def acquire(self, number: int, timeout: float, endpoint: str | None) -> None:
        free = [a for a in self.actors if a.pending is None]
        if free:
            self._acquire(free[number % len(free)], timeout,
                          endpoint if self.KIND == "endpoints" else None)

    @rule(number=st.integers(0, 4), index=st.integers(0, 3),
          how=st.sampled_from(["release", "release", "discard", "break", "spoil"]))
    def give_back(self, number: int, index: int, how: str) -> None:
        holders = [a for a in self.actors if a.pending is None and a.held]
        if not holders:
            return
        actor = holders[number % len(holders)]
        if how == "break":
            actor.held[index % len(actor.held)].broken = True
        elif how == "spoil":
            actor.held[index % len(actor.held)].dirty = True
        self._release(actor, index, discard=how == "discard")

    @rule(index=st.integers(0, 5))
    def server_drops_an_idle_client(self, index: int) -> None:
        """Its next check fails (with CHECK='never' a holder finds it broken instead)."""
        idle = self.idle_clients()
        if idle:
            idle[index % len(idle)].dead = True

    @precondition(lambda self: not self.closing)
    @rule()
    def presume_dead(self) -> None:
        # Only clients the pool knew before ``now``: a probe may be opening one meanwhile.
        known = self.idle_clients() + [c for a in self.actors for c in a.held]
        now = time.monotonic()
        with self.ledger.lock:
            for client in known:
                client.condemned = True
        for member in self.members:
            member.presume_dead(now)

    @precondition(lambda self: not self.closing and self.forks == 0)
    @rule()
    def fork(self) -> None:
        self.forks += 1
        inherited = self.ledger.open_clients()
        held = [c for a in self.actors for c in a.held]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into the test runner
            os.close(read)
            try:
                report = self.in_child(inherited, held) or "ok"
            except BaseException as exc:
                report = f"the child raised {exc!r}"
            os.write(write, report.encode()[:4000])
            os._exit(0)
        os.close(write)
        chunks = []
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read)
        report = b"".join(chunks).decode()
        if not report:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert report == "ok", f"in the forked child: {report or 'no answer within 20s'}"

    def in_child(self, inherited: set[Client], held: list[Client]) -> str:
        self.ledger.lock = threading.Lock()  # another thread may have held it at fork time
        problems: list[str] = []
        stats = self.pool.stats()
        counts = (stats.size, stats.idle, stats.in_use, stats.waiting, stats.creating)
        if counts != (0, 0, 0, 0, 0):
            problems.append(f"inherited state (size, idle, in use, waiting, creating) "
                            f"= {counts}")
        want = min(self.max_size, self.total_cap or 2, 2)

        def fresh(clients: list[Client]) -> None:
            for client in clients:
                if client in inherited or client.pid != os.getpid():
                    problems.append(f"{client}, inherited, was handed out in the child")

        if self.KIND == "async":
            async def run() -> None:
                clients = [await self.pool.aacquire(timeout=2.0) for _ in range(want)]
                fresh(clients)
                for client in clients + held:
                    await self.pool.arelease(client)

            asyncio.run(run())
        else:
            clients = [self.pool.acquire(timeout=2.0) for _ in range(want)]
            fresh(clients)
            for client in clients + held:
                self.pool.release(client)
        self.pool.close(2.0)
        closed = [c for c in inherited if c.closed]
        if closed:
            problems.append(f"inherited clients closed in the child: {closed}")
        return "; ".join(problems)

    # Late in an example only: nothing much happens on a closed pool.
    @precondition(lambda self: not self.closing and self.steps >= 20)
    @rule(timeout=st.sampled_from([0.0, 0.05]))
    def close(self, timeout: float) -> None:
        self.closing = True
        self.ledger.closing_held_ok = True
        self.pool.close(timeout)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def rules_hold(self) -> None:
        if self.pool is None:
            return
        self.steps += 1
        stats = self.settle()
        ledger = self.ledger
        assert not ledger.violations, ledger.violations[:5]
        if not (KNOWN_ASYNC_CAP_OVERSHOOT and self.KIND == "async"):
            assert not ledger.over_cap, ledger.over_cap[:5]
        for name in COUNTERS:
            value = getattr(stats, name)
            assert value >= self.previous[name], f"{name} went back: {stats}"
            self.previous[name] = value
        assert stats.size == stats.idle + stats.in_use + stats.creating, stats
        per = list(stats.endpoints.values()) if self.KIND == "endpoints" else [stats]
        for member in per:
            assert member.size == member.idle + member.in_use + member.creating, member
            assert member.size <= self.max_size, member
        if self.total_cap is not None:
            assert stats.size <= self.total_cap, stats
        if self.KIND == "endpoints":
            # The shared cap keeps a running count of slots: it agrees with the members'.
            capacity = self.pool.capacity
            with capacity.lock:
                assert capacity.used == sum(m.size_locked() for m in capacity.members), stats
        if self.closing:
            assert stats.size == 0 and stats.in_use == 0 and stats.waiting == 0, stats
            return
        held = [c for a in self.actors for c in a.held]
        assert len(held) == len(set(held)), "a client is held twice"
        assert stats.in_use == len(held), (stats, held)
        assert stats.acquired_total - stats.released_total == stats.in_use, stats
        condemned = [c for c in self.idle_clients() if c.condemned]
        assert not condemned, f"presumed dead, yet idle again: {condemned}"
        # Nobody waits while a client could be handed out or opened for them.
        for member, member_stats in zip(self.members, per, strict=True):
            if not member_stats.waiting or member_stats.state == "failing":
                continue
            assert member_stats.idle == 0, member_stats
            full = member_stats.size >= self.max_size
            group_full = (self.total_cap is not None and stats.size >= self.total_cap
                          and stats.idle == 0)
            assert full or group_full, f"{member} has room but callers wait: {stats}"

    def teardown(self) -> None:
        try:
            if self.pool is not None:
                wait_until(lambda: all(a.pending is None or a.pending.done()
                                       for a in self.actors), timeout=10.0,
                           message="an operation never finished")
                self.collect()
                self.closing = True
                self.ledger.closing_held_ok = True
                self.pool.close(0)
                wait_until(lambda: not self.ledger.open_clients(), timeout=5.0,
                           message="clients are left open after close")
                assert not self.ledger.violations, self.ledger.violations[:5]
        finally:
            for actor in self.actors:
                actor.stop()
            if self.loop_thread is not None:
                self.loop_thread.stop()


class PoolModel(ConcurrentModel):
    KIND = "pool"


class AsyncPoolModel(ConcurrentModel):
    KIND = "async"


class EndpointPoolModel(ConcurrentModel):
    KIND = "endpoints"


SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None,
                    derandomize=True, suppress_health_check=list(HealthCheck))

PoolModel.TestCase.settings = SETTINGS
AsyncPoolModel.TestCase.settings = SETTINGS
EndpointPoolModel.TestCase.settings = SETTINGS

test_pool_against_the_model = PoolModel.TestCase
test_async_pool_against_the_model = AsyncPoolModel.TestCase
test_endpoint_pool_against_the_model = EndpointPoolModel.TestCase


def test_an_async_pool_frees_a_slot_only_once_its_client_is_closed() -> None:
    ledger = Ledger({"": 1}, None)
    pool = AsyncPool("model", AsyncBackend(ledger, ""), PoolSettings(max_size=1, timeout=2.0))

    async def run() -> None:
        client = await pool.aacquire()
        waiter = asyncio.ensure_future(pool.aacquire())
        await async_wait_until(lambda: pool.stats().waiting == 1)
        await pool.arelease(client, discard=True)
        await pool.arelease(await waiter)

    asyncio.run(run())
    pool.close(1.0)
    assert not ledger.over_cap, ledger.over_cap


def endpoint_pool(ledger: Ledger, max_size: int = 1) -> EndpointPool[Client]:
    capacity = SharedCapacity(None)
    for name in ("a", "b"):
        capacity.members.append(Pool("model", SyncBackend(ledger, name),
                                     PoolSettings(max_size=max_size, timeout=2.0),
                                     capacity=capacity, name=name, failover=True))
    return EndpointPool("model", capacity.members, capacity)


@pytest.mark.parametrize("kind", ["pool", "endpoints"])
def test_releasing_an_inherited_client_in_a_forked_child_is_harmless(kind: str) -> None:
    ledger = Ledger({"": 1, "a": 1, "b": 1}, None)
    pool: Any = (Pool("model", SyncBackend(ledger, ""), PoolSettings(max_size=1))
                 if kind == "pool" else endpoint_pool(ledger))
    client = pool.acquire()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            pool.release(client)  # the parent's client: left alone
            code = 1 if client.closed else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    pool.release(client)
    pool.close(1.0)
    assert os.waitstatus_to_exitcode(status) == 0, "the release raised or closed the client"
