"""Pool statistics: the one snapshot every surface (admin, health, commands, metrics) reads."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Lease", "PoolStats", "WaitWindow"]


@dataclass(frozen=True)
class Lease:
    """A client in use: who holds it, since when, and where it was acquired."""

    thread: str
    thread_id: int
    held_for: float
    where: str
    leaked: bool = False
    stack: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of one pool (or one endpoint of a pool) in this process.

    Counters (``*_total``) are monotonic for the life of the pool. ``size`` counts open
    clients plus those being created. Wait percentiles cover a recent window of
    checkouts and are None when there are no samples.
    """

    alias: str
    backend: str
    target: str
    pid: int
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    acquired_total: int
    released_total: int
    created_total: int
    closed_total: int
    timeouts_total: int
    errors_total: int
    check_failures_total: int
    leaks_total: int
    wait_ms_p50: float | None
    wait_ms_p95: float | None
    wait_ms_p99: float | None
    healthy: bool
    last_error: str | None
    endpoints: dict[str, PoolStats] = field(default_factory=dict)
    leases: tuple[Lease, ...] = ()
    #: "open", "failing", "closed" or "retired".
    state: str = "open"
    creating: int = 0
    #: Clients being closed (not in ``size``): their slots come free once they are closed.
    closing: int = 0
    #: The endpoint, or the key as ``describe_key`` shows it, of a member pool's stats.
    name: str | None = None
    #: A keyed pool's live keys, and how many it evicted (least recently used at KEYS MAX,
    #: or idle past KEYS IDLE_TIMEOUT).
    keys: int = 0
    key_evictions_total: int = 0
    #: A keyed pool's busiest keys (by clients in use, then checkouts), at most 20.
    top_keys: dict[str, PoolStats] = field(default_factory=dict)
    timeout: float = 0.0
    #: Backend-specific figures (for HTTP pools: request latency percentiles and error rate).
    backend_stats: dict[str, Any] = field(default_factory=dict)
    #: How many times :meth:`drain` was called in this process, and when last (Unix time).
    drains_total: int = 0
    last_drained_at: float | None = None

    @property
    def utilization(self) -> float:
        """Fraction of MAX_SIZE in use, 0.0 to 1.0."""
        return self.in_use / self.max_size if self.max_size else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (endpoints and leases included)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["endpoints"] = {name: s.as_dict() for name, s in self.endpoints.items()}
        data["top_keys"] = {name: s.as_dict() for name, s in self.top_keys.items()}
        data["leases"] = [lease.as_dict() for lease in self.leases]
        data["utilization"] = round(self.utilization, 4)
        return data


class WaitWindow:
    """Waits of the most recent checkouts (the last ``size`` of them).

    A checkout that did not wait records nothing at all, which keeps the hot path free of
    bookkeeping: only waits are stored, each with the number of the checkout it belongs
    to, and the zeros of the window are implied when percentiles are read.
    """

    __slots__ = ("_samples", "_size")

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._samples: deque[tuple[int, float]] = deque(maxlen=size)

    def add(self, seconds: float, number: int) -> None:
        """Record the wait of checkout ``number`` (callers hold the pool lock)."""
        self._samples.append((number, seconds))

    def samples_since(self, number: int) -> list[float]:
        """Recorded waits of the checkouts after ``number`` (zeros not included)."""
        return [seconds for n, seconds in self._samples if n > number]

    def percentiles(self, total: int) -> tuple[float | None, float | None, float | None]:
        """p50, p95 and p99 in milliseconds over the last ``size`` of ``total`` checkouts
        (None with no checkouts)."""
        count = min(total, self._size)
        if count <= 0:
            return None, None, None
        waits = sorted(self.samples_since(total - count))
        values = [0.0] * (count - len(waits)) + waits

        def pick(q: float) -> float:
            index = min(count - 1, max(0, math.ceil(q * count) - 1))
            return round(values[index] * 1000.0, 3)

        return pick(0.50), pick(0.95), pick(0.99)
