"""Text the project does not control (aliases, thread names, describe(), rows of the shared
status store) never forges a line, splits a table or takes a page down."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from devservers.http import UpstreamServer
from pooled_clients import pools, shared_status
from pooled_clients.backends.tcp import TCPBackend

Configure = Callable[[str, dict[str, Any]], None]
URL = "/admin/pooled_clients/poolstatus/"
FORGED = "\nWARNING forged line"
ALIAS = "api" + FORGED
THREAD = "worker" + FORGED


class ForgingBackend(TCPBackend):
    """A TCP backend whose target text carries a line break and an escape sequence."""

    def describe(self) -> str:
        return "tcp://evil" + FORGED + "\x1b[2J"


@pytest.fixture
def forging_pool(upstream: UpstreamServer, pooled_clients_settings: Configure) -> Iterator[None]:
    """Pool ``ALIAS`` (a ForgingBackend) with one client held by thread ``THREAD``."""
    pooled_clients_settings(ALIAS, {
        "BACKEND": "tests.test_untrusted_text.ForgingBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": upstream.port},
    })
    acquired, done = threading.Event(), threading.Event()

    def hold() -> None:
        with pools[ALIAS].connection():
            acquired.set()
            done.wait(30)

    thread = threading.Thread(target=hold, name=THREAD, daemon=True)
    thread.start()
    assert acquired.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_line_breaks_in_alias_thread_and_target_do_not_split_pool_status(
        forging_pool: None) -> None:
    out = StringIO()
    call_command("pool_status", stdout=out)
    # "host ... pid ...", the header and one row, then the note that this is one process.
    lines = out.getvalue().split("\n\nNote:")[0].splitlines()
    assert len(lines) == 3, lines
    assert not any(line.startswith("WARNING forged") for line in lines)
    assert "api\\nWARNING forged line" in lines[2] and "\x1b" not in out.getvalue()


def test_line_breaks_never_reach_the_admin_data(forging_pool: None,
                                                admin_client: Client) -> None:
    data = admin_client.get(URL + "?format=json").json()
    (pool,) = data["pools"]
    assert pool["alias"] == "api\\nWARNING forged line"
    assert pool["leases"][0]["thread"] == "worker\\nWARNING forged line"
    assert all(text.isprintable() for text in _strings(data)), data
    html = admin_client.get(URL).content.decode()
    assert "WARNING forged" in html and "\nWARNING forged" not in html


def test_line_breaks_never_reach_the_check_command(forging_pool: None) -> None:
    out = StringIO()
    call_command("pool_check", ALIAS, stdout=out)
    assert not any(line.startswith("WARNING forged") for line in out.getvalue().splitlines())


def test_a_thread_name_cannot_forge_a_line_of_the_leak_report(
        upstream: UpstreamServer, pooled_clients_settings: Configure,
        caplog: pytest.LogCaptureFixture) -> None:
    pooled_clients_settings("leaky", {
        "BACKEND": "pooled_clients.backends.tcp.TCPBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": upstream.port},
        "LEAK_TIMEOUT": 0.1,
    })
    reported, done = threading.Event(), threading.Event()
    reports: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "held for" in record.getMessage():
                reports.append(record.getMessage())
                reported.set()

    watch = Watch()
    logging.getLogger("pooled_clients").addHandler(watch)

    def hold() -> None:
        with pools["leaky"].connection():
            done.wait(30)

    thread = threading.Thread(target=hold, name=THREAD, daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="pooled_clients"):
            thread.start()
            assert reported.wait(10)
    finally:
        done.set()
        thread.join(10)
        logging.getLogger("pooled_clients").removeHandler(watch)
    report = reports[0]
    # The report's first line names the thread; the acquiring stack follows on its own lines.
    assert "\nWARNING forged" not in report, report


# --------------------------------------------------------------------------- malformed rows

MALFORMED_PAYLOADS = [
    "not json {",
    json.dumps(["a", "list"]),
    json.dumps({"host": "h1", "pid": 1}),                                     # no pools
    json.dumps({"host": "h2", "pid": "two", "published_at": 0, "pools": []}),  # pid type
    json.dumps({"host": "h3", "pid": 3, "published_at": "now", "pools": []}),
    json.dumps({"host": "h4", "pid": 4, "published_at": 0, "pools": "none"}),
    json.dumps({"host": "h5", "pid": 5, "published_at": 0, "pools": [{"in_use": 1}]}),
    json.dumps({"host": "h6", "pid": 6, "published_at": 0,
                "pools": [{"alias": "api", "in_use": "many", "size": None}]}),
    json.dumps({"host": "h7", "pid": 7, "published_at": 0,
                "pools": [{"alias": "api", "healthy": "yes"}]}),
]


def _plant_rows(now: float) -> None:
    from pooled_clients.models import WorkerStatus

    for number, payload in enumerate(MALFORMED_PAYLOADS):
        # published_at inside the payload is checked by the reader; the row's own column
        # is what the database filters on.
        WorkerStatus.objects.create(host=f"bad-{number}", pid=number, published_at=now,
                                    payload=payload.replace('"published_at": 0',
                                                            f'"published_at": {now}'))
    WorkerStatus.objects.create(host="good\nhost", pid=4242, published_at=now, payload=json.dumps(
        {"host": "good\nhost", "pid": 4242, "published_at": now,
         "pools": [{"alias": "api\u202e", "in_use": 1, "size": 2, "max_size": 5}]}))


@pytest.mark.django_db
def test_malformed_rows_are_skipped_and_said_so(settings: Any, admin_client: Client,
                                                upstream: UpstreamServer,
                                                pooled_clients_settings: Configure) -> None:
    settings.POOLED_CLIENTS_SHARED_STATUS = "database"
    pooled_clients_settings("api", {
        "BACKEND": "pooled_clients.backends.tcp.TCPBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": upstream.port},
    })
    _plant_rows(time.time())
    skipped = len(MALFORMED_PAYLOADS)

    response = admin_client.get(URL)
    assert response.status_code == 200
    assert f"Skipped {skipped} malformed entries" in response.content.decode()
    data = admin_client.get(URL + "?format=json").json()
    assert data["workers_skipped"] == skipped
    assert "good\\nhost" in {w["host"] for w in data["workers"]}
    assert all(text.isprintable() for text in _strings(data)), data
    totals = {t["alias"]: t for t in data["totals"]}
    assert totals["api\\u202e"]["in_use"] == 1
    assert admin_client.get(URL + "?format=fragment").status_code == 200

    out = StringIO()
    call_command("pool_status", stdout=out)
    text = out.getvalue()
    assert f"skipped {skipped} malformed entries of the shared status store" in text
    assert "good\\nhost pid 4242" in text


def test_malformed_cache_entries_are_skipped(settings: Any, upstream: UpstreamServer,
                                             pooled_clients_settings: Configure) -> None:
    from django.core.cache import caches

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                   "LOCATION": "untrusted-text"},
    }
    settings.POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "shared"}
    pooled_clients_settings("api", {
        "BACKEND": "pooled_clients.backends.tcp.TCPBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": upstream.port},
    })
    cache = caches["shared"]
    now = time.time()
    cache.set("pooled_clients:status:x:1", "a string")
    cache.set("pooled_clients:status:x:2", {"host": "x", "pid": 2, "pools": []})
    cache.set("pooled_clients:status:x:3", {"host": "x", "pid": 3, "published_at": now,
                                            "pools": []})
    cache.set("pooled_clients:status:index", {"x:1": now, "x:2": now, "x:3": now, 7: "late"})
    workers, skipped = shared_status.read_report()
    assert [w["pid"] for w in workers] == [3] and skipped == 2
    shared_status.publish()  # a tampered index does not stop this worker from publishing
    assert {w["pid"] for w in shared_status.read()} >= {3}
    cache.clear()


@pytest.mark.django_db
def test_line_breaks_never_split_the_health_report(admin_client: Client,
                                                   pooled_clients_settings: Configure) -> None:
    from devservers.ports import free_port

    pooled_clients_settings(ALIAS, {
        "BACKEND": "tests.test_untrusted_text.ForgingBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": free_port()},  # nothing listens: it fails
        "CONNECT_RETRIES": 0, "HEALTH": {"TIMEOUT": 1.0},
    })
    for url in ("/health/", "/pooled-health/"):
        response = admin_client.get(url + "?format=text")
        assert response.status_code == 500
        lines = response.content.decode().splitlines()
        assert all(line.startswith(("Pool ", "Database(")) for line in lines), lines
        assert "tcp://evil\\nWARNING forged line\\x1b[2J" in response.content.decode()
