"""All workers on one page: publishing, reading, ageing out, under real gunicorn workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.core.signals import request_started
from django.test import Client

from devservers.http import UpstreamServer
from pooled_clients import pools, shared_status
from pooled_clients.models import WorkerStatus
from tests.observability_site.server import Site, serve

Configure = Callable[[str, dict[str, Any]], None]
URL = "/admin/pooled_clients/poolstatus/"


def _http(upstream: UpstreamServer) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url, "headers": {"Authorization": "Bearer tok-XYZ"}}}


def test_off_by_default_connects_and_writes_nothing(upstream: UpstreamServer,
                                                    pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("api", _http(upstream))
    assert not shared_status.enabled()
    # ready() connected no receiver (disconnect reports whether there was one).
    assert not request_started.disconnect(dispatch_uid="pooled_clients_shared_status")
    shared_status.publish()  # no database access is allowed in this test: it must not query
    assert shared_status.read() == []


@pytest.mark.django_db
def test_database_store_publishes_reads_and_ages_out(settings: Any, upstream: UpstreamServer,
                                                     pooled_clients_settings: Configure) -> None:
    # `settings` comes first so that its override is undone last.
    settings.POOLED_CLIENTS_SHARED_STATUS = "database"
    pooled_clients_settings("api", _http(upstream))
    with pools["api"].connection():
        shared_status.publish()
    shared_status.publish()  # an upsert: still one row
    assert WorkerStatus.objects.count() == 1
    WorkerStatus.objects.create(host="other-host", pid=4242, published_at=time.time() - 1,
                                payload=json.dumps({"host": "other-host", "pid": 4242,
                                                    "published_at": time.time() - 1,
                                                    "pools": [{"alias": "api", "in_use": 2,
                                                               "size": 3, "max_size": 10}]}))
    workers = shared_status.read()
    assert {w["pid"] for w in workers} == {4242, os.getpid()}
    totals = {t["alias"]: t for t in shared_status.totals(workers)}
    assert totals["api"]["workers"] == 2 and totals["api"]["max_size"] == 20
    assert totals["api"]["in_use"] == 2 and totals["api"]["acquired_total"] == 1
    # A worker that stopped publishing ages out.
    WorkerStatus.objects.filter(pid=4242).update(published_at=time.time() - 31)
    assert [w["pid"] for w in shared_status.read()] == [os.getpid()]
    assert "tok-XYZ" not in WorkerStatus.objects.get(pid=os.getpid()).payload


def _cache_store_with_another_worker(settings: Any, location: str) -> Any:
    """Shared status in a LocMemCache alias "shared", where worker other:7 has published."""
    from django.core.cache import caches

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                   "LOCATION": location},
    }
    settings.POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "shared"}
    cache = caches["shared"]
    cache.set("pooled_clients:status:other:7", {"host": "other", "pid": 7,
                                                  "published_at": time.time(), "pools": []})
    cache.set("pooled_clients:status:index", {"other:7": time.time()})
    return cache


@pytest.mark.django_db
def test_cache_store_and_admin_json_lists_workers(settings: Any, admin_client: Client,
                                                  upstream: UpstreamServer,
                                                  pooled_clients_settings: Configure) -> None:
    settings.POOLED_CLIENTS_SHARED_STATUS_MAX_AGE = 5.0
    cache = _cache_store_with_another_worker(settings, "shared-status-test")
    pooled_clients_settings("api", _http(upstream))
    data = admin_client.get(URL + "?format=json").json()
    assert {(w["host"], w["pid"]) for w in data["workers"]} == {
        ("other", 7), (data["host"], data["pid"])}
    assert [t["alias"] for t in data["totals"]] == ["api"]
    html = admin_client.get(URL).content.decode()
    assert 'data-pid="7"' in html and f'data-pid="{os.getpid()}"' in html
    # The other worker stops publishing: it drops off once MAX_AGE has passed.
    cache.set("pooled_clients:status:other:7", {"host": "other", "pid": 7,
                                                  "published_at": time.time() - 6, "pools": []})
    data = admin_client.get(URL + "?format=json").json()
    assert [w["pid"] for w in data["workers"]] == [os.getpid()]


def _page_pids(session: requests.Session, site: Site) -> set[int]:
    data = session.get(f"{site.url}{URL}?format=json", timeout=10).json()
    assert "workers_error" not in data, data["workers_error"]
    return {w["pid"] for w in data["workers"]}


@pytest.mark.slow
def test_three_gunicorn_workers_on_one_page_and_a_killed_one_ages_out(
        upstream: UpstreamServer) -> None:
    max_age = 3.0
    with serve(3, {"api": _http(upstream)}, OBS_SHARED_STATUS='"database"',
               OBS_SHARED_INTERVAL="0.5", OBS_SHARED_MAX_AGE=str(max_age)) as site:
        workers = site.worker_pids()
        served: set[int] = set()
        lock = threading.Lock()

        def work(_: int) -> None:
            pid = requests.get(f"{site.url}/work/?hold=0.1", timeout=10).json()["pid"]
            with lock:
                served.add(pid)

        with ThreadPoolExecutor(6) as executor:
            for _ in range(20):
                list(executor.map(work, range(6)))
                if served == workers:
                    break
        assert served == workers
        session = site.login()
        deadline = time.monotonic() + 10
        while _page_pids(session, site) != workers:
            assert time.monotonic() < deadline, (_page_pids(session, site), workers)
            time.sleep(0.2)
        html = session.get(f"{site.url}{URL}", timeout=10).text
        for pid in workers:
            assert f'data-pid="{pid}"' in html
        assert "tok-XYZ" not in html

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        while victim in _page_pids(session, site):
            assert time.monotonic() - killed_at < max_age + 2, "the killed worker stayed"
            time.sleep(0.2)
        assert victim not in _page_pids(session, site)


def test_withdraw_removes_this_process_at_once_and_stops_publishing(
        settings: Any, upstream: UpstreamServer, pooled_clients_settings: Configure) -> None:
    from pooled_clients import maintenance

    settings.POOLED_CLIENTS_SHARED_STATUS_INTERVAL = 60.0
    cache = _cache_store_with_another_worker(settings, "shared-status-withdraw")
    pooled_clients_settings("api", _http(upstream))
    assert not shared_status.withdraw()  # never published: nothing to do
    shared_status.start()
    shared_status.publish()
    assert {w["pid"] for w in shared_status.read()} == {7, os.getpid()}

    assert shared_status.withdraw()
    # Gone from the page at once, not after MAX_AGE; the other worker stays.
    assert [w["pid"] for w in shared_status.read()] == [7]
    assert set(cache.get("pooled_clients:status:index")) == {"other:7"}
    assert shared_status.JOB_NAME not in maintenance._periodic
    assert not shared_status.withdraw()  # once


def test_withdraw_from_an_unusable_store_logs_and_returns(
        settings: Any, upstream: UpstreamServer, pooled_clients_settings: Configure,
        caplog: pytest.LogCaptureFixture) -> None:
    settings.POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "no-such-cache"}
    settings.POOLED_CLIENTS_SHARED_STATUS_INTERVAL = 60.0
    pooled_clients_settings("api", _http(upstream))
    shared_status.start()
    started = time.monotonic()
    assert not shared_status.withdraw(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert "Could not withdraw the shared status" in caplog.text
    assert "no-such-cache" in caplog.text


@pytest.mark.slow
def test_a_worker_stopped_cleanly_leaves_the_page_at_once(upstream: UpstreamServer) -> None:
    max_age = 60.0  # far longer than the test: only a withdrawal can remove the worker
    with serve(2, {"api": _http(upstream)}, OBS_SHARED_STATUS='"database"',
               OBS_SHARED_INTERVAL="0.5", OBS_SHARED_MAX_AGE=str(max_age)) as site:
        workers = site.worker_pids()
        session = site.login()
        deadline = time.monotonic() + 20
        while _page_pids(session, site) != workers:
            assert time.monotonic() < deadline, (_page_pids(session, site), workers)
            requests.get(f"{site.url}/work/", timeout=10)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGTERM)  # a gunicorn worker's graceful exit
        stopped_at = time.monotonic()
        while victim in _page_pids(session, site):
            assert time.monotonic() - stopped_at < 10, "the stopped worker stayed on the page"
            time.sleep(0.2)
        # The master replaced it; only live workers are listed.
        deadline = time.monotonic() + 20
        while len(site.worker_pids()) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _page_pids(session, site) <= site.worker_pids()
