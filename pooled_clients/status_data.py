"""The data behind the admin "Pool status" page and its JSON form."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pooled_clients import shared_status
from pooled_clients.core import utc_text
from pooled_clients.masking import mask_text

__all__ = ["misconfigured_pools", "status_data"]

logger = logging.getLogger("pooled_clients")

#: backend_stats keys the page shows for HTTP pools.
HTTP_KEYS = ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "error_rate", "requests_total")


def status_data(*, publish_self: bool = True) -> dict[str, Any]:
    """``{"host", "pid", "pools": [as_dict(), ...]}``, plus ``"workers"`` (every process
    that published within MAX_AGE) and ``"totals"`` (per alias) when shared status is on,
    and ``"workers_skipped"`` when malformed entries of the store were left out. Every
    text is masked and on one line (:func:`pooled_clients.shared_status.clean`).
    ``publish_self`` makes a serving process publish now (a one-off command does not)."""
    data: dict[str, Any] = {
        "host": shared_status.host_id(),
        "pid": os.getpid(),
        "pools": shared_status.pool_dicts(),
    }
    misconfigured = misconfigured_pools()
    if misconfigured:
        data["misconfigured"] = misconfigured
    if shared_status.enabled():
        try:
            # The serving worker shows itself at once, without waiting for its next round.
            if publish_self:
                shared_status.start()
                shared_status.publish()
            workers, skipped = shared_status.read_report()
        except Exception as exc:  # the local pools still deserve a page
            logger.warning("Reading the shared pool status failed: %s", type(exc).__name__)
            workers, skipped = [], 0
            data["workers_error"] = f"the shared status store failed ({type(exc).__name__})"
        if skipped:
            data["workers_skipped"] = skipped
        data["workers"] = workers
        data["totals"] = shared_status.totals(workers)
    return data


def misconfigured_pools() -> list[dict[str, str]]:
    """``[{"alias", "problem"}, ...]``: the pools that cannot be built, each with what
    ``manage.py check`` says about it (masked), so a page can show them beside the others."""
    from django.core.exceptions import ImproperlyConfigured

    from pooled_clients.handler import pools

    found = []
    for alias in pools:
        try:
            pools[alias]
        except ImproperlyConfigured as exc:
            found.append({"alias": str(alias), "problem": mask_text(str(exc))})
    return found


def decorate(data: dict[str, Any]) -> dict[str, Any]:
    """Add what the template needs (percentages, short names) to a copy of ``data``."""
    pools = [_decorate_pool(dict(p)) for p in data["pools"]]
    result = dict(data, pools=pools, shared="workers" in data,
                  generated_at=utc_text(time.time()))
    if "workers" in data:
        now = time.time()
        result["workers"] = [dict(w, drained_ago=_drained_ago(w, now)) for w in data["workers"]]
    if "totals" in data:
        result["totals"] = [
            dict(t, utilization_pct=round(t["utilization"] * 100)) for t in data["totals"]
        ]
    return result


def _drained_ago(worker: dict[str, Any], now: float) -> float | None:
    """Seconds since any pool of ``worker`` was last drained, or None."""
    times = [p["last_drained_at"] for p in worker.get("pools", ()) if p.get("last_drained_at")]
    return round(max(0.0, now - max(times)), 1) if times else None


def _decorate_pool(pool: dict[str, Any]) -> dict[str, Any]:
    max_size = pool["max_size"] or 1
    pool["utilization_pct"] = round(pool["in_use"] * 100 / max_size)
    pool["idle_pct"] = round(pool["idle"] * 100 / max_size)
    pool["free"] = max(0, pool["max_size"] - pool["size"])
    pool["backend_name"] = pool["backend"].rsplit(".", 1)[-1]
    backend_stats = pool.get("backend_stats") or {}
    pool["http"] = (
        {key: backend_stats.get(key) for key in HTTP_KEYS}
        if "latency_ms_p50" in backend_stats else None
    )
    if pool["http"] is not None and pool["http"]["error_rate"] is not None:
        pool["http"]["error_pct"] = round(pool["http"]["error_rate"] * 100, 2)
    pool["views_holding"], pool["views_waiting"] = _busiest_views(pool.get("by_view") or {})
    pool["endpoint_list"] = [
        _decorate_pool(dict(e, name=name)) for name, e in (pool.get("endpoints") or {}).items()
    ]
    pool["key_list"] = [
        _decorate_pool(dict(k, name=name)) for name, k in (pool.get("top_keys") or {}).items()
    ]
    return pool


def _busiest_views(by_view: dict[str, dict[str, Any]], limit: int = 5
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The views that held clients longest (in all), and those that waited most (p95)."""
    views = [dict(figures, name=name) for name, figures in by_view.items()]
    holding = sorted(views, key=lambda v: -v["hold_ms_total"])[:limit]
    waiting = sorted((v for v in views if v["wait_ms_p95"]), key=lambda v: -v["wait_ms_p95"])
    return holding, waiting[:limit]
