"""OpenTelemetry metrics (extra ``[otel]``): the semantic-convention connection-pool metrics.

With ``POOLED_CLIENTS_OPENTELEMETRY = True`` every pool reports, through the global
``MeterProvider`` (a no-op until the application installs an SDK one):

* ``db.client.connection.count`` (``{connection}``, attribute ``db.client.connection.state``
  = ``idle`` | ``used``), ``db.client.connection.idle.max``, ``db.client.connection.idle.min``,
  ``db.client.connection.max`` and ``db.client.connection.pending_requests``
  (``{request}``): observable up-down counters read from ``pool.stats()`` at collection;
* ``db.client.connection.timeouts`` (``{timeout}``): an observable counter;
* ``db.client.connection.create_time``, ``db.client.connection.wait_time`` and
  ``db.client.connection.use_time`` (``s``): histograms fed at collection, and every
  ``POOLED_CLIENTS_METRICS_INTERVAL`` by the maintenance thread, with what the pools kept
  since (at most the last 1024 checkouts, releases and creations of each pool per round).

Every measurement carries ``db.client.connection.pool.name``: the alias, or
``alias/endpoint`` for each endpoint of a pool with ENDPOINTS. A keyed pool reports its keys
together under its alias (a key is never an attribute: keys are unbounded).

Nothing here touches acquire; a release keeps its hold time in a small ring, and only while
this is on.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from pooled_clients import conf, core
from pooled_clients.core import PoolCore
from pooled_clients.stats import PoolStats

__all__ = ["POOL_NAME", "STATE", "enable", "install", "record"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
JOB_NAME = "pooled_clients.otel"
#: Bucket bounds (seconds) suggested for the three histograms: sub-millisecond waits to
#: slow connects.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
#: The most samples of one kind a round takes from one pool (what the pools keep).
WINDOW = 1024


@dataclass
class _Source:
    """What one ``pool.name`` reports: the stats, and the member pools whose samples feed
    its histograms."""

    name: str
    stats: PoolStats
    members: list[PoolCore[Any]]


class _Positions:
    """How far the histograms have read one member pool's samples."""

    __slots__ = ("create", "pool", "use", "wait")

    def __init__(self, pool: PoolCore[Any]) -> None:
        self.pool = weakref.ref(pool)
        self.wait = self.use = self.create = 0


_lock = threading.Lock()
_enabled_pid = 0
_positions_pid = 0
_positions: dict[int, _Positions] = {}
_histograms: dict[str, Histogram] = {}
_cache: tuple[float, list[_Source]] = (0.0, [])


def _on() -> bool:
    return conf.get_process_setting("POOLED_CLIENTS_OPENTELEMETRY") is True


def _sources() -> list[_Source]:
    """Every pool, endpoint and keyed pool of this process (pools not yet built are not
    built)."""
    from pooled_clients.groups import PoolGroup
    from pooled_clients.handler import pools

    found: list[_Source] = []
    for pool in pools.built():
        try:
            stats = pool.stats()
        except Exception:  # one broken pool must not hide the others
            continue
        if isinstance(pool, PoolGroup) and stats.endpoints:
            members = {str(m.name): m for m in pool.members()}
            for name, member_stats in stats.endpoints.items():
                member = members.get(name)
                found.append(_Source(f"{pool.alias}/{name}", member_stats,
                                     [member] if member is not None else []))
        elif isinstance(pool, PoolGroup):
            found.append(_Source(pool.alias, stats, pool.members()))
        elif isinstance(pool, PoolCore):
            found.append(_Source(pool.alias, stats, [pool]))
    return found


def _readings(fresh: bool = False) -> list[_Source]:
    """The sources, read once per collection: the first callback of a collection (the
    count's, registered first) reads them afresh and feeds the histograms, so that their
    samples are part of the same collection; the others reuse what it read."""
    global _cache
    now = time.monotonic()
    stamp, sources = _cache
    if not fresh and now - stamp < 5.0:
        return sources
    sources = _sources()
    _drain(sources)
    _cache = (now, sources)
    return sources


def _observe(field: str) -> Any:
    def callback(options: CallbackOptions) -> Iterator[Observation]:
        if not _on():
            return
        for source in _readings():
            yield Observation(int(getattr(source.stats, field)), {POOL_NAME: source.name})

    return callback


