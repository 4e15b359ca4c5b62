"""Shared fixtures: real servers on 127.0.0.1 (PostgreSQL, an HTTP upstream, a fault proxy, TLS,
Redis, a WebSocket echo server, a gRPC health server)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devservers.grpc import GRPCHealthServer
from devservers.http import UpstreamServer
from devservers.postgres import PostgresCluster
from devservers.proxy import FaultProxy
from devservers.redis import RedisServer
from devservers.tls import Certs, make_certificates
from devservers.websocket import WebSocketEchoServer

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the whole session (role/database ``app``)."""
    cluster = PostgresCluster("pytest")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    """One HTTP upstream for the session; tests that count requests call ``reset()`` themselves."""
    server = UpstreamServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[[str, int], FaultProxy]]:
    """Make started :class:`FaultProxy` objects; all are stopped when the test ends."""
    proxies: list[FaultProxy] = []

    def make(target_host: str, target_port: int) -> FaultProxy:
        proxy = FaultProxy(target_host, target_port)
        proxy.start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA plus server (localhost, 127.0.0.1) and client certificates."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def test_output_dir(request: pytest.FixtureRequest) -> Path:
    """``<repo>/test-output/<test name>`` (created) for screenshots and other artefacts."""
    name = re.sub(r"[^A-Za-z0-9_.\-\[\]]+", "_", request.node.name)
    path = REPO_ROOT / "test-output" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


#: The password of the session's Redis server (``redis_server``).
REDIS_PASSWORD = "redis-s3cret-pw"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One password-protected redis-server (:data:`REDIS_PASSWORD`) for the session; tests
    that stop or restart a server start their own."""
    with RedisServer(password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def ws_server() -> Iterator[WebSocketEchoServer]:
    """One WebSocket echo server for the session."""
    with WebSocketEchoServer() as server:
        yield server


@pytest.fixture(scope="session")
def grpc_server() -> Iterator[GRPCHealthServer]:
    """One gRPC server for the session: health service SERVING for ``""`` and ``"authz"``."""
    with GRPCHealthServer(services=("", "authz")) as server:
        yield server
