"""The real servers every other test relies on actually work."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import requests

from devservers.http import UpstreamServer
from devservers.pgbouncer import PgBouncer, find_pgbouncer
from devservers.ports import free_port
from devservers.postgres import PostgresCluster
from devservers.proxy import FaultProxy
from devservers.tls import Certs, EchoServer

pytestmark = pytest.mark.timeout(60)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- PostgreSQL ---------------------------------------------------------------------------


def test_cluster_app_role_logs_in_with_password(postgres: PostgresCluster) -> None:
    assert postgres.is_running()
    with psycopg.connect(postgres.conninfo("app"), connect_timeout=5) as conn:
        row = conn.execute("select current_user, current_database()").fetchone()
    assert row == ("app", "app")
    with psycopg.connect(**postgres.kwargs("app"), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    bad = {**postgres.kwargs("app"), "password": "wrong"}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**bad, connect_timeout=5)


def test_cluster_execute_and_settings(postgres: PostgresCluster) -> None:
    assert postgres.execute("show max_connections") == [("200",)]
    assert postgres.execute("select %s::int + 1", [41]) == [(42,)]
    assert postgres.execute("create temporary table t (x int)") == []
    assert "connection authorized" in postgres.read_log()


def test_cluster_restart_and_custom_settings() -> None:
    with PostgresCluster("restart", settings={"max_connections": "30"}) as pg:
        assert pg.execute("show max_connections") == [("30",)]
        conn = psycopg.connect(**pg.kwargs("app"), autocommit=True, connect_timeout=5)
        pg.restart("immediate")
        assert pg.is_running()
        # The old session died with the server.
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
        conn.close()
        assert pg.execute("select 1") == [(1,)]
        pg.stop()
        assert not pg.is_running()
        pg.start()
        assert pg.execute("select count(*) from pg_roles where rolname = 'app'") == [(1,)]
        datadir = pg.datadir
    assert not datadir.exists()


# --- HTTP upstream ------------------------------------------------------------------------


def test_upstream_routes(upstream: UpstreamServer) -> None:
    upstream.reset()
    with requests.Session() as http:
        assert http.get(upstream.url + "health", timeout=5).json() == {"ok": True}
        echo = http.post(
            upstream.url + "echo/x?a=1&b=2", data="hello", headers={"X-T": "v"}, timeout=5
        ).json()
        assert echo["method"] == "POST"
        assert echo["path"] == "/echo/x"
        assert echo["query"] == {"a": "1", "b": "2"}
        assert echo["headers"]["X-T"] == "v"
        assert echo["body"] == "hello"
        assert http.get(upstream.url + "status/503", timeout=5).status_code == 503
        assert http.get(upstream.url + "json/thing", timeout=5).json()["ok"] is True
        assert http.get(upstream.url + "nope", timeout=5).status_code == 404
        started = time.monotonic()
        assert http.get(upstream.url + "slow/0.2", timeout=5).status_code == 200
        assert time.monotonic() - started >= 0.2

        upstream.script("flaky", [502, 503])
        codes = [http.get(upstream.url + "script/flaky", timeout=5).status_code for _ in range(3)]
        assert codes == [502, 503, 200]
    assert upstream.requests_seen("/script/") == 3
    assert upstream.requests_seen("/echo") == 1
    assert upstream.requests_seen() == 9
    # One keep-alive connection carried every request.
    assert upstream.connections_opened == 1


def test_upstream_close_after_each_response(upstream: UpstreamServer) -> None:
    upstream.reset()
    upstream.close_after_each_response = True
    try:
        with requests.Session() as http:
            for _ in range(3):
                response = http.get(upstream.url + "health", timeout=5)
                assert response.headers["Connection"] == "close"
        assert upstream.connections_opened == 3
    finally:
        upstream.reset()
    assert upstream.close_after_each_response is False


def test_upstream_stop_closes_keepalive_connections() -> None:
    server = UpstreamServer()
    server.start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while not received.endswith(b'{"ok": true}'):
        received += sock.recv(4096)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    assert sock.recv(4096) == b""
    sock.close()


# --- Fault proxy --------------------------------------------------------------------------


def test_proxy_forwards_pauses_resumes_and_drops(
    fault_proxy_factory: Callable[[str, int], FaultProxy],
) -> None:
    with EchoServer() as echo:
        proxy = fault_proxy_factory("127.0.0.1", echo.port)
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        client.sendall(b"ping")
        assert client.recv(100) == b"ping"

        proxy.pause()
        client.settimeout(0.3)
        client.sendall(b"held")
        with pytest.raises(TimeoutError):
            client.recv(100)
        # New connections are still accepted while paused.
        other = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        other.close()
        proxy.resume()
        client.settimeout(5)
        assert client.recv(100) == b"held"

        proxy.delay(0.2)
        started = time.monotonic()
        client.sendall(b"slow")
        assert client.recv(100) == b"slow"
        assert time.monotonic() - started >= 0.4  # delayed in both directions
        proxy.delay(0)

        proxy.drop()
        with pytest.raises(ConnectionResetError):
            client.recv(100)
            client.sendall(b"x")
            client.recv(100)
        client.close()


def test_proxy_refuse(fault_proxy_factory: Callable[[str, int], FaultProxy]) -> None:
    with EchoServer() as echo:
        proxy = fault_proxy_factory("127.0.0.1", echo.port)
        proxy.refuse(True)
        # The reset can even beat connect()'s own completion check.
        with (
            pytest.raises((ConnectionResetError, BrokenPipeError)),
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client,
        ):
            client.sendall(b"x")
            if client.recv(10) == b"":
                raise ConnectionResetError
        proxy.refuse(False)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as ok:
            ok.sendall(b"back")
            assert ok.recv(10) == b"back"


def test_proxy_in_front_of_postgres_times_out_when_paused(
    postgres: PostgresCluster, fault_proxy_factory: Callable[[str, int], FaultProxy]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    kwargs = {**postgres.kwargs("app"), "port": proxy.port}
    with psycopg.connect(**kwargs, connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    proxy.pause()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**kwargs, connect_timeout=1)
    assert time.monotonic() - started < 5
    proxy.resume()


def test_proxy_stop_is_prompt() -> None:
    with EchoServer() as echo:
        proxy = FaultProxy("127.0.0.1", echo.port)
        proxy.start()
        clients = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(5)]
        for sock in clients:
            sock.sendall(b"a")
            assert sock.recv(10) == b"a"
        proxy.pause()
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 3
        for sock in clients:
            assert sock.recv(10) == b""
            sock.close()


# --- TLS ----------------------------------------------------------------------------------


def test_tls_echo_verifies_against_generated_ca(tls_certs: Certs) -> None:
    with EchoServer(tls=tls_certs.server_context()) as server:
        for hostname in ("localhost", "127.0.0.1"):
            ctx = tls_certs.client_context()
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                tls.sendall(b"secure")
                assert tls.recv(100) == b"secure"
        # A context that does not trust our CA refuses the server.
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        assert server.connections_seen == 3


def test_tls_client_certificate_and_close_all(tls_certs: Certs) -> None:
    with EchoServer(tls=tls_certs.server_context(require_client_cert=True)) as server:
        ctx = tls_certs.client_context(with_client_cert=True)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"hi")
        assert tls.recv(10) == b"hi"
        server.close_all_clients()
        # An abrupt end of the TLS stream counts as a close too.
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            assert tls.recv(10) == b""
        tls.close()


def test_certificate_files_exist(tls_certs: Certs, tmp_path: Path) -> None:
    for path in (tls_certs.ca_cert, tls_certs.server_cert, tls_certs.client_cert):
        assert path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert oct(tls_certs.server_key.stat().st_mode & 0o777) == "0o600"


# --- PgBouncer ----------------------------------------------------------------------------


def test_pgbouncer_transaction_mode(postgres: PostgresCluster) -> None:
    if find_pgbouncer() is None and os.environ.get("CI") != "true":
        pytest.skip("pgbouncer is not installed (scripts/bootstrap installs it)")
    with PgBouncer(postgres, pool_mode="transaction") as bouncer:
        for _ in range(3):
            with psycopg.connect(
                bouncer.conninfo(), prepare_threshold=None, autocommit=True, connect_timeout=5
            ) as conn:
                assert conn.execute("select current_user, %s::int", [7]).fetchone() == ("app", 7)
        with psycopg.connect(**bouncer.kwargs("pgbouncer"), autocommit=True) as admin:
            modes = {row[0]: row[-1] for row in admin.execute("show pools").fetchall()}
        assert modes["app"] == "transaction"
    assert not bouncer.is_running()


def test_http_module_runs_in_foreground() -> None:
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devservers.http", "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert str(port) in proc.stdout.readline()
        body = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        assert body == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
