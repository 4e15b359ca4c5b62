"""Prometheus metrics (extra ``[prometheus]``): ``pooled_clients_*``, labelled by ``alias``.

Nothing here touches acquire/release: a periodic job of the maintenance thread (every
``POOLED_CLIENTS_METRICS_INTERVAL`` seconds) and :func:`metrics_view` (right before each
scrape) turn the pools' stats into gauge values and counter increments, and feed the wait
histogram with the checkouts recorded since the last refresh.

Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and call
``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` in ``child_exit``: gauges
are per live worker and summed (``livesum``), counters add up over every worker that lived.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from pooled_clients import access, conf
from pooled_clients.core import ClientPool
from pooled_clients.stats import PoolStats

logger = logging.getLogger("pooled_clients")

__all__ = ["enable", "metrics_view", "refresh"]

JOB_NAME = "pooled_clients.metrics"

_GAUGE_FIELDS: dict[str, str] = {
    "size": "Open clients plus those being created.",
    "idle": "Idle clients.",
    "in_use": "Clients checked out.",
    "waiting": "Callers waiting for a client.",
    "max_size": "MAX_SIZE of the pool, summed over the live processes this scrape covers "
                "(under gunicorn: MAX_SIZE x workers of this server; sum over servers only "
                "what one service sees).",
}
_COUNTER_FIELDS: dict[str, str] = {
    "acquired": "Successful checkouts.",
    "released": "Clients returned.",
    "created": "Clients opened.",
    "closed": "Clients closed.",
    "timeouts": "Acquires that timed out.",
    "errors": "Failures to create or use a client.",
    "check_failures": "Clients that failed validation.",
    "leaks": "Clients held longer than LEAK_TIMEOUT.",
}

GAUGES = {
    name: Gauge(f"pooled_clients_{name}", doc, ["alias"], multiprocess_mode="livesum")
    for name, doc in _GAUGE_FIELDS.items()
}
HEALTHY = Gauge("pooled_clients_healthy", "1 when the pool is open and its last attempt to "
                "reach the service succeeded (the lowest over live workers).", ["alias"],
                multiprocess_mode="livemin")
COUNTERS = {
    name: Counter(f"pooled_clients_{name}", doc, ["alias"])
    for name, doc in _COUNTER_FIELDS.items()
}
WAIT_SECONDS = Histogram(
    "pooled_clients_wait_seconds", "Time acquire() waited for a client.", ["alias"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
             10.0),
)


class _Seen:
    """What the last refresh read from one pool object."""

    __slots__ = ("counters", "pool", "wait_pos")

    def __init__(self, pool: ClientPool[Any]) -> None:
        self.pool = weakref.ref(pool)
        self.counters = dict.fromkeys(_COUNTER_FIELDS, 0)
        #: id(source) -> the last checkout number read from each of the pool's wait
        #: sources (itself, or each member of an endpoint or keyed pool).
        self.wait_pos: dict[int, int] = {}


_lock = threading.Lock()
_seen: dict[int, _Seen] = {}
_seen_pid = 0
_aliases: set[str] = set()
_enabled_pid = 0


def refresh() -> None:
    """Bring every metric up to date with this process's pools (pools not yet built are
    not built)."""
    global _seen_pid, _seen, _aliases
    from pooled_clients.handler import pools

    with _lock:
        if _seen_pid != os.getpid():
            # A forked child starts with fresh pools and its own metric values.
            _seen_pid, _seen, _aliases = os.getpid(), {}, set()
        live: dict[int, _Seen] = {}
        aliases = set()
        for pool in pools.built():
            seen = _seen.get(id(pool))
            if seen is None or seen.pool() is not pool:
                seen = _Seen(pool)
            # Kept at once: what one pool's update added is never added again, even when
            # another pool's update fails.
            live[id(pool)] = _seen[id(pool)] = seen
            try:
                stats = pool.stats()
                aliases.add(stats.alias)
                _update(pool, stats, seen)
            except Exception:
                logger.exception("Reading the metrics of pool %r failed", pool.alias)
                aliases.add(pool.alias)
        for gone in _aliases - aliases:
            # Zero first: in multiprocess mode the value lives on in this worker's file.
            for gauge in GAUGES.values():
                gauge.labels(gone).set(0)
            for gauge in (*GAUGES.values(), HEALTHY):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        _seen, _aliases = live, aliases


def _update(pool: ClientPool[Any], stats: PoolStats, seen: _Seen) -> None:
    alias = stats.alias
    for name, gauge in GAUGES.items():
        gauge.labels(alias).set(getattr(stats, name))
    HEALTHY.labels(alias).set(1 if stats.healthy else 0)
    for name, counter in COUNTERS.items():
        current = getattr(stats, f"{name}_total")
        delta = current - seen.counters[name]
        if delta > 0:
            counter.labels(alias).inc(delta)
        seen.counters[name] = current
    histogram = WAIT_SECONDS.labels(alias)
    for source in pool.wait_sources():
        position, zeros, waits = source.waits_since(seen.wait_pos.get(id(source), 0))
        seen.wait_pos[id(source)] = position
        _observe_zeros(histogram, zeros)
        for seconds in waits:
            histogram.observe(seconds)


def _observe_zeros(histogram: Any, count: int) -> None:
    """``count`` observations of 0 at once: a busy pool has millions of checkouts that did
    not wait between two refreshes, too many to observe one by one."""
    buckets = getattr(histogram, "_buckets", None)
    if count <= 0:
        return
    if buckets:
        buckets[0].inc(count)  # every bucket bound is >= 0: zeros land in the first one
        return
    for _ in range(count):  # pragma: no cover - a prometheus_client without _buckets
        histogram.observe(0.0)


def _refresh_job() -> None:
    if not conf.get_process_setting("POOLED_CLIENTS_METRICS"):
        from pooled_clients import maintenance

        maintenance.remove_periodic(JOB_NAME)
        return
    refresh()


def enable() -> None:
    """Refresh the metrics every interval in this process (idempotent per process)."""
    global _enabled_pid
    if _enabled_pid == os.getpid():
        return
    _enabled_pid = os.getpid()
    from pooled_clients import maintenance

    interval = float(conf.get_process_setting("POOLED_CLIENTS_METRICS_INTERVAL"))
    maintenance.add_periodic(JOB_NAME, interval, _refresh_job)


def on_request_started(**kwargs: Any) -> None:
    """``request_started`` receiver: the first request of a serving process starts the job."""
    if _enabled_pid != os.getpid():
        enable()


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve every Prometheus metric of the process (of all workers in multiprocess mode),
    after bringing this process's pool metrics up to date.

    Open to everyone unless ``POOLED_CLIENTS_METRICS_ACCESS`` says who may read it
    (:mod:`pooled_clients.access`); anyone else gets 403.
    """
    if not access.allowed(request, conf.get_process_setting("POOLED_CLIENTS_METRICS_ACCESS")):
        return HttpResponseForbidden("403 Forbidden\n", content_type="text/plain")
    refresh()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(_registry()), content_type=content_type)
