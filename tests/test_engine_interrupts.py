"""Exceptions thrown into waiting callers lose no capacity.

Random interleavings of acquire, release, discard and close from a few threads, while
exceptions are thrown into callers that wait for a client: into the main thread by a
SIGALRM handler (a request deadline), into worker threads with
``PyThreadState_SetAsyncExc``; some are ``Exception`` subclasses, some are not (like
``KeyboardInterrupt``). Whatever lands where, the pool ends with size = idle + in use +
creating and every slot comes back: MAX_SIZE clients can be held at once again.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from pooled_clients.exceptions import PoolClosed, PoolError
from pooled_clients.pool import Pool, PoolSettings
from tests.test_engine_model_concurrent import Client, Ledger, SyncBackend
from tests.waiting import wait_until

pytestmark = [
    # Not the signal method: the test sets its own SIGALRM timer.
    pytest.mark.timeout(180, method="thread"),
    pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                       reason="signals are delivered to the main thread"),
]


class Deadline(Exception):
    pass


class Interrupt(BaseException):
    pass


class SlowCheckBackend(SyncBackend):
    """A check that takes a round trip, so that a signal can land in it."""

    check_seconds = 0.0

    def check(self, client: Client) -> None:
        if self.check_seconds:
            time.sleep(self.check_seconds)
        super().check(client)


def throw_into(ident: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``ident`` when it next runs Python code (None: drop a
    pending one)."""
    target = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), target)


class Caller:
    """One thread's side: exceptions may be thrown into it only while it is ``armed``,
    that is inside ``acquire()``; disarming drops one that has not landed yet."""

    def __init__(self) -> None:
        self.gate = threading.Lock()
        self.armed = False
        self.ident = threading.get_ident()
        self.held: list[Client] = []
        self.thrown = 0

    def arm(self) -> None:
        with self.gate:
            self.armed = True

    def disarm(self) -> None:
        with self.gate:
            self.armed = False
            throw_into(self.ident, None)

    def acquire(self, pool: Pool[Client], timeout: float) -> None:
        client = None
        try:
            self.arm()
            client = pool.acquire(timeout=timeout)
            self.disarm()
        except (Deadline, Interrupt):
            self.disarm()
            self.thrown += 1
        except PoolError:
            self.disarm()
        if client is not None:
            self.held.append(client)

    def give_back(self, pool: Pool[Client], discard: bool) -> None:
        if self.held:
            pool.release(self.held[-1], discard=discard)
            self.held.pop()


def in_wait(frame: FrameType | None) -> bool:
    """Whether a thread's innermost frame is a pool's wait for a hand-over."""
    return frame is not None and frame.f_code.co_name == "_wait"


Op = tuple[str, float]
ops = st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from([0.02, 0.1, 0.3])),
    st.tuples(st.sampled_from(["release", "release", "discard"]), st.just(0.0)),
)
plans = st.fixed_dictionaries({
    "max_size": st.integers(1, 3),
    "check_seconds": st.sampled_from([0.0, 0.0, 0.005]),
    "workers": st.lists(st.lists(ops, min_size=2, max_size=8), min_size=1, max_size=3),
    "main": st.lists(st.tuples(st.sampled_from([0.05, 0.2]),
                               st.floats(0.0005, 0.1),
                               st.sampled_from([Deadline, Interrupt])),
                     min_size=1, max_size=4),
    "throws": st.lists(st.tuples(st.integers(0, 2), st.sampled_from([Deadline, Interrupt])),
                       max_size=6),
    "close": st.sampled_from([False, False, True]),
})


