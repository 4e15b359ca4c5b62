"""WebSocketBackend and AsyncWebSocketBackend against a ``websockets`` echo server in a thread,
and the async backend under a real uvicorn worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from devservers.tls import Certs
from devservers.websocket import WebSocketEchoServer
from pooled_clients import ClientCreationError, pools
from pooled_clients.backends.websocket import WebSocketBackend
from pooled_clients.conf import validate_definition
from tests.async_site.server import serve
from tests.surfaces import assert_surfaces_show

BACKEND = "pooled_clients.backends.websocket.WebSocketBackend"
ASYNC_BACKEND = "pooled_clients.backends.websocket.AsyncWebSocketBackend"
TOKEN = "Bearer tok-ws-0123456789"
Configure = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def own_ws_server() -> Iterator[WebSocketEchoServer]:
    """A server whose connections this test may close."""
    with WebSocketEchoServer() as server:
        yield server


def _pool(url: str, backend: str = BACKEND, **keys: Any) -> dict[str, Any]:
    options = {"url": url, **keys.pop("OPTIONS", {})}
    return {"BACKEND": backend, "OPTIONS": options, "TIMEOUT": 5.0, "CONNECT_TIMEOUT": 2.0,
            **keys}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_importing_the_backend_does_not_import_websockets() -> None:
    code = ("import sys, pooled_clients.backends.websocket; "
            "assert 'websockets' not in sys.modules, 'websockets was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_check_options_reports_unknown_and_mistyped_options() -> None:
    problems = "\n".join(WebSocketBackend.check_options({
        "url": "http://h/", "base_url": "ws://h/", "header": {}, "headers": {"X": 1},
        "subprotocols": "chat", "ping_timeout": 0, "tls": {"cafle": "x"},
    }))
    for expected in ("unknown option 'header'", "'url' and 'base_url' are both set",
                     "'url' is 'http://h/'", "'headers' must be a dict",
                     "'subprotocols' is 'chat'", "'ping_timeout' is 0",
                     "'tls' has unknown key 'cafle'"):
        assert expected in problems, expected
    assert "'url' (or 'base_url' with keys as paths) is required" in "".join(
        WebSocketBackend.check_options({"headers": {}}))
    assert "use a wss:// URL" in "".join(
        WebSocketBackend.check_options({"url": "ws://h/", "tls": True}))
    assert WebSocketBackend.check_options({"base_url": "wss://h/v1/", "subprotocols": ["a"],
                                           "tls": {"cafile": "/ca.pem"}}) == []
    errors = validate_definition("ws", {"BACKEND": BACKEND, "OPTIONS": {"uri": "ws://h/"}})
    assert errors and errors[0].id.startswith("pooled_clients.E")


def test_system_check_names_the_missing_websockets_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = {"BACKEND": BACKEND, "OPTIONS": {"url": "ws://h/"}}
    assert validate_definition("ws", definition) == []
    monkeypatch.setitem(sys.modules, "websockets", None)  # as if it were not installed
    problems = validate_definition("ws", definition)
    assert [p.id for p in problems] == ["pooled_clients.E011"]
    assert "django-pooled-clients[websocket]" in problems[0].message


def test_a_key_is_a_path_on_the_base_url_and_is_shown_without_its_query(
        ws_server: WebSocketEchoServer) -> None:
    backend = WebSocketBackend("streams", {"base_url": ws_server.url + "ws/"})
    options = backend.key_options("/btcusdt")
    assert options["url"] == ws_server.url + "ws/btcusdt"
    assert backend.key_options("btcusdt") == options
    assert backend.key_options("ws://other:81/x")["url"] == "ws://other:81/x"
    assert backend.describe_key("/btcusdt?token=abc") == "/btcusdt"
    with pytest.raises(ValueError, match="URL path"):
        backend.key_options(42)
    keyed = WebSocketBackend("streams", {**backend.options, **options})
    client = keyed.create()
    try:
        client.send("whoami")
        assert client.recv(timeout=5) == "/ws/btcusdt"
    finally:
        keyed.close(client)


def test_eight_threads_make_200_round_trips_each_over_a_pool_of_four(
        ws_server: WebSocketEchoServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("echo", _pool(ws_server.url, MAX_SIZE=4))
    pool = pools["echo"]
    seen_before = ws_server.connections_seen
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(number: int) -> None:
        start.wait()
        try:
            for turn in range(200):
                with pool.connection() as ws:
                    ws.send(f"{number}:{turn}")
                    assert ws.recv(timeout=5) == f"{number}:{turn}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    stats = pool.stats()
    assert stats.acquired_total == 1600 and stats.created_total <= 4
    assert ws_server.connections_seen - seen_before <= 4


def test_after_the_server_closes_every_connection_checkouts_get_fresh_working_sockets(
        own_ws_server: WebSocketEchoServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("closing", _pool(own_ws_server.url, MAX_SIZE=4, CHECK="always"))
    pool = pools["closing"]
    clients = [pool.acquire() for _ in range(4)]
    for client in clients:
        pool.release(client)
    assert wait_until(lambda: own_ws_server.open_connections == 4, 5)
    own_ws_server.close_all_connections()
    assert wait_until(lambda: own_ws_server.open_connections == 0, 5)
    clients = [pool.acquire() for _ in range(4)]
    try:
        for number, ws in enumerate(clients):
            ws.send(f"again-{number}")
            assert ws.recv(timeout=5) == f"again-{number}"
    finally:
        for ws in clients:
            pool.release(ws)
    stats = pool.stats()
    assert stats.created_total == 8 and stats.size == 4
    assert own_ws_server.connections_seen == 8


def test_a_socket_returned_with_an_unread_message_is_discarded(
        ws_server: WebSocketEchoServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("unread", _pool(ws_server.url, MAX_SIZE=1))
    pool = pools["unread"]
    with pool.connection() as ws:
        answered = ws_server.messages_seen + 1
        ws.send("nobody reads this")
        assert wait_until(lambda: ws_server.messages_seen >= answered, 5)
        # The pong comes after the echo the server already sent: the echo is now queued.
        assert ws.ping().wait(5)
    with pool.connection() as ws:
        ws.send("fresh")
        assert ws.recv(timeout=5) == "fresh"
    stats = pool.stats()
    assert stats.created_total == 2 and stats.closed_total == 1


def test_a_stopped_server_fails_fast_with_client_creation_error(
        pooled_clients_settings: Configure) -> None:
    server = WebSocketEchoServer()
    server.start()
    url = server.url
    pooled_clients_settings("gone", _pool(url, CONNECT_RETRIES=0, CHECK="always"))
    with pools["gone"].connection() as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
    server.stop()
    start = time.monotonic()
    with pytest.raises(ClientCreationError):
        pools["gone"].acquire(timeout=2.0)
    assert time.monotonic() - start < 2.5


def test_tls_with_the_test_ca(tls_certs: Certs, pooled_clients_settings: Configure) -> None:
    with WebSocketEchoServer(tls_certs.server_context()) as server:
        pooled_clients_settings("wss", _pool(server.url, CONNECT_RETRIES=0,
                                             OPTIONS={"tls": {"cafile": str(tls_certs.ca_cert)}}))
        with pools["wss"].connection() as ws:
            ws.send("over tls")
            assert ws.recv(timeout=5) == "over tls"
        # Without the test CA the server's certificate is not trusted.
        pooled_clients_settings("untrusted", _pool(server.url, CONNECT_RETRIES=0))
        with pytest.raises(ClientCreationError, match="CERTIFICATE_VERIFY_FAILED"):
            pools["untrusted"].acquire(timeout=3.0)


@pytest.mark.django_db
def test_every_surface_shows_the_pool_and_never_a_header_or_token(
        ws_server: WebSocketEchoServer, pooled_clients_settings: Configure, client: Client,
        admin_client: Client) -> None:
    url = ws_server.url + "stream?token=query-secret-42"
    pooled_clients_settings("stream", _pool(url, OPTIONS={"headers": {"Authorization": TOKEN}}))
    with pools["stream"].connection() as ws:
        ws.send("header:Authorization")
        assert ws.recv(timeout=5) == TOKEN
    assert_surfaces_show("stream", ws_server.url + "stream", [TOKEN, "tok-ws-0123456789",
                                                                "query-secret-42"],
                         client, admin_client)


def test_async_backend_round_trips_and_discards_an_unread_message(
        ws_server: WebSocketEchoServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("aecho", _pool(ws_server.url, ASYNC_BACKEND, MAX_SIZE=2))
    pool = pools["aecho"]

    async def scenario() -> None:
        async def turn(number: int) -> str:
            async with pool.aconnection() as ws:
                await ws.send(str(number))
                return str(await ws.recv())

        assert await asyncio.gather(*(turn(n) for n in range(50))) == [str(n) for n in range(50)]
        async with pool.aconnection() as ws:
            answered = ws_server.messages_seen + 1
            await ws.send("nobody reads this")
            while ws_server.messages_seen < answered:
                await asyncio.sleep(0.01)
            await (await ws.ping())
        created = pool.stats().created_total
        async with pool.aconnection() as ws:
            await ws.send("fresh")
            assert await ws.recv() == "fresh"
        assert pool.stats().closed_total == 1 and pool.stats().created_total >= created

    asyncio.run(scenario())


# --------------------------------------------------------------------------- uvicorn


@pytest.fixture
def uvicorn_ws_site(ws_server: WebSocketEchoServer, test_output_dir: Path) -> Iterator[str]:
    """tests/async_site with a WebSocket pool of 4, served by one uvicorn worker."""
    with serve({"ASYNC_SITE_WS_URL": ws_server.url, "ASYNC_SITE_WS_MAX_SIZE": "4"},
               test_output_dir / "uvicorn.log", "/idle/") as base:
        yield base


@pytest.mark.slow
def test_async_backend_under_uvicorn_serves_100_concurrent_requests_with_four_sockets(
        uvicorn_ws_site: str, ws_server: WebSocketEchoServer) -> None:
    seen_before = ws_server.connections_seen

    async def main() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=uvicorn_ws_site, limits=limits,
                                     timeout=30) as client:
            async def request(number: int) -> dict[str, Any]:
                response = await client.get("/ws-echo/", params={"say": f"req-{number}"})
                assert response.status_code == 200, response.text
                return dict(response.json())

            return list(await asyncio.gather(*(request(n) for n in range(100))))

    answers = asyncio.run(main())
    assert [a["reply"] for a in answers] == [f"req-{n}" for n in range(100)]
    assert max(a["size"] for a in answers) <= 4
    assert max(a["created"] for a in answers) <= 4
    assert ws_server.connections_seen - seen_before <= 4
