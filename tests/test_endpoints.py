"""Named endpoints: per-endpoint and total caps, routing, failover and recovery.

Fast tests run against local TCP echo servers (behind fault proxies where an endpoint must
go down and come back on the same port); the primary/replica tests run against two private
PostgreSQL clusters of their own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from devservers.postgres import PostgresCluster
from devservers.proxy import FaultProxy
from devservers.tls import EchoServer
from pooled_clients import (
    ClientCreationError,
    PoolClosed,
    PoolDoesNotExist,
    PoolError,
    pools,
)
from pooled_clients.endpoints import EndpointPool
from tests.waiting import wait_until

TCP = "pooled_clients.backends.tcp.TCPBackend"
PG = "pooled_clients.backends.postgres.PostgresBackend"



@pytest.fixture
def echo_servers() -> Iterator[list[EchoServer]]:
    servers = [EchoServer(), EchoServer(), EchoServer()]
    for server in servers:
        server.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def configure(pooled_clients_settings: Callable[[str, dict[str, Any]], None]
              ) -> Iterator[Callable[[str, dict[str, Any]], EndpointPool[Any]]]:
    """Configure one endpoint pool; every pool built meanwhile is closed at the end."""

    def make(alias: str, definition: dict[str, Any]) -> EndpointPool[Any]:
        pooled_clients_settings(alias, definition)
        pool = pools[alias]
        assert isinstance(pool, EndpointPool)
        return pool

    try:
        yield make
    finally:
        pools.close_all(timeout=1.0)


def tcp_definition(*ports: int, **extra: Any) -> dict[str, Any]:
    names = ["a", "b", "c"]
    return {
        "BACKEND": TCP,
        "OPTIONS": {"host": "127.0.0.1", "port": ports[0]},
        "ENDPOINTS": {names[i]: {"OPTIONS": {"port": port}} for i, port in enumerate(ports)},
        "TIMEOUT": 2.0,
        "CONNECT_RETRIES": 0,
        "RETRY_BACKOFF": 0.05,
        "RETRY_BACKOFF_MAX": 0.2,
        **extra,
    }


def peer_port(sock: socket.socket) -> int:
    port: int = sock.getpeername()[1]
    return port


def echo(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    return sock.recv(len(payload))


# ------------------------------------------------------------------ picking an endpoint


def test_named_endpoint_uses_its_own_merged_options(configure: Any,
                                                    echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port))
    with pool.connection(endpoint="b") as sock:
        assert peer_port(sock) == b.port
        assert echo(sock) == b"ping"
    client = pool.acquire(endpoint="a")
    try:
        assert peer_port(client) == a.port
        assert pool.endpoint_of(client) == "a"
    finally:
        pool.release(client)
    assert [backend.describe() for backend in pool.backends] == [
        f"tcp://127.0.0.1:{a.port}", f"tcp://127.0.0.1:{b.port}"]
    assert [sub.endpoint for sub in pool.subpools] == ["a", "b"]


def test_unknown_endpoint_raises_pool_does_not_exist(configure: Any,
                                                     echo_servers: list[EchoServer]) -> None:
    pool = configure("svc", tcp_definition(echo_servers[0].port))
    with pytest.raises(PoolDoesNotExist, match="no endpoint 'nope'"):
        pool.acquire(endpoint="nope")
    with pytest.raises(PoolDoesNotExist, match="'a'"):
        pool.connection(endpoint="nope")
    with pytest.raises(KeyError):
        pool.check(endpoint="nope")


def test_routing_first_prefers_the_first_endpoint(configure: Any,
                                                  echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port))
    ports = []
    for _ in range(6):
        with pool.connection() as sock:
            ports.append(peer_port(sock))
    assert set(ports) == {a.port}


def test_round_robin_spreads_checkouts(configure: Any, echo_servers: list[EchoServer]) -> None:
    ports = [server.port for server in echo_servers]
    pool = configure("svc", tcp_definition(*ports, ROUTING="round_robin"))
    seen = Counter()
    for _ in range(12):
        with pool.connection() as sock:
            seen[peer_port(sock)] += 1
    assert seen == {port: 4 for port in ports}


def test_least_busy_picks_the_endpoint_with_fewest_clients_in_use(
        configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port, ROUTING="least_busy",
                                           ENDPOINTS={"a": {"OPTIONS": {"port": a.port}},
                                                      "b": {"OPTIONS": {"port": b.port},
                                                            "MAX_SIZE": 4}}))
    held = [pool.acquire(endpoint="a") for _ in range(2)]
    try:
        # In use relative to MAX_SIZE: a 2/10, b 0/4; each checkout (held) goes to the lowest.
        routed = [pool.acquire() for _ in range(3)]
        # b 0 -> 0.25; then a 0.2 -> 0.3; then b 0.25 -> 0.5.
        assert [pool.endpoint_of(c) for c in routed] == ["b", "a", "b"]
    finally:
        for client in held + routed:
            pool.release(client)


# ------------------------------------------------------------------ failover


@pytest.fixture
def proxied(fault_proxy_factory: Callable[[str, int], FaultProxy],
            echo_servers: list[EchoServer]) -> list[FaultProxy]:
    """Two proxies in front of two echo servers; ``stop()`` refuses, ``start()`` heals."""
    return [fault_proxy_factory(server.host, server.port) for server in echo_servers[:2]]


def test_an_unreachable_endpoint_is_skipped_until_it_heals(configure: Any,
                                                           proxied: list[FaultProxy]) -> None:
    primary, replica = proxied
    pool = configure("svc", {
        **tcp_definition(primary.port, replica.port, ROUTING="round_robin", CHECK="always"),
        "ENDPOINTS": {"primary": {"OPTIONS": {"port": primary.port}},
                      "replica": {"OPTIONS": {"port": replica.port}}},
    })
    for _ in range(4):
        with pool.connection() as sock:
            assert echo(sock) == b"ping"
    assert pool.stats().endpoints["replica"].idle == 1

    replica.stop()  # its idle client sees EOF; new connections are refused
    # Every routed checkout still succeeds: the dead client fails its check, the replica is
    # skipped, and callers go to the primary without an error.
    ports = []
    for _ in range(6):
        with pool.connection() as sock:
            assert echo(sock) == b"ping"
            ports.append(peer_port(sock))
    assert set(ports) == {primary.port}
    replica_stats = pool.stats().endpoints["replica"]
    assert not replica_stats.healthy
    assert replica_stats.state == "failing"
    assert replica_stats.check_failures_total >= 1
    assert pool.stats().healthy  # the pool as a whole still serves
    with pytest.raises(ClientCreationError, match=r"svc\[replica\]"):
        pool.acquire(endpoint="replica", timeout=0.5)

    replica.start()  # same port: the background probe brings it back
    wait_until(lambda: pool.stats().endpoints["replica"].healthy, timeout=5)
    seen = Counter()
    for _ in range(4):
        with pool.connection() as sock:
            seen[peer_port(sock)] += 1
    assert seen == {primary.port: 2, replica.port: 2}


def test_when_every_endpoint_fails_the_preferred_error_is_raised(
        configure: Any, proxied: list[FaultProxy]) -> None:
    first, second = proxied
    pool = configure("svc", tcp_definition(first.port, second.port))
    first.stop()
    second.stop()
    start = time.monotonic()
    with pytest.raises(ClientCreationError) as info:
        pool.acquire(timeout=2.0)
    assert time.monotonic() - start < 2.0 + 0.5
    assert "svc[a]" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    stats = pool.stats()
    assert not stats.healthy
    assert stats.state == "failing"
    assert stats.last_error is not None and "ConnectionRefusedError" in stats.last_error
    with pytest.raises(ClientCreationError, match="no endpoint works"):
        pool.check(timeout=1.0)


def test_check_reports_each_endpoint(configure: Any, proxied: list[FaultProxy]) -> None:
    first, second = proxied
    pool = configure("svc", tcp_definition(first.port, second.port))
    second.stop()
    results = pool.check_endpoints(timeout=1.0)
    assert results["a"] is None
    assert isinstance(results["b"], PoolError)
    pool.check(timeout=1.0)  # one endpoint works: the pool can serve
    with pytest.raises(PoolError):
        pool.check(timeout=1.0, endpoint="b")


def test_async_api_routes_pins_and_fails_over(configure: Any, proxied: list[FaultProxy]) -> None:
    first, second = proxied
    pool = configure("svc", tcp_definition(first.port, second.port, ROUTING="round_robin",
                                           CHECK="always"))

    async def scenario() -> tuple[list[int], int, list[int]]:
        ports = []
        for _ in range(4):
            async with pool.aconnection() as sock:
                ports.append(peer_port(sock))
        client = await pool.aacquire(endpoint="b")
        pinned = peer_port(client)
        await pool.arelease(client)
        with pytest.raises(PoolError):
            await pool.arelease(client)
        second.stop()
        after = []
        for _ in range(4):
            async with pool.aconnection() as sock:
                after.append(peer_port(sock))
        return ports, pinned, after

    ports, pinned, after = asyncio.run(scenario())
    assert Counter(ports) == {first.port: 2, second.port: 2}
    assert pinned == second.port
    assert after == [first.port] * 4


# ------------------------------------------------------------------ caps


def test_per_endpoint_and_total_caps_hold_under_32_threads(
        configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, c = echo_servers
    caps = {"a": 3, "b": 4, "c": 2}
    total_cap = 6
    pool = configure("svc", {
        **tcp_definition(a.port),
        "ENDPOINTS": {"a": {"OPTIONS": {"port": a.port}, "MAX_SIZE": caps["a"]},
                      "b": {"OPTIONS": {"port": b.port}, "MAX_SIZE": caps["b"]},
                      "c": {"OPTIONS": {"port": c.port}, "MAX_SIZE": caps["c"]}},
        "TOTAL_MAX_SIZE": total_cap,
        "ROUTING": "round_robin",
        "TIMEOUT": 10.0,
    })
    lock = threading.Lock()
    in_use: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    peak_total = 0
    errors: list[BaseException] = []
    stop = threading.Event()
    names = ["a", "b", "c", None]

    def worker(index: int) -> None:
        nonlocal peak_total
        turn = index
        try:
            while not stop.is_set():
                endpoint = names[turn % len(names)]
                turn += 1
                with pool.connection(endpoint=endpoint) as sock:
                    name = pool.endpoint_of(sock)
                    assert name is not None
                    with lock:
                        in_use[name] += 1
                        peak[name] = max(peak[name], in_use[name])
                        peak_total = max(peak_total, sum(in_use.values()))
                    assert echo(sock, b"x") == b"x"
                    stats = pool.stats()
                    assert stats.size <= total_cap
                    for ep, ep_stats in stats.endpoints.items():
                        assert ep_stats.size <= caps[ep]
                    with lock:
                        in_use[name] -= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # the load runs for a fixed while; nothing is waited on here
    stop.set()
    for thread in threads:
        thread.join(15)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert all(peak[name] <= caps[name] for name in caps), peak
    assert peak_total == total_cap  # the cap was reached and never passed
    # The servers see closes a moment later; what they see settles within the cap.
    wait_until(lambda: a.open_clients + b.open_clients + c.open_clients <= total_cap, 3)
    stats = pool.stats()
    assert stats.in_use == 0
    assert stats.max_size == total_cap
    assert stats.acquired_total == sum(s.acquired_total for s in stats.endpoints.values())


def test_total_cap_hands_idle_capacity_to_a_busy_endpoint(
        configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", {**tcp_definition(a.port, b.port), "TOTAL_MAX_SIZE": 2})
    first = [pool.acquire(endpoint="a") for _ in range(2)]
    for client in first:
        pool.release(client)
    assert pool.stats().endpoints["a"].idle == 2
    # The cap is full of idle "a" clients; "b" gets room by closing them, without waiting.
    start = time.monotonic()
    second = [pool.acquire(endpoint="b", timeout=2.0) for _ in range(2)]
    assert time.monotonic() - start < 1.0
    try:
        stats = pool.stats()
        assert stats.endpoints["b"].in_use == 2
        assert stats.size == 2
    finally:
        for client in second:
            pool.release(client)
    wait_until(lambda: a.open_clients == 0, timeout=3)


def test_a_waiter_gets_room_freed_on_another_endpoint(
        configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", {**tcp_definition(a.port, b.port), "TOTAL_MAX_SIZE": 1})
    held = pool.acquire(endpoint="a")
    got: list[socket.socket] = []
    thread = threading.Thread(target=lambda: got.append(pool.acquire(endpoint="b", timeout=5)))
    thread.start()
    wait_until(lambda: pool.stats().endpoints["b"].waiting == 1, timeout=3)
    pool.release(held)
    thread.join(5)
    assert len(got) == 1 and peer_port(got[0]) == b.port
    pool.release(got[0])


# ------------------------------------------------------------------ stats, lifecycle


def test_stats_total_the_endpoints_and_are_json_ready(configure: Any,
                                                      echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", {**tcp_definition(a.port, b.port), "MAX_SIZE": 3,
                             "TOTAL_MAX_SIZE": 5})
    held = pool.acquire(endpoint="a")
    with pool.connection(endpoint="b"):
        pass
    stats = pool.stats()
    assert set(stats.endpoints) == {"a", "b"}
    assert stats.alias == "svc" and stats.endpoints["b"].alias == "svc"
    assert (stats.in_use, stats.idle, stats.size) == (1, 1, 2)
    assert stats.max_size == 5
    assert stats.endpoints["a"].max_size == 3
    assert stats.endpoints["a"].in_use == 1 and stats.endpoints["b"].idle == 1
    assert stats.acquired_total == 2
    assert len(stats.leases) == 1 and __file__ in stats.leases[0].where
    assert stats.target == f"a=tcp://127.0.0.1:{a.port}, b=tcp://127.0.0.1:{b.port}"
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["endpoints"]["a"]["in_use"] == 1
    pool.release(held)


def test_release_errors_and_close(configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port))
    client = pool.acquire(endpoint="b")
    pool.release(client)
    with pytest.raises(PoolError, match="not checked out"):
        pool.release(client)
    stranger = socket.create_connection((a.host, a.port))
    try:
        with pytest.raises(PoolError):
            pool.release(stranger)
    finally:
        stranger.close()
    with pytest.raises(RuntimeError), pool.connection(endpoint="a") as sock:
        raise RuntimeError("the block failed")
    assert sock.fileno() == -1  # discarded, never handed out again
    pool.close(timeout=1.0)
    assert pool.closed
    with pytest.raises(PoolClosed):
        pool.acquire()


def test_reload_retires_every_endpoint(configure: Any, echo_servers: list[EchoServer]) -> None:
    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port))
    with pool.connection():
        pass
    pools.reload()
    assert pool.closed
    assert pools["svc"] is not pool


def test_break_pool_helper_breaks_every_endpoint(configure: Any,
                                                 echo_servers: list[EchoServer]) -> None:
    from pooled_clients.testing.helpers import break_pool

    a, b, _ = echo_servers
    pool = configure("svc", tcp_definition(a.port, b.port))
    with break_pool("svc"):
        with pytest.raises(ClientCreationError):
            pool.acquire(timeout=1.0)
        with pytest.raises(ClientCreationError):
            pool.acquire(timeout=1.0, endpoint="b")
        stats = pool.stats()
        assert not stats.healthy
        assert [s.healthy for s in stats.endpoints.values()] == [False, False]


# ------------------------------------------------------------------ system checks


def _check_ids(definition: dict[str, Any]) -> list[tuple[str, str]]:
    with override_settings(POOLED_CLIENTS={"svc": definition}):
        return [(m.id or "", m.msg) for m in run_checks(tags=["pooled_clients"])]


@pytest.mark.parametrize(("definition", "code", "fragment"), [
    ({"ENDPOINTS": {}}, "pooled_clients.E013", "is empty"),
    ({"ENDPOINTS": ["a"]}, "pooled_clients.E013", "expected a dict"),
    ({"ENDPOINTS": {"a": "db1"}}, "pooled_clients.E013", "entry 'a'"),
    ({"ENDPOINTS": {"a": {"OPTION": {}}}}, "pooled_clients.E014", "Did you mean 'OPTIONS'"),
    ({"ENDPOINTS": {"a": {"MAX_SIZE": 0}}}, "pooled_clients.E008", "['MAX_SIZE']"),
    ({"ENDPOINTS": {"a": {"MIN_SIZE": "2"}}}, "pooled_clients.E007", "['MIN_SIZE']"),
    ({"ENDPOINTS": {"a": {"MIN_SIZE": 4, "MAX_SIZE": 2}}}, "pooled_clients.E010",
     "['ENDPOINTS']['a'] has MIN_SIZE 4 greater than MAX_SIZE 2"),
    ({"ENDPOINTS": {"a": {"MIN_SIZE": 2}, "b": {"MIN_SIZE": 2}}, "TOTAL_MAX_SIZE": 3},
     "pooled_clients.E010", "add up to 4, more than TOTAL_MAX_SIZE 3"),
    ({"TOTAL_MAX_SIZE": 3}, "pooled_clients.E015", "['TOTAL_MAX_SIZE'] is set"),
    ({"ROUTING": "round_robin"}, "pooled_clients.E015", "['ROUTING'] is set"),
    ({"ENDPOINTS": {"a": {}}, "ROUTING": "random"}, "pooled_clients.E009", "'round_robin'"),
    ({"ENDPOINTS": {"a": {}}, "TOTAL_MAX_SIZE": 0}, "pooled_clients.E008", "TOTAL_MAX_SIZE"),
    ({"ENDPOINTS": {"a": {"OPTIONS": {"port": 70000}}}}, "pooled_clients.E011",
     "['ENDPOINTS']['a']['OPTIONS']: 'port' is 70000"),
])
def test_endpoint_settings_are_checked(definition: dict[str, Any], code: str,
                                       fragment: str) -> None:
    base = {"BACKEND": TCP, "OPTIONS": {"host": "127.0.0.1", "port": 9}}
    found = _check_ids(base | definition)
    assert any(found_id == code and fragment in msg for found_id, msg in found), found


def test_valid_endpoint_settings_pass_the_checks() -> None:
    assert _check_ids({
        "BACKEND": TCP, "OPTIONS": {"host": "127.0.0.1"},
        "ENDPOINTS": {"a": {"OPTIONS": {"port": 1}, "MIN_SIZE": 1, "MAX_SIZE": 2},
                      "b": {"OPTIONS": {"port": 2}}},
        "TOTAL_MAX_SIZE": 3, "ROUTING": "least_busy",
    }) == []


# ------------------------------------------------------------------ primary and replica


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    primary = PostgresCluster("endpoints-primary")
    replica = PostgresCluster("endpoints-replica")
    try:
        primary.start()
        replica.start()
        yield primary, replica
    finally:
        primary.destroy()
        replica.destroy()


KEEPALIVE = 0.5


def pg_definition(primary: PostgresCluster, replica: PostgresCluster) -> dict[str, Any]:
    return {
        "BACKEND": PG,
        "OPTIONS": {"host": "127.0.0.1", "dbname": "app", "user": "app",
                    "password": primary.password, "autocommit": True},
        "ENDPOINTS": {"primary": {"OPTIONS": {"port": primary.port}, "MAX_SIZE": 4},
                      "replica": {"OPTIONS": {"port": replica.port}, "MAX_SIZE": 4}},
        "TOTAL_MAX_SIZE": 6,
        "ROUTING": "round_robin",
        "KEEPALIVE_INTERVAL": KEEPALIVE,
        "CONNECT_TIMEOUT": 2.0,
        "CONNECT_RETRIES": 0,
        "RETRY_BACKOFF": 0.1,
        "RETRY_BACKOFF_MAX": 0.5,
        "TIMEOUT": 5.0,
    }


def server_port(pool: EndpointPool[Any]) -> int:
    with pool.connection() as conn:
        port: int = conn.execute("select inet_server_port()").fetchone()[0]
        return port


@pytest.mark.slow
def test_primary_and_replica_failover_and_recovery(
        configure: Any, clusters: tuple[PostgresCluster, PostgresCluster]) -> None:
    primary, replica = clusters
    pool = configure("replicated", pg_definition(primary, replica))

    spread = Counter(server_port(pool) for _ in range(20))
    assert spread == {primary.port: 10, replica.port: 10}

    replica.stop("fast")
    # Nobody uses the pool now: the background keepalive check alone finds the dead replica
    # within one KEEPALIVE_INTERVAL of its clients' last use (plus a maintenance round).
    took = wait_until(lambda: not pool.stats().endpoints["replica"].healthy, timeout=10)
    assert took <= KEEPALIVE + 1.5
    assert Counter(server_port(pool) for _ in range(10)) == {primary.port: 10}
    assert pool.stats().healthy
    assert pool.stats().endpoints["replica"].state == "failing"

    replica.start()
    wait_until(lambda: pool.stats().endpoints["replica"].healthy, timeout=10)
    spread = Counter(server_port(pool) for _ in range(20))
    assert spread == {primary.port: 10, replica.port: 10}


@pytest.mark.slow
def test_callers_never_see_the_replica_going_down(
        configure: Any, clusters: tuple[PostgresCluster, PostgresCluster]) -> None:
    primary, replica = clusters
    pool = configure("replicated", pg_definition(primary, replica) | {"CHECK": "always"})
    assert {server_port(pool) for _ in range(4)} == {primary.port, replica.port}
    replica.stop("fast")
    try:
        # The replica's idle clients fail their checkout check: callers fail over at once.
        assert Counter(server_port(pool) for _ in range(8)) == {primary.port: 8}
    finally:
        replica.start()