# No shrinking: with threads and signals a failing plan rarely fails the same way twice.
@settings(max_examples=40, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(plan=plans)
def test_exceptions_thrown_into_waits_lose_no_capacity(plan: dict[str, Any]) -> None:
    max_size = plan["max_size"]
    ledger = Ledger({"": max_size}, None)
    backend = SlowCheckBackend(ledger, "")
    backend.check_seconds = plan["check_seconds"]
    pool: Pool[Client] = Pool("interrupts", backend, PoolSettings(
        max_size=max_size, timeout=1.0, max_idle=None, max_lifetime=None, connect_retries=0,
        check="always" if plan["check_seconds"] else "never"))
    callers: list[Caller] = []
    ready = threading.Barrier(len(plan["workers"]) + 1)

    def work(script: list[Op]) -> None:
        caller = Caller()
        callers.append(caller)
        ready.wait(5.0)
        for op, timeout in script:
            if op == "acquire":
                caller.acquire(pool, timeout)
            else:
                try:
                    caller.give_back(pool, discard=op == "discard")
                except PoolClosed:
                    return

    workers = [threading.Thread(target=work, args=(script,), name=f"interrupts-{n}")
               for n, script in enumerate(plan["workers"])]
    for worker in workers:
        worker.start()
    ready.wait(5.0)
    stop = threading.Event()

    def thrower() -> None:
        """Throw each planned exception into a worker found waiting for a client."""
        for number, exc_type in plan["throws"]:
            caller = callers[number % len(callers)]
            deadline = time.monotonic() + 0.5
            while not stop.is_set() and time.monotonic() < deadline:
                with caller.gate:
                    if caller.armed and in_wait(sys._current_frames().get(caller.ident)):
                        throw_into(caller.ident, exc_type)
                        caller.armed = False  # once per acquire
                        break
                time.sleep(0.001)

    throwing = threading.Thread(target=thrower, name="interrupts-thrower")
    throwing.start()

    main = Caller()
    current: list[type[BaseException]] = [Deadline]

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if main.armed:
            main.armed = False
            raise current[0]("request deadline")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for timeout, delay, exc_type in plan["main"]:
            current[0] = exc_type
            signal.setitimer(signal.ITIMER_REAL, delay)
            main.acquire(pool, timeout)
            signal.setitimer(signal.ITIMER_REAL, 0)
            if main.held and len(main.held) >= max_size:
                main.give_back(pool, discard=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    for worker in workers:
        worker.join(10.0)
    stop.set()
    throwing.join(5.0)
    assert not any(w.is_alive() for w in [*workers, throwing]), "a caller is stuck"
    into_workers = sum(caller.thrown for caller in callers)
    event(f"exceptions thrown into the main thread: {min(main.thrown, 2)}")
    event(f"exceptions thrown into workers: {min(into_workers, 2)}")

    if plan["close"]:
        pool.close(0.05)
        wait_until(lambda: not ledger.open_clients(), message="clients left open by close")
        stats = pool.stats()
        assert stats.size == stats.idle == stats.in_use == stats.creating == 0, stats
        with pytest.raises(PoolClosed):
            pool.acquire(timeout=0.1)
        return

    held = [c for caller in [*callers, main] for c in caller.held]
    wait_until(lambda: pool.stats().creating == 0 and pool.stats().closing == 0)
    stats = pool.stats()
    assert stats.size == stats.idle + stats.in_use + stats.creating, stats
    assert stats.in_use == len(held), f"{stats.in_use} in use, {len(held)} held: {stats}"
    assert stats.waiting == 0, stats
    for caller in [*callers, main]:
        while caller.held:
            caller.give_back(pool, discard=False)
    # Every slot comes back: MAX_SIZE clients at once.
    again = [pool.acquire(timeout=1.0) for _ in range(max_size)]
    assert len(set(map(id, again))) == max_size
    for client in again:
        pool.release(client)
    stats = pool.stats()
    assert stats.size == stats.idle + stats.in_use + stats.creating <= max_size, stats
    pool.close(0.5)
    assert not ledger.violations, ledger.violations[:5]
    assert not ledger.over_cap, ledger.over_cap[:5]


class SignalWhileSpawning(Pool[Client]):
    """A pool whose caller gets SIGALRM just as its creation thread has started (where
    ``Thread.start()`` waits for the new thread)."""

    def _spawn_creation(self, probe: bool) -> None:
        super()._spawn_creation(probe)
        signal.raise_signal(signal.SIGALRM)


def test_a_signal_while_a_creation_thread_starts_leaves_no_dead_waiter() -> None:
    ledger = Ledger({"": 1}, None)
    pool = SignalWhileSpawning("interrupts", SyncBackend(ledger, ""), PoolSettings(
        max_size=1, timeout=2.0))

    def deadline(signum: int, frame: FrameType | None) -> None:
        raise Deadline("request deadline")

    previous = signal.signal(signal.SIGALRM, deadline)
    try:
        with pytest.raises(Deadline):
            pool.acquire()
    finally:
        signal.signal(signal.SIGALRM, previous)
    wait_until(lambda: pool.stats().creating == 0)
    stats = pool.stats()
    assert (stats.waiting, stats.in_use) == (0, 0), stats
    client = pool.acquire(timeout=1.0)  # the new client went to the idle list
    pool.release(client)
    pool.close(1.0)
