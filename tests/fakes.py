"""In-memory clients and a backend for tests of the engine (no Django, no network)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from pooled_clients.backends.base import ClientBackend


class FakeClient:
    def __init__(self, number: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.number = number
        self.loop = loop  # the event loop an async backend made it on
        self.closed = False
        self.closed_nowait = False
        self.healthy = True
        self.dirty = False
        self.holder: int | None = None


class FakeBackend(ClientBackend[FakeClient]):
    """Counts what the engine asks of it; failures are switched on by tests.

    ``check_gate``/``reset_gate``, when set, make check/reset wait (at most 5 s) for the event:
    run on an event loop, such a wait would block the very task that sets it.
    """

    def __init__(self, alias: str = "fake", options: dict[str, Any] | None = None) -> None:
        super().__init__(alias, options or {})
        self.numbers = itertools.count()
        self.fail_create: BaseException | None = None
        self.create_delay = 0.0
        self.created: list[FakeClient] = []
        self.checks = 0
        self.check_gate: threading.Event | None = None
        self.reset_gate: threading.Event | None = None
        self.gate_failures = 0
        self.lock = threading.Lock()

    def create(self) -> FakeClient:
        if self.create_delay:
            time.sleep(self.create_delay)
        if self.fail_create is not None:
            raise self.fail_create
        client = FakeClient(next(self.numbers))
        with self.lock:
            self.created.append(client)
        return client

    def close(self, client: FakeClient) -> None:
        client.closed = True

    def check(self, client: FakeClient) -> None:
        self.checks += 1
        self._pass_gate(self.check_gate)
        if not client.healthy:
            raise ConnectionError("client is dead")

    def reset(self, client: FakeClient) -> bool:
        self._pass_gate(self.reset_gate)
        return not client.dirty

    def is_broken(self, client: FakeClient) -> bool:
        return not client.healthy

    def _pass_gate(self, gate: threading.Event | None) -> None:
        # On the event loop this would wait for a task that cannot run: a deadlock that the
        # bounded wait turns into a counted failure.
        if gate is not None and not gate.wait(5.0):
            self.gate_failures += 1
            raise TimeoutError("the event loop did not run while the backend waited")

    def open_count(self) -> int:
        with self.lock:
            return sum(1 for c in self.created if not c.closed)
