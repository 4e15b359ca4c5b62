"""Pool statistics: the one snapshot every surface (admin, health, commands, metrics) reads."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Lease", "PoolStats", "ViewStats", "ViewTable", "ViewUsage", "WaitWindow", "merge_views"]

#: The most views a pool tracks one by one; the others are counted together as "other".
MAX_VIEWS = 100
OTHER = "other"


@dataclass(frozen=True)
class Lease:
    """A client in use: who holds it, since when, and where it was acquired."""

    thread: str
    thread_id: int
    held_for: float
    where: str
    leaked: bool = False
    stack: str | None = None
    #: The view (or :func:`~pooled_clients.attribution.attribute` name) it was acquired for.
    view: str = "-"

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
    #: View (or attributed name) -> its checkouts, counted when the client comes back.
    by_view: dict[str, ViewStats] = field(default_factory=dict)
    #: When ``last_error`` happened (``2026-11-27 18:04:05 UTC``), or None.
    last_error_at: str | None = None
    #: Whether the service answered after ``last_error`` (the error is history).
    recovered: bool = False

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
        data["by_view"] = {name: v.as_dict() for name, v in self.by_view.items()}
        data["utilization"] = round(self.utilization, 4)
        return data


@dataclass(frozen=True)
class ViewStats:
    """The checkouts of one view (or attributed name) that have come back."""

    acquired_total: int
    #: Acquire waits over the view's recent checkouts (None with no samples).
    wait_ms_p95: float | None
    #: How long the view's recent checkouts held their client.
    hold_ms_p95: float | None
    hold_ms_total: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


class ViewUsage:
    """One view's figures so far (updated under the pool lock)."""

    __slots__ = ("count", "hold_total", "holds", "waits")

    def __init__(self) -> None:
        self.count = 0
        self.hold_total = 0.0
        self.holds: deque[float] = deque(maxlen=256)
        self.waits = WaitWindow(256)


class ViewTable(dict[str, ViewUsage]):
    """View -> its figures, for at most :data:`MAX_VIEWS` views (the rest are counted as
    ``"other"``), so memory stays bounded whatever the views. A dict, so that a release
    finds its view with one lookup (the pool's release updates the figures inline)."""

    def usage_of(self, view: str) -> ViewUsage:
        """The figures of a view not seen yet (of "other" past the limit)."""
        if len(self) >= MAX_VIEWS:
            view = OTHER
            usage = self.get(view)
            if usage is not None:
                return usage
        usage = self[view] = ViewUsage()
        return usage

    def snapshot(self) -> dict[str, ViewStats]:
        """Each view's figures (callers hold the pool lock)."""
        result = {}
        for view, usage in self.items():
            holds = sorted(usage.holds)
            hold_p95 = None
            if holds:
                hold_p95 = round(holds[min(len(holds) - 1,
                                           max(0, math.ceil(0.95 * len(holds)) - 1))] * 1000, 3)
            result[view] = ViewStats(
                acquired_total=usage.count,
                wait_ms_p95=usage.waits.percentiles(usage.count)[1],
                hold_ms_p95=hold_p95,
                hold_ms_total=round(usage.hold_total * 1000, 3),
            )
        return result


def merge_views(tables: Iterable[dict[str, ViewStats]]) -> dict[str, ViewStats]:
    """The views of several member pools together: counts and totals add up, each p95 is
    the highest member's (the figure worth looking at)."""
    merged: dict[str, ViewStats] = {}
    for table in tables:
        for view, stats in table.items():
            seen = merged.get(view)
            if seen is None:
                merged[view] = stats
                continue
            merged[view] = ViewStats(
                acquired_total=seen.acquired_total + stats.acquired_total,
                wait_ms_p95=_highest(seen.wait_ms_p95, stats.wait_ms_p95),
                hold_ms_p95=_highest(seen.hold_ms_p95, stats.hold_ms_p95),
                hold_ms_total=round(seen.hold_ms_total + stats.hold_ms_total, 3),
            )
    return merged


def _highest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


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
