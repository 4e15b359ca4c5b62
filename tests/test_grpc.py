"""GRPCChannelBackend and AsyncGRPCChannelBackend against an in-process grpcio server with the
standard health service, plain and TLS, and under real gunicorn ``--preload`` workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devservers.grpc import GRPCHealthServer
from devservers.ports import free_port
from devservers.tls import Certs
from pooled_clients import ClientCreationError, pools
from pooled_clients.backends.grpc import GRPCChannelBackend
from pooled_clients.conf import validate_definition
from tests.surfaces import assert_surfaces_show

BACKEND = "pooled_clients.backends.grpc.GRPCChannelBackend"
ASYNC_BACKEND = "pooled_clients.backends.grpc.AsyncGRPCChannelBackend"
TOKEN = "Bearer tok-grpc-0123456789"
REPO = Path(__file__).resolve().parent.parent
Configure = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def own_grpc_server() -> Iterator[GRPCHealthServer]:
    """A server this test may reconfigure or stop."""
    with GRPCHealthServer(services=("", "authz")) as server:
        yield server


def _pool(target: str, backend: str = BACKEND, **keys: Any) -> dict[str, Any]:
    options = {"target": target, "health_service": "authz", **keys.pop("OPTIONS", {})}
    return {"BACKEND": backend, "OPTIONS": options, "TIMEOUT": 3.0, "CONNECT_TIMEOUT": 1.0,
            "CONNECT_RETRIES": 0, **keys}


def test_importing_the_backend_does_not_import_grpc() -> None:
    code = ("import sys, pooled_clients.backends.grpc; "
            "assert 'grpc' not in sys.modules, 'grpc was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_check_options_reports_unknown_and_mistyped_options() -> None:
    problems = "\n".join(GRPCChannelBackend.check_options({
        "targett": "h:1", "tls": {"root_certificates": "PEM text", "private_key": b"k"},
        "channel_options": "x", "health_service": 3, "metadata": {"Authorization": "t"},
    }))
    for expected in ("unknown option 'targett'", "'target' is required",
                     "'tls'['root_certificates'] must be PEM bytes",
                     "needs both 'private_key' and 'certificate_chain'",
                     "'channel_options' must be a dict", "'health_service' is 3",
                     "'metadata' must be a dict of lower-case key"):
        assert expected in problems, expected
    assert GRPCChannelBackend.check_options({
        "target": "dns:///authz:443", "tls": {"root_certificates": b"PEM"},
        "channel_options": {"grpc.keepalive_time_ms": 10000}, "health_service": "",
        "metadata": {"authorization": "Bearer x"}}) == []
    errors = validate_definition("authz", {"BACKEND": BACKEND, "OPTIONS": {}})
    assert errors and errors[0].id.startswith("pooled_clients.E")


def test_system_check_names_the_missing_grpcio_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = {"BACKEND": BACKEND, "OPTIONS": {"target": "h:1"}}
    assert validate_definition("authz", definition) == []
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if it were not installed
    problems = validate_definition("authz", definition)
    assert [p.id for p in problems] == ["pooled_clients.E011"]
    assert "django-pooled-clients[grpc]" in problems[0].message


def test_keys_are_targets_and_are_shown() -> None:
    backend = GRPCChannelBackend("authz", {"target": "authz:50051"})
    assert backend.key_options("tenant-7.authz:50051") == {"target": "tenant-7.authz:50051"}
    assert backend.key_options(("::1", 50051)) == {"target": "[::1]:50051"}
    assert backend.describe_key(("authz-b", 50051)) == "authz-b:50051"
    with pytest.raises(ValueError, match="a key is a target"):
        backend.key_options(7)
    assert backend.describe() == "grpc://authz:50051"


def test_not_serving_makes_the_pool_unhealthy_with_the_reason_and_serving_heals_it(
        own_grpc_server: GRPCHealthServer, pooled_clients_settings: Configure,
        client: Client) -> None:
    pooled_clients_settings("authz", _pool(own_grpc_server.target))
    pool = pools["authz"]
    pool.check()
    assert client.get("/health/").status_code == 200
    own_grpc_server.set_status("authz", serving=False)
    with pytest.raises(ClientCreationError, match="'authz' as NOT_SERVING"):
        pool.check()
    response = client.get("/health/?format=json")
    assert response.status_code == 500
    assert "NOT_SERVING" in response.json()["Pool authz"]
    own_grpc_server.set_status("authz", serving=True)
    pool.check()
    assert client.get("/health/").status_code == 200


def test_a_stopped_server_fails_fast_within_the_timeout_never_a_hang(
        own_grpc_server: GRPCHealthServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("authz", _pool(own_grpc_server.target, CHECK="always"))
    pool = pools["authz"]
    with pool.connection():
        pass  # one idle channel to a server about to go away
    own_grpc_server.stop()
    for attempt in range(2):
        start = time.monotonic()
        with pytest.raises(ClientCreationError):
            pool.acquire(timeout=3.0)
        assert time.monotonic() - start < 3.5, attempt
    start = time.monotonic()
    with pytest.raises(ClientCreationError):
        pool.check(timeout=2.0)
    assert time.monotonic() - start < 2.5
    # A port nobody listens on: the first failed attempt ends the creation.
    pooled_clients_settings("nobody", _pool(f"127.0.0.1:{free_port()}", CONNECT_TIMEOUT=5.0))
    start = time.monotonic()
    with pytest.raises(ClientCreationError, match="cannot connect"):
        pools["nobody"].acquire(timeout=6.0)
    assert time.monotonic() - start < 3.0


def test_channel_without_health_service_checks_connectivity(
        own_grpc_server: GRPCHealthServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("plain", _pool(own_grpc_server.target,
                                           OPTIONS={"health_service": None}))
    pools["plain"].check()
    checks = own_grpc_server.checks
    own_grpc_server.set_status("authz", serving=False)
    pools["plain"].check()  # only connectivity: the health service is not asked
    assert own_grpc_server.checks == checks
    own_grpc_server.stop()

    def check_fails() -> bool:
        try:
            pools["plain"].check(timeout=1.0)
        except ClientCreationError:
            return True
        return False

    # The channel learns of the server's end from its GOAWAY: within moments, not at once.
    deadline = time.monotonic() + 3
    while not check_fails():
        assert time.monotonic() < deadline, "the stopped server still looks connected"
        time.sleep(0.05)


def test_tls_with_the_test_ca(tls_certs: Certs, pooled_clients_settings: Configure) -> None:
    server = GRPCHealthServer(services=("", "authz"), certs=tls_certs)
    server.start()
    try:
        ca = tls_certs.ca_cert.read_bytes()
        pooled_clients_settings("secure", _pool(server.target, OPTIONS={
            "tls": {"root_certificates": ca}}))
        pools["secure"].check()
        assert pools["secure"].stats().target == f"grpcs://localhost:{server.port}"
        # The certificate names localhost and 127.0.0.1, not this override.
        pooled_clients_settings("wrong-name", _pool(server.target, OPTIONS={
            "tls": {"root_certificates": ca, "server_hostname": "authz.example"}}))
        with pytest.raises(ClientCreationError):
            pools["wrong-name"].acquire(timeout=2.0)
        pooled_clients_settings("untrusted", _pool(server.target, OPTIONS={"tls": True}))
        with pytest.raises(ClientCreationError):
            pools["untrusted"].acquire(timeout=2.0)
    finally:
        server.stop()


@pytest.mark.django_db
def test_every_surface_shows_the_pool_and_never_the_metadata(
        grpc_server: GRPCHealthServer, pooled_clients_settings: Configure, client: Client,
        admin_client: Client) -> None:
    pooled_clients_settings("authz", _pool(grpc_server.target, OPTIONS={
        "metadata": {"authorization": TOKEN}}))
    with pools["authz"].connection():
        pass
    assert_surfaces_show("authz", f"grpc://{grpc_server.target}",
                         [TOKEN, "tok-grpc-0123456789"], client, admin_client)


def test_async_backend_checks_health_and_reports_not_serving(
        own_grpc_server: GRPCHealthServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("aauthz", _pool(own_grpc_server.target, ASYNC_BACKEND, MAX_SIZE=2))
    pool = pools["aauthz"]

    async def scenario() -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def call() -> int:
            async with pool.aconnection() as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="authz"), timeout=2)
                return int(reply.status)

        statuses = await asyncio.gather(*(call() for _ in range(20)))
        assert set(statuses) == {health_pb2.HealthCheckResponse.SERVING}
        own_grpc_server.set_status("authz", serving=False)
        async with pool.aconnection() as channel:
            with pytest.raises(ConnectionError, match="NOT_SERVING"):
                await pool.abackend.check(channel)

    asyncio.run(scenario())
    assert pool.stats().created_total <= 2


# --------------------------------------------------------------------------- gunicorn


def _sockets_to(pid: int, port: int) -> int:
    """TCP connections that process ``pid`` holds to 127.0.0.1:``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def preload_gunicorn(grpc_server: GRPCHealthServer, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """tests/lifecycle_site under gunicorn --preload, 3 sync workers, a gRPC pool."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "DJANGO_SETTINGS_MODULE": "tests.lifecycle_site.settings",
           "LIFECYCLE_STATE_DIR": str(tmp_path), "LIFECYCLE_BIND": f"127.0.0.1:{port}",
           "LIFECYCLE_PRELOAD": "1", "LIFECYCLE_GRPC_TARGET": grpc_server.target}
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c",
         str(REPO / "tests" / "lifecycle_site" / "gunicorn_conf.py"),
         "tests.lifecycle_site.wsgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                urllib.request.urlopen(base + "/grpc/", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer in 30s"
                time.sleep(0.05)
        yield proc.pid, base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_preload_workers_each_open_their_own_channel_and_the_master_none(
        preload_gunicorn: tuple[int, str], grpc_server: GRPCHealthServer) -> None:
    master, base = preload_gunicorn
    seen: dict[int, dict[str, Any]] = {}
    answers: list[dict[str, Any]] = []

    def ask() -> None:
        # A sync worker serving a slow request accepts no other: three at once spread out.
        with urllib.request.urlopen(base + "/grpc/?sleep=0.3", timeout=10) as response:
            answers.append(json.loads(response.read()))

    deadline = time.monotonic() + 30
    while len(seen) < 3:
        assert time.monotonic() < deadline, f"only saw workers {sorted(seen)}"

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        for answer in answers:
            seen[answer["worker_pid"]] = answer
    for worker, answer in seen.items():
        assert worker != master
        assert answer["pool_pid"] == worker and answer["status"] == "SERVING"
        assert 1 <= answer["created_total"] <= 2
        assert 1 <= _sockets_to(worker, grpc_server.port) <= 2
    # The master created no channel: it holds no connection and never even loaded grpcio.
    assert _sockets_to(master, grpc_server.port) == 0
    assert "cygrpc" not in Path(f"/proc/{master}/maps").read_text()
