"""Checkouts attributed to views and tasks: by_view, leases, leak reports, the admin page."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from devservers.http import UpstreamServer
from pooled_clients import attribution, pools
from pooled_clients.attribution import attribute
from pooled_clients.pool import Pool, PoolSettings
from tests.fakes import FakeBackend
from tests.observability_site.server import serve
from tests.waiting import wait_until

Configure = Callable[[str, dict[str, Any]], None]
URL = "/admin/pooled_clients/poolstatus/"


def _http(upstream: UpstreamServer) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url}}


def test_two_views_under_gunicorn_are_counted_exactly_and_the_slow_one_listed_first(
        upstream: UpstreamServer) -> None:
    with serve(1, {"api": _http(upstream)}) as site:
        for _ in range(7):
            assert requests.get(f"{site.url}/work/", timeout=10).ok
        for _ in range(3):
            assert requests.get(f"{site.url}/slow/?hold=0.05", timeout=10).ok
        session = site.login()
        data = session.get(f"{site.url}{URL}?format=json", timeout=10).json()
        by_view = data["pools"][0]["by_view"]
        assert by_view["work"]["acquired_total"] == 7
        assert by_view["slow"]["acquired_total"] == 3
        assert by_view["slow"]["hold_ms_total"] >= 150
        assert by_view["slow"]["hold_ms_p95"] >= 50
        assert by_view["slow"]["hold_ms_total"] > by_view["work"]["hold_ms_total"]
        html = session.get(f"{site.url}{URL}", timeout=10).text
        table = html[html.index("pc-views-holding"):]
        table = table[:table.index("</table>")]
        assert re.findall(r'data-view="([^"]+)"', table)[:2] == ["slow", "work"]


def test_an_attribute_block_is_attributed_to_its_name_and_restored_after() -> None:
    pool = Pool("tasks", FakeBackend(), PoolSettings(max_size=2))
    try:
        with attribute("task"):
            for _ in range(3):
                with pool.connection():
                    pass
            client = pool.acquire()
            assert [lease.view for lease in pool.stats().leases] == ["task"]
        pool.release(client)
        with pool.connection():
            assert [lease.view for lease in pool.stats().leases] == ["-"]
        by_view = pool.stats().by_view
        assert by_view["task"].acquired_total == 4
        assert by_view["-"].acquired_total == 1
        assert attribution.current.get() == "-"
    finally:
        pool.close()


def test_a_handed_over_client_is_attributed_to_the_waiter_not_to_the_releaser() -> None:
    pool = Pool("handoff", FakeBackend(), PoolSettings(max_size=1, timeout=5))
    try:
        with attribute("holder"):
            client = pool.acquire()
        got: list[str] = []

        def waiter() -> None:
            with attribute("waiter"), pool.connection():
                got.extend(lease.view for lease in pool.stats().leases)

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: pool.stats().waiting == 1)
        with attribute("releaser"):
            pool.release(client)
        thread.join(5)
        assert got == ["waiter"]
        by_view = pool.stats().by_view
        assert set(by_view) == {"holder", "waiter"}
        assert by_view["waiter"].wait_ms_p95 is not None and by_view["waiter"].wait_ms_p95 > 0
    finally:
        pool.close()


def test_views_past_the_limit_are_counted_as_other() -> None:
    from pooled_clients.stats import MAX_VIEWS

    pool = Pool("many", FakeBackend(), PoolSettings(max_size=1))
    try:
        for number in range(MAX_VIEWS + 50):
            with attribute(f"view-{number}"), pool.connection():
                pass
        by_view = pool.stats().by_view
        assert len(by_view) == MAX_VIEWS + 1
        assert by_view["other"].acquired_total == 50
        assert sum(v.acquired_total for v in by_view.values()) == MAX_VIEWS + 50
    finally:
        pool.close()


def test_a_leak_report_names_the_view(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool("leaky", FakeBackend(), PoolSettings(max_size=1, leak_timeout=0.05))
    try:
        with attribute("reports:nightly"):
            client = pool.acquire()
        with caplog.at_level(logging.WARNING, logger="pooled_clients"):
            wait_until(lambda: "held for" in caplog.text, timeout=5)
        assert "in view reports:nightly" in caplog.text
        pool.release(client)
    finally:
        pool.close()


def test_the_middleware_attributes_checkouts_of_the_test_client(
        upstream: UpstreamServer, pooled_clients_settings: Configure, settings: Any,
        client: Any) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE,
                           "pooled_clients.middleware.PoolAttributionMiddleware"]
    settings.ROOT_URLCONF = "tests.observability_site.urls"
    pooled_clients_settings("api", _http(upstream))
    for _ in range(2):
        assert client.get("/work/").status_code == 200
    assert pools["api"].stats().by_view["work"].acquired_total == 2
    assert attribution.current.get() == "-"


def test_the_middleware_attributes_checkouts_under_asgi(
        upstream: UpstreamServer, pooled_clients_settings: Configure, settings: Any,
        async_client: Any) -> None:
    import asyncio

    settings.MIDDLEWARE = [*settings.MIDDLEWARE,
                           "pooled_clients.middleware.PoolAttributionMiddleware"]
    settings.ROOT_URLCONF = "tests.observability_site.urls"
    pooled_clients_settings("api", _http(upstream))

    async def get() -> int:
        response = await async_client.get("/slow/")
        return int(response.status_code)

    assert asyncio.run(get()) == 200
    assert pools["api"].stats().by_view["slow"].acquired_total == 1


_STALE_WAIT = """
import threading, time
from pooled_clients import core
from pooled_clients.attribution import attribute
from pooled_clients.pool import Pool, PoolSettings
from tests.fakes import FakeBackend
pool = Pool("late", FakeBackend(), PoolSettings(max_size=1))
held = pool.acquire()
waiter = threading.Thread(target=lambda: pool.release(pool.acquire(timeout=5)))
waiter.start()
while not pool.stats().waiting:
    time.sleep(0.001)
time.sleep(0.05)  # the waiter waits a while before the hand-over
pool.release(held)
waiter.join()
core.record_views()
with attribute("late"), pool.connection():
    pass
print(pool.stats().by_view["late"].wait_ms_p95)
"""


def test_a_wait_from_before_attribution_was_on_is_not_counted() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _STALE_WAIT], cwd=repo, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert float(out) == 0.0
