"""Prometheus metrics: values from the stats, the scrape view, gunicorn multiprocess mode."""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.test import Client
from prometheus_client import REGISTRY

from devservers.http import UpstreamServer
from pooled_clients import metrics, pools
from tests.observability_site.server import serve

Configure = Callable[[str, dict[str, Any]], None]


def _http(upstream: UpstreamServer, **extra: Any) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url, "headers": {"Authorization": "Bearer tok-XYZ"}},
            **extra}


def _value(name: str, alias: str) -> float:
    value = REGISTRY.get_sample_value(name, {"alias": alias})
    return 0.0 if value is None else value


def test_refresh_turns_stats_into_gauges_counters_and_wait_histogram(
        upstream: UpstreamServer, pooled_clients_settings: Configure) -> None:
    alias = "metrics-refresh"
    pooled_clients_settings(alias, _http(upstream, MAX_SIZE=3))
    metrics.refresh()
    before = {name: _value(name, alias) for name in (
        "pooled_clients_acquired_total", "pooled_clients_created_total",
        "pooled_clients_wait_seconds_count")}
    pool = pools[alias]
    for _ in range(5):
        with pool.connection():
            pass
    held = pool.acquire()
    try:
        metrics.refresh()
        assert _value("pooled_clients_acquired_total", alias) - before[
            "pooled_clients_acquired_total"] == 6
        assert _value("pooled_clients_wait_seconds_count", alias) - before[
            "pooled_clients_wait_seconds_count"] == 6
        assert _value("pooled_clients_created_total", alias) - before[
            "pooled_clients_created_total"] == 1
        assert _value("pooled_clients_in_use", alias) == 1
        assert _value("pooled_clients_max_size", alias) == 3
        assert _value("pooled_clients_healthy", alias) == 1
        metrics.refresh()  # no new activity: no double counting
        assert _value("pooled_clients_acquired_total", alias) - before[
            "pooled_clients_acquired_total"] == 6
    finally:
        pool.release(held)
    metrics.refresh()
    assert _value("pooled_clients_in_use", alias) == 0


def test_an_endpoint_pool_beside_a_plain_pool_is_counted_once_per_checkout(
        upstream: UpstreamServer, pooled_clients_settings: Configure) -> None:
    plain, routed = "metrics-plain", "metrics-endpoints"
    pooled_clients_settings(plain, _http(upstream))
    pooled_clients_settings(routed, {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url},
        "ENDPOINTS": {"one": {}, "two": {}},
        "ROUTING": "round_robin",
    })
    metrics.refresh()
    before = {alias: (_value("pooled_clients_acquired_total", alias),
                      _value("pooled_clients_wait_seconds_count", alias))
              for alias in (plain, routed)}
    for alias in (plain, routed):
        for _ in range(3):
            with pools[alias].connection():
                pass
    for _ in range(3):  # every refresh after the first adds nothing
        metrics.refresh()
        for alias in (plain, routed):
            acquired, waits = before[alias]
            assert _value("pooled_clients_acquired_total", alias) - acquired == 3, alias
            assert _value("pooled_clients_wait_seconds_count", alias) - waits == 3, alias


def test_scrape_view_refreshes_and_shows_no_secret(
        client: Client, upstream: UpstreamServer, pooled_clients_settings: Configure) -> None:
    alias = "metrics-view"
    pooled_clients_settings(alias, _http(upstream))
    with pools[alias].connection():
        response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert f'pooled_clients_in_use{{alias="{alias}"}} 1.0' in text
    assert "tok-XYZ" not in text
    assert re.search(r"^pooled_clients_wait_seconds_bucket\{alias=", text, re.M)


def test_reload_does_not_double_count(upstream: UpstreamServer,
                                      pooled_clients_settings: Configure) -> None:
    alias = "metrics-reload"
    pooled_clients_settings(alias, _http(upstream))
    metrics.refresh()
    start = _value("pooled_clients_acquired_total", alias)
    with pools[alias].connection():
        pass
    metrics.refresh()
    pools.reload()
    with pools[alias].connection():
        pass
    metrics.refresh()
    assert _value("pooled_clients_acquired_total", alias) - start == 2


@pytest.mark.slow
def test_two_gunicorn_workers_add_up_in_multiprocess_mode(upstream: UpstreamServer) -> None:
    with tempfile.TemporaryDirectory(prefix="prom-") as prom_dir, serve(
            2, {"api": _http(upstream)}, OBS_METRICS="1", PROMETHEUS_MULTIPROC_DIR=prom_dir,
    ) as site:
        served: dict[int, int] = {}
        lock = threading.Lock()

        def work() -> None:
            pid = requests.get(f"{site.url}/work/?hold=0.05", timeout=10).json()["pid"]
            with lock:
                served[pid] = served.get(pid, 0) + 1

        with ThreadPoolExecutor(4) as executor:
            for _ in range(10):
                list(executor.map(lambda _: work(), range(4)))
                if len(served) == 2:
                    break
        assert len(served) == 2, served
        total = sum(served.values())

        def scraped() -> float:
            text = requests.get(f"{site.url}/metrics", timeout=10).text
            match = re.search(r'^pooled_clients_acquired_total\{alias="api"\} (\S+)$', text, re.M)
            assert "tok-XYZ" not in text
            return float(match.group(1)) if match else 0.0

        # The worker that does not serve the scrape reports within its refresh interval.
        deadline = threading.Event()
        timer = threading.Timer(10, deadline.set)
        timer.start()
        try:
            value = scraped()
            while value != total and not deadline.wait(0.1):
                value = scraped()
        finally:
            timer.cancel()
        assert value == total, (value, served)