def _count(options: CallbackOptions) -> Iterator[Observation]:
    if not _on():
        return
    for source in _readings(fresh=True):
        yield Observation(source.stats.idle, {POOL_NAME: source.name, STATE: "idle"})
        yield Observation(source.stats.in_use, {POOL_NAME: source.name, STATE: "used"})


def install() -> None:
    """Create the instruments on the global ``MeterProvider`` (once per process) and have
    the pools keep their hold times. Opens nothing and starts no thread."""
    with _lock:
        core.record_use_times(True)
        if _histograms:
            return
        from pooled_clients import __version__

        meter = metrics.get_meter("pooled_clients", __version__)
        meter.create_observable_up_down_counter(
            "db.client.connection.count", [_count], unit="{connection}",
            description="The number of connections that are currently in state described "
                        "by the state attribute.")
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.max", [_observe("max_size")], unit="{connection}",
            description="The maximum number of idle open connections allowed.")
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.min", [_observe("min_size")], unit="{connection}",
            description="The minimum number of idle open connections allowed.")
        meter.create_observable_up_down_counter(
            "db.client.connection.max", [_observe("max_size")], unit="{connection}",
            description="The maximum number of open connections allowed.")
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", [_observe("waiting")], unit="{request}",
            description="The number of current pending requests for an open connection.")
        meter.create_observable_counter(
            "db.client.connection.timeouts", [_observe("timeouts_total")], unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to "
                        "obtain a connection from the pool.")
        for name, description in (
            ("create_time", "The time it took to create a new connection."),
            ("wait_time", "The time it took to obtain an open connection from the pool."),
            ("use_time", "The time between borrowing a connection and returning it to the "
                         "pool."),
        ):
            _histograms[name] = meter.create_histogram(
                f"db.client.connection.{name}", unit="s", description=description,
                explicit_bucket_boundaries_advisory=list(BUCKETS))


def record() -> None:
    """Feed the histograms with what the pools kept since the last round."""
    if _on():
        _readings(fresh=True)


def _drain(sources: Iterable[_Source]) -> None:
    global _positions, _positions_pid
    if not _histograms:
        return
    with _lock:
        if _positions_pid != os.getpid():
            _positions_pid, _positions = os.getpid(), {}  # a forked child: fresh pools
        live: dict[int, _Positions] = {}
        for source in sources:
            attributes = {POOL_NAME: source.name}
            for member in source.members:
                seen = _positions.get(id(member))
                if seen is None or seen.pool() is not member:
                    seen = _Positions(member)
                live[id(member)] = seen
                _drain_member(member, seen, attributes)
        _positions = live


def _drain_member(member: PoolCore[Any], seen: _Positions, attributes: dict[str, str]
                  ) -> None:
    wait, use, create = (_histograms[n] for n in ("wait_time", "use_time", "create_time"))
    position, zeros, waits = member.waits_since(seen.wait)
    # Only the last WINDOW checkouts are known: the zeros stand for the ones that did not
    # wait among them, whatever happened before.
    zeros = min(zeros, max(0, WINDOW - len(waits)))
    seen.wait = position
    for _ in range(zeros):
        wait.record(0.0, attributes)
    for seconds in waits:
        wait.record(seconds, attributes)
    seen.use, holds = member.use_times_since(seen.use)
    for seconds in holds:
        use.record(seconds, attributes)
    seen.create, creates = member.create_times_since(seen.create)
    for seconds in creates:
        create.record(seconds, attributes)


def _record_job() -> None:
    if not _on():
        from pooled_clients import maintenance

        maintenance.remove_periodic(JOB_NAME)
        return
    record()


def enable() -> None:
    """:func:`install`, and feed the histograms every interval in this process (idempotent
    per process): a serving process does this on its first request."""
    global _enabled_pid
    install()
    if _enabled_pid == os.getpid():
        return
    _enabled_pid = os.getpid()
    from pooled_clients import maintenance

    interval = float(conf.get_process_setting("POOLED_CLIENTS_METRICS_INTERVAL"))
    maintenance.add_periodic(JOB_NAME, interval, _record_job)


def on_request_started(**kwargs: Any) -> None:
    """``request_started`` receiver: the first request of a serving process starts the job."""
    if _enabled_pid != os.getpid():
        enable()
