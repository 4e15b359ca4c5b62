"""Keyed pools against real servers: many keys under caps counted at the server, eviction,
idle keys closed, room made across keys, secret keys never shown, async, misuse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client, override_settings

from devservers.postgres import PostgresCluster
from pooled_clients import PoolError, pools
from pooled_clients.backends.postgres import PostgresBackend
from pooled_clients.backends.tcp import TCPBackend
from pooled_clients.keyed import KeyedPool
from tests.waiting import wait_until

Configure = Callable[[str, dict[str, Any]], None]


class IdentityServer:
    """A TCP server on 127.0.0.1 that counts the connections it has open, exactly: a
    connection's first line is its identity, and each later ``?`` line is answered with it.
    A connection stops counting when the server reads its end (before the server closes)."""

    def __init__(self) -> None:
        self.open = 0
        self.most = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="identity-accept").start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.accepted += 1
                self.most = max(self.most, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            identity = reader.readline()
            for line in reader:
                if line.strip() == b"?":
                    conn.sendall(identity)
        except OSError:
            pass
        finally:
            with self._lock:
                self.open -= 1
            reader.close()
            conn.close()

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()


class TenantTCPBackend(TCPBackend):
    """One socket per tenant key, saying whose it is when it connects (as an SDK client
    bound to an API key would); a close that waits for the server to let go."""

    def key_options(self, key: Any) -> dict[str, Any]:
        return {"identity": str(key)}

    def create(self) -> socket.socket:
        sock = super().create()
        sock.sendall(f"{self.options['identity']}\n".encode())
        return sock

    def close(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
            client.settimeout(2.0)
            while client.recv(64):
                pass
        client.close()


def whoami(sock: socket.socket) -> str:
    sock.sendall(b"?\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        assert chunk, "the server closed the connection"
        data += chunk
    return data.decode().strip()


@pytest.fixture
def identity_server() -> Iterator[IdentityServer]:
    server = IdentityServer()
    yield server
    server.stop()


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            work(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]


def sample_while(stop: threading.Event, sample: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            sample()
            time.sleep(0.002)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- many keys


def test_2000_keys_over_tcp_stay_within_every_cap_and_never_cross(
        identity_server: IdentityServer) -> None:
    pool: KeyedPool[socket.socket] = KeyedPool(
        "tenants", TenantTCPBackend,
        {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=2, timeout=10.0), max_keys=100, idle_timeout=None,
        total_max_size=50)
    most_keys = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal most_keys
        most_keys = max(most_keys, pool.live_keys())

    sampler = sample_while(stop, sample)
    keys = [f"tenant-{n}" for n in range(2000)]

    used: set[str] = set()
    checkouts = [0] * 16

    def work(number: int) -> None:
        rng = random.Random(number)
        for step in range(250):
            # Every key in turn (two threads per key), and a recent one again now and then:
            # recent keys come back, old ones are evicted.
            index = step * 8 + number % 8
            for key in (keys[index], keys[max(0, index - rng.randrange(1, 40))])[
                    :1 + rng.randrange(2)]:
                used.add(key)
                checkouts[number] += 1
                with pool.connection(key=key) as sock:
                    assert whoami(sock) == key

    try:
        run_threads(16, work)
    finally:
        stop.set()
        sampler.join(5)
    stats = pool.stats()
    assert identity_server.most <= 50, f"{identity_server.most} open at once at the server"
    assert most_keys <= 100
    assert len(used) == 2000
    assert stats.keys <= 100 and stats.key_evictions_total >= len(used) - 100
    assert stats.acquired_total == sum(checkouts) == stats.released_total
    pool.close(5.0)
    wait_until(lambda: identity_server.open == 0)


class TenantPostgresBackend(PostgresBackend):
    """A close that returns once the server process of the session has exited, so that
    sessions are counted at the server exactly."""

    def close(self, client: psycopg.Connection[Any]) -> None:
        pid = client.info.backend_pid
        super().close(client)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.001)


@pytest.mark.slow
def test_2000_keys_over_three_postgres_databases(postgres: PostgresCluster) -> None:
    for number in range(3):
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            postgres.execute(f"CREATE DATABASE keyed_{number} OWNER app")
    pool: KeyedPool[psycopg.Connection[Any]] = KeyedPool(
        "per_db", TenantPostgresBackend,
        {"conninfo": postgres.conninfo("postgres", password=False),
         "password": postgres.password, "autocommit": True},
        _settings(max_size=2, timeout=20.0, connect_timeout=10.0), max_keys=100,
        idle_timeout=None, total_max_size=50)
    most = 0
    stop = threading.Event()
    monitor = psycopg.connect(postgres.conninfo("postgres"), autocommit=True)

    def sample() -> None:
        nonlocal most
        (count,) = monitor.execute(
            "select count(*) from pg_stat_activity where application_name like 'k-%'"
        ).fetchone() or (0,)
        most = max(most, count)

    sampler = sample_while(stop, sample)

    def work(number: int) -> None:
        rng = random.Random(number)
        for step in range(125):
            n = min(1999, step * 16 + rng.randrange(0, 40))
            key = f"dbname=keyed_{n % 3} application_name=k-{n}"
            with pool.connection(key=key) as conn:
                row = conn.execute("select current_database(), "
                                   "current_setting('application_name')").fetchone()
                assert row == (f"keyed_{n % 3}", f"k-{n}"), (row, key)

    try:
        run_threads(16, work)
    finally:
        stop.set()
        sampler.join(5)
        pool.close(5.0)
        monitor.close()
    assert 0 < most <= 50, f"{most} sessions open at once at the server"
    stats = pool.stats()
    assert stats.key_evictions_total > 0 and stats.acquired_total == 16 * 125


# --------------------------------------------------------------------------- eviction rules


def test_an_idle_key_is_closed_after_idle_timeout_and_a_key_in_use_never(
        identity_server: IdentityServer) -> None:
    pool: KeyedPool[socket.socket] = KeyedPool(
        "idle", TenantTCPBackend, {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=2), max_keys=10, idle_timeout=0.2)
    with pool.connection(key="quiet"):
        pass
    held = pool.acquire(key="busy")
    try:
        wait_until(lambda: pool.stats().key_evictions_total == 1, timeout=5.0)
        time.sleep(0.5)  # several sweeps later, the key in use is still there
        stats = pool.stats()
        assert stats.keys == 1 and stats.key_evictions_total == 1
        assert whoami(held) == "busy"
        wait_until(lambda: identity_server.open == 1)  # quiet's socket is closed
    finally:
        pool.release(held)
    pool.close(2.0)


def test_a_release_asks_only_the_key_it_came_from(identity_server: IdentityServer) -> None:
    """``release`` finds a client's key without asking the other keys (thousands, in a
    large keyed pool), including for a client handed to another thread."""
    pool: KeyedPool[socket.socket] = KeyedPool(
        "owners", TenantTCPBackend, {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=1), max_keys=50, idle_timeout=None)
    for i in range(50):
        with pool.connection(key=f"tenant-{i}"):
            pass
    held = pool.acquire(key="tenant-7")
    owner = pool.owner(held)

    def refuse(client: object) -> bool:
        raise AssertionError("another key was asked for the client")

    for member in pool.members():
        if member is not owner:
            member.holds = refuse  # type: ignore[method-assign]
    done = threading.Thread(target=pool.release, args=(held,))
    done.start()
    done.join(5.0)
    assert pool.stats().in_use == 0
    for member in pool.members():
        member.__dict__.pop("holds", None)
    with pytest.raises(PoolError, match="not checked out"):
        pool.release(held)  # asks every key, finds none: released twice
    pool.close(2.0)


def test_a_new_key_past_max_evicts_the_least_recently_used_idle_key(
        identity_server: IdentityServer) -> None:
    pool: KeyedPool[socket.socket] = KeyedPool(
        "lru", TenantTCPBackend, {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=1), max_keys=2, idle_timeout=None)
    held = pool.acquire(key="a")
    with pool.connection(key="b"):
        pass
    with pool.connection(key="c"):  # "a" is in use: "b" goes
        pass
    assert pool.stats().keys == 2 and pool.stats().key_evictions_total == 1
    with pool.connection(key="d"):  # "a" is still in use: "c" goes
        pass
    with pytest.raises(PoolError, match="KEYS"), pool.connection(key="e"), \
            pool.connection(key="f"):
        pass  # "a" and "e" in use: no room for "f"
    assert whoami(held) == "a"
    pool.release(held)
    pool.close(2.0)


def test_total_reached_with_idle_clients_on_one_key_another_key_gets_a_client_at_once(
        identity_server: IdentityServer) -> None:
    pool: KeyedPool[socket.socket] = KeyedPool(
        "room", TenantTCPBackend, {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=3, timeout=5.0, max_idle=3600.0), max_keys=10, idle_timeout=None,
        total_max_size=3)
    clients = [pool.acquire(key="A") for _ in range(3)]
    for client in clients:
        pool.release(client)
    start = time.monotonic()
    with pool.connection(key="B") as sock:
        assert whoami(sock) == "B"
    assert time.monotonic() - start < 1.0
    assert identity_server.most <= 3
    pool.close(2.0)


# --------------------------------------------------------------------------- async


def test_async_keys_and_a_cancelled_wait_lose_nothing(identity_server: IdentityServer) -> None:
    pool: KeyedPool[socket.socket] = KeyedPool(
        "akeys", TenantTCPBackend, {"host": identity_server.host, "port": identity_server.port},
        _settings(max_size=1, timeout=5.0), max_keys=10, idle_timeout=None)

    async def main() -> None:
        async with pool.aconnection(key="x") as sock:
            assert await asyncio.to_thread(whoami, sock) == "x"
        held = await pool.aacquire(key="y")
        waiters = [asyncio.create_task(pool.aacquire(key="y")) for _ in range(5)]
        await asyncio.sleep(0.05)
        for task in waiters[:4]:
            task.cancel()
        await pool.arelease(held)
        last = await asyncio.wait_for(waiters[4], 5.0)
        assert last is held
        await pool.arelease(last)

    asyncio.run(main())
    stats = pool.stats()
    assert (stats.in_use, stats.waiting, stats.keys) == (0, 0, 2)
    assert pool.stats(key="y").idle == 1
    pool.close(2.0)


# --------------------------------------------------------------------------- secrets, misuse


SECRET = "sk_live_51HxQ9f2eZvKYlo2C0kS3cR3tK3y"


def test_a_secret_key_is_never_shown(identity_server: IdentityServer, client: Client,
                                     admin_user: Any, caplog: pytest.LogCaptureFixture,
                                     pooled_clients_settings: Configure) -> None:
    caplog.set_level(logging.DEBUG)
    pooled_clients_settings("saas", {
        "BACKEND": "tests.test_keyed.TenantTCPBackend",
        "OPTIONS": {"host": identity_server.host, "port": identity_server.port},
        "KEYS": {"MAX": 5}, "MAX_SIZE": 1, "TIMEOUT": 0.5, "LEAK_TIMEOUT": 0.1,
    })
    pool = pools["saas"]
    held = pool.acquire(key=SECRET)
    surfaces = [repr(pool), str(pool.stats()), json.dumps(pool.stats().as_dict())]
    with pytest.raises(PoolError) as info:
        pool.acquire(key=SECRET)  # times out: its message names the key's pool
    surfaces += [str(info.value), repr(info.value)]
    wait_until(lambda: pool.stats().leaks_total == 1)
    client.force_login(admin_user)
    for fmt in ("", "?format=json", "?format=fragment"):
        surfaces.append(client.get(f"/admin/pooled_clients/poolstatus/{fmt}").content.decode())
    out = _command_output("pool_status", "--json") + _command_output("pool_status")
    surfaces.append(out)
    pool.release(held)
    surfaces.append(caplog.text)
    with contextlib.suppress(ImportError):
        from pooled_clients import metrics

        metrics.refresh()
        from prometheus_client import generate_latest

        surfaces.append(generate_latest().decode())
    for text in surfaces:
        assert SECRET not in text and SECRET[:12] not in text
    assert "key#" in surfaces[2]  # shown by its hash


def _command_output(*args: str) -> str:
    import io

    out = io.StringIO()
    with contextlib.suppress(SystemExit):
        call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_misuse_gets_clear_errors(identity_server: IdentityServer,
                                  pooled_clients_settings: Configure) -> None:
    tcp = {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
           "OPTIONS": {"host": identity_server.host, "port": identity_server.port}}
    pooled_clients_settings("plain", tcp)
    pooled_clients_settings("keyed", {**tcp, "OPTIONS": {}, "KEYS": {}})
    with pytest.raises(PoolError, match="not keyed"):
        pools["plain"].acquire(key="x")
    with pytest.raises(PoolError, match="pass key="):
        pools["keyed"].acquire()
    with pytest.raises(PoolError, match="hashable"):
        pools["keyed"].acquire(key=["127.0.0.1", identity_server.port])
    with pools["keyed"].connection(key=("127.0.0.1", identity_server.port)) as sock:
        sock.sendall(b"hello\n?\n")
        assert sock.recv(6) == b"hello\n"


def test_keys_with_endpoints_and_bad_keys_settings_are_system_check_errors() -> None:
    base = {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": 1}}
    with override_settings(POOLED_CLIENTS={
        "both": {**base, "KEYS": {"MAX": 10}, "ENDPOINTS": {"a": {}}},
        "bad": {**base, "KEYS": {"MAX": 0, "IDEL_TIMEOUT": 5}},
        "routing": {**base, "KEYS": {}, "ROUTING": "round_robin"},
        "fine": {"BACKEND": "pooled_clients.backends.tcp.TCPBackend", "KEYS": {},
                 "TOTAL_MAX_SIZE": 20},
    }):
        messages = [(e.id, e.msg) for e in run_checks() if e.id.startswith("pooled_clients")]
    ids = {message for message in messages}
    assert any(i == "pooled_clients.E017" and "'both'" in m and "ENDPOINTS" in m
               for i, m in ids)
    assert any(i == "pooled_clients.E017" and "'bad'" in m and "MAX" in m for i, m in ids)
    assert any(i == "pooled_clients.E017" and "IDEL_TIMEOUT" in m and "IDLE_TIMEOUT" in m
               for i, m in ids)
    assert any(i == "pooled_clients.E015" and "'routing'" in m for i, m in ids)
    assert not any("'fine'" in m for _, m in ids), messages


def _settings(**values: Any) -> Any:
    from pooled_clients.core import PoolSettings

    return PoolSettings(**values)


def test_reload_fork_and_shutdown_treat_a_keyed_pool_like_any_other(
        identity_server: IdentityServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("life", {
        "BACKEND": "tests.test_keyed.TenantTCPBackend",
        "OPTIONS": {"host": identity_server.host, "port": identity_server.port},
        "KEYS": {"MAX": 5}, "MAX_SIZE": 2,
    })
    old = pools["life"]
    with old.connection(key="a") as sock:
        assert whoami(sock) == "a"
    held = old.acquire(key="b")
    # A forked child never uses or closes what its parent opened.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with pools["life"].connection(key="a") as sock:
                ok = whoami(sock) == "a" and pools["life"].stats().created_total == 1
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 2) == b"ok"
    os.waitpid(pid, 0)
    os.close(read)
    assert whoami(held) == "b"  # the parent's socket still works
    # Reload retires the old pool: idle clients close now, the one in use when released.
    pools.reload()
    assert pools["life"] is not old
    assert old.stats().idle == 0 and old.stats().in_use == 1
    old.release(held)
    wait_until(lambda: old.stats().size == 0)
    with pools["life"].connection(key="a") as sock:
        assert whoami(sock) == "a"
    pools.close_all(timeout=1.0)
    wait_until(lambda: identity_server.open == 0)


def test_the_admin_page_shows_the_key_count_and_the_busiest_keys(
        identity_server: IdentityServer, admin_client: Client,
        pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("hosts", {
        "BACKEND": "pooled_clients.backends.tcp.TCPBackend", "OPTIONS": {},
        "KEYS": {"MAX": 50}, "MAX_SIZE": 2,
    })
    pool = pools["hosts"]
    # Two keys for the same server: ("127.0.0.1", port) and ("localhost", port) differ.
    keys = [(host, identity_server.port) for host in ("127.0.0.1", "localhost")]
    for key in keys:
        with pool.connection(key=key) as sock:
            sock.sendall(b"x\n")
    held = pool.acquire(key=keys[0])
    try:
        page = admin_client.get("/admin/pooled_clients/poolstatus/").content.decode()
        data = admin_client.get("/admin/pooled_clients/poolstatus/?format=json").json()
    finally:
        pool.release(held)
    assert "2 live keys" in page
    busiest = list(next(p for p in data["pools"] if p["alias"] == "hosts")["top_keys"])
    assert busiest[0] == f"127.0.0.1:{identity_server.port}"  # the one in use comes first
    assert f"<code>localhost:{identity_server.port}</code>" in page
