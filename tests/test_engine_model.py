"""The engine against a model: random operation sequences keep every invariant.

Single-threaded and deterministic: a fake in-memory backend whose clients can be killed (a
server restart), dirtied (a reset that fails) or broken, and a model that predicts exactly
which client each checkout returns, what the idle list holds and every counter.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pooled_clients.backends.base import ClientBackend
from pooled_clients.exceptions import PoolClosed, PoolError, PoolTimeout
from pooled_clients.pool import Pool, PoolSettings

pytestmark = pytest.mark.timeout(120)


class FakeClient:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.dead = False
        self.dirty = False
        self.closed = False

    def __repr__(self) -> str:
        flags = "".join(f for f, on in (("D", self.dead), ("d", self.dirty), ("C", self.closed))
                        if on)
        return f"<client {self.id}{' ' + flags if flags else ''}>"


class FakeBackend(ClientBackend[FakeClient]):
    """Clients in memory; ``open`` is every client created and not yet closed."""

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.open: set[FakeClient] = set()

    def create(self) -> FakeClient:
        client = FakeClient()
        self.open.add(client)
        return client

    def close(self, client: FakeClient) -> None:
        assert not client.closed, f"{client} closed twice"
        client.closed = True
        self.open.discard(client)

    def check(self, client: FakeClient) -> None:
        if client.dead:
            raise ConnectionResetError("server closed the connection")

    def reset(self, client: FakeClient) -> bool:
        # Like a real backend, a reset notices a connection that broke while in use.
        return not (client.dirty or client.dead)

    def is_broken(self, client: FakeClient) -> bool:
        return client.dead


class PoolModel(RuleBasedStateMachine):
    """One live pool at a time (plus retired ones whose clients are still held)."""

    def __init__(self) -> None:
        super().__init__()
        self.backend = FakeBackend("model", {})
        self.pool: Pool[FakeClient] | None = None
        self.retired: list[tuple[Pool[FakeClient], list[FakeClient]]] = []
        self.released: list[FakeClient] = []

    @initialize(max_size=st.integers(1, 4), check=st.sampled_from(["always", "never"]))
    def build(self, max_size: int, check: str) -> None:
        self.max_size = max_size
        self.check = check
        self.new_pool()

    def new_pool(self) -> None:
        self.pool = Pool("model", self.backend, PoolSettings(
            max_size=self.max_size, check=self.check, timeout=2.0, max_idle=None,
            max_lifetime=None, connect_retries=0,
        ))
        self.idle: list[FakeClient] = []  # the pool's idle list, in order (LIFO at the end)
        self.held: list[FakeClient] = []
        self.birth: dict[FakeClient, int] = {}
        self.tick = 0
        self.stale_before = 0
        self.acquired = self.released_n = self.created = self.timeouts = 0
        self.check_failures = 0

    def _born(self, client: FakeClient) -> None:
        self.tick += 1
        self.birth[client] = self.tick
        self.created += 1

    def _purge(self) -> None:
        self.tick += 1
        self.stale_before = self.tick
        self.idle.clear()  # every idle client predates the failure

    # -- operations ------------------------------------------------------------------------

    @precondition(lambda self: len(self.held) < self.max_size)
    @rule()
    def acquire(self) -> None:
        assert self.pool is not None
        client = self.pool.acquire()
        expected: FakeClient | None = None
        while self.idle:
            candidate = self.idle.pop()
            if self.check == "always" and candidate.dead:
                self.check_failures += 1
                self._purge()
                break
            expected = candidate
            break
        if expected is None:
            assert client not in self.birth, f"{client} should be new"
            self._born(client)
        else:
            assert client is expected
        self.acquired += 1
        self.held.append(client)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        assert self.pool is not None
        client = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.pool.release(client)
        self.released_n += 1
        self.released.append(client)
        if client.dead:
            self._purge()
        elif client.dirty or self.birth[client] < self.stale_before:
            pass  # closed by the pool
        else:
            self.idle.append(client)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def spoil(self, data: st.DataObject) -> None:
        """A client whose reset fails (say, a transaction that cannot be rolled back)."""
        self.held[data.draw(st.integers(0, len(self.held) - 1))].dirty = True

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        assert self.pool is not None
        client = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.pool.release(client, discard=True)
        self.released_n += 1
        self.released.append(client)

    @precondition(lambda self: len(self.held) == self.max_size)
    @rule()
    def timeout(self) -> None:
        assert self.pool is not None
        with pytest.raises(PoolTimeout):
            self.pool.acquire(timeout=0.001)
        self.timeouts += 1

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def release_twice(self, data: st.DataObject) -> None:
        assert self.pool is not None
        client = data.draw(st.sampled_from(self.released))
        if client in self.held:
            return  # handed out again since: releasing it now is legitimate
        with pytest.raises(PoolError):
            self.pool.release(client)

    @rule()
    def release_foreign(self) -> None:
        assert self.pool is not None
        with pytest.raises(PoolError):
            self.pool.release(FakeClient())

    @rule()
    def server_restart(self) -> None:
        """Every open client dies without the pool being told."""
        for client in self.backend.open:
            client.dead = True

    @rule()
    def reload(self) -> None:
        """Retire the pool (settings reloaded): clients in use close when released."""
        assert self.pool is not None
        self.pool.retire()
        for client in self.idle:
            assert client.closed
        with pytest.raises(PoolClosed):
            self.pool.acquire(timeout=0.1)
        self.retired.append((self.pool, self.held))
        self.new_pool()

    @precondition(lambda self: any(held for _, held in self.retired))
    @rule(data=st.data())
    def release_to_retired(self, data: st.DataObject) -> None:
        pool, held = data.draw(st.sampled_from([r for r in self.retired if r[1]]))
        client = held.pop(data.draw(st.integers(0, len(held) - 1)))
        pool.release(client)
        assert client.closed

    @rule()
    def close(self) -> None:
        assert self.pool is not None
        self.pool.close(timeout=0)
        for client in self.idle + self.held:
            assert client.closed, client
        with pytest.raises(PoolClosed):
            self.pool.acquire(timeout=0.1)
        self.pool.close(timeout=0)  # idempotent
        self.new_pool()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def stats_match_the_model(self) -> None:
        if self.pool is None:
            return
        stats = self.pool.stats()
        assert stats.state == "open" and stats.healthy
        assert stats.creating == 0 and stats.waiting == 0
        assert stats.size == stats.idle + stats.in_use <= self.max_size
        assert stats.in_use == len(self.held)
        assert list(self.pool.iter_idle_clients()) == self.idle
        assert stats.acquired_total == self.acquired
        assert stats.released_total == self.released_n
        assert stats.acquired_total - stats.released_total == stats.in_use
        assert stats.created_total == self.created
        assert stats.created_total - stats.closed_total == stats.size
        assert stats.timeouts_total == self.timeouts
        assert stats.check_failures_total == self.check_failures

    @invariant()
    def no_client_lost_or_shared(self) -> None:
        if self.pool is None:
            return
        held = self.held + [c for _, h in self.retired for c in h]
        assert len(set(map(id, held))) == len(held), "a client is held twice"
        assert not set(held) & set(self.idle), "a held client is also idle"
        assert all(not c.closed for c in held + self.idle)
        expected = set(held) | set(self.idle)
        # Clients purged after a failure are closed in the background: give it a moment.
        deadline = time.monotonic() + 2.0
        while self.backend.open != expected and time.monotonic() < deadline:
            time.sleep(0.001)
        assert self.backend.open == expected

    def teardown(self) -> None:
        for pool, held in self.retired:
            for client in held:
                pool.release(client)
        if self.pool is not None:
            self.pool.close(timeout=0)
        deadline = time.monotonic() + 2.0
        while self.backend.open and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not self.backend.open, "clients left open after close"


PoolModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_against_model = PoolModel.TestCase
