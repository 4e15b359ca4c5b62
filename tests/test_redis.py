"""RedisBackend and AsyncRedisBackend against private redis-server processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.test import Client, override_settings

from devservers.redis import RedisServer
from pooled_clients import ClientCreationError, pools
from pooled_clients.backends.redis import RedisBackend
from pooled_clients.conf import validate_definition
from tests.conftest import REDIS_PASSWORD as PASSWORD
from tests.surfaces import assert_surfaces_show

BACKEND = "pooled_clients.backends.redis.RedisBackend"
ASYNC_BACKEND = "pooled_clients.backends.redis.AsyncRedisBackend"
Configure = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server this test may stop and restart."""
    with RedisServer(password=PASSWORD) as server:
        yield server


def _pool(server: RedisServer, backend: str = BACKEND, **keys: Any) -> dict[str, Any]:
    options = {"host": server.host, "port": server.port, "password": PASSWORD}
    options.update(keys.pop("OPTIONS", {}))
    return {"BACKEND": backend, "OPTIONS": options, "TIMEOUT": 5.0, **keys}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_importing_the_backend_does_not_import_redis() -> None:
    code = ("import sys, pooled_clients.backends.redis; "
            "assert 'redis' not in sys.modules, 'redis was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_check_options_reports_unknown_managed_and_mistyped_options() -> None:
    problems = RedisBackend.check_options({
        "url": "http://u:pw-in-url@h/0", "hots": "x", "max_connections": 9, "port": "6379",
        "db": -1, "ssl": "yes", "socket_timeout": 0,
    })
    text = "\n".join(problems)
    assert "unknown option 'hots'" in text
    assert "'max_connections' is set by the pool" in text
    assert "'url' is 'http://u@h/0'" in text and "pw-in-url" not in text
    assert "'port' and 'url' are both set" in text
    assert "'db' is -1" in text and "'ssl' is 'yes'" in text and "'socket_timeout' is 0" in text
    assert RedisBackend.check_options({"url": "rediss://cache:6380/2", "decode_responses": True,
                                       "health_check_interval": 10}) == []
    errors = validate_definition("locks", {"BACKEND": BACKEND, "OPTIONS": {"hots": "x"}})
    assert errors and errors[0].id.startswith("pooled_clients.E")


def test_system_check_names_the_missing_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = {"BACKEND": BACKEND, "OPTIONS": {"url": "redis://cache:6379/0"}}
    assert validate_definition("locks", definition) == []
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    problems = validate_definition("locks", definition)
    assert [p.id for p in problems] == ["pooled_clients.E011"]
    assert "django-pooled-clients[redis]" in problems[0].message


def test_keys_are_database_numbers_or_urls_and_never_show_a_password(
        redis_server: RedisServer) -> None:
    backend = RedisBackend("locks", {"host": "cache", "password": PASSWORD})
    assert backend.key_options(3) == {"db": 3}
    assert backend.key_options("redis://:pw@other:6380/1")["url"] == "redis://:pw@other:6380/1"
    assert backend.describe_key(3) == "db 3"
    assert backend.describe_key("redis://:pw@other:6380/1") == "redis://other:6380/1"
    with pytest.raises(ValueError, match="database number or a redis:// URL"):
        backend.key_options(("cache", 6379))
    assert backend.describe() == "redis://cache:6379/0"
    assert PASSWORD in backend.secrets()
    # Merged over the pool's OPTIONS as a keyed pool does: a db key wins over the URL's db,
    # a URL key over the pool's host and port.
    by_url = {"url": f"redis://127.0.0.1:{redis_server.port}/0", "password": PASSWORD}
    by_host = {"host": "127.0.0.1", "port": redis_server.port, "password": PASSWORD}
    for options, key in ((by_url, 3), (by_host, f"redis://127.0.0.1:{redis_server.port}/3")):
        keyed = RedisBackend("locks", {**options, **backend.key_options(key)})
        assert RedisBackend.check_options(keyed.options) == []
        assert keyed.describe() == f"redis://127.0.0.1:{redis_server.port}/3"
        client = keyed.create()
        try:
            client.set("keyed", str(key))
        finally:
            keyed.close(client)
        witness = RedisBackend("witness", {**by_host, "db": 3}).create()
        try:
            assert witness.get("keyed") == str(key).encode()
        finally:
            witness.close()


def test_sixteen_threads_counting_through_a_pool_of_four_count_exactly(
        redis_server: RedisServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("counter", _pool(redis_server, MAX_SIZE=4))
    pool = pools["counter"]
    with pool.connection() as client:
        client.delete("hits")
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            for _ in range(100):
                with pool.connection() as client:
                    client.incr("hits")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert redis_server.command("GET", "hits") == b"1600"
    stats = pool.stats()
    assert stats.created_total <= 4 and stats.max_size == 4 and stats.in_use == 0


def _leave_multi(client: redis.Redis) -> None:
    client.execute_command("MULTI")
    client.execute_command("SET", "state", "from-the-previous-caller")


def _leave_watch(client: redis.Redis) -> Any:
    pipe = client.pipeline()
    pipe.watch("state")  # and never executed nor reset
    return pipe  # kept by the caller: a collected pipeline would send UNWATCH itself


def _leave_pubsub(client: redis.Redis) -> Any:
    pubsub = client.pubsub()
    pubsub.subscribe("news")
    return pubsub


def _leave_unread_reply(client: redis.Redis) -> None:
    connection = client.connection_pool.get_connection()
    connection.send_command("ECHO", "stale")
    client.connection_pool.release(connection)


def _leave_reply_in_flight(client: redis.Redis) -> None:
    connection = client.connection_pool.get_connection()
    connection.send_command("BLPOP", "nothing-here", "1")  # answered a second from now
    client.connection_pool.release(connection)


def _leave_other_db(client: redis.Redis) -> None:
    client.execute_command("SELECT", "5")


@pytest.mark.parametrize("leave", [_leave_multi, _leave_watch, _leave_pubsub,
                                   _leave_unread_reply, _leave_reply_in_flight,
                                   _leave_other_db],
                         ids=lambda f: f.__name__.removeprefix("_leave_"))
def test_a_client_left_in_a_session_state_is_discarded_and_the_next_caller_is_not_confused(
        redis_server: RedisServer, pooled_clients_settings: Configure,
        leave: Callable[[redis.Redis], Any]) -> None:
    pooled_clients_settings("stateful", _pool(redis_server, MAX_SIZE=1))
    pool = pools["stateful"]
    with pool.connection() as client:
        client.set("state", "clean")
        client.delete("calls")
    with pool.connection() as client:
        kept = leave(client)
    # The publication would be the next caller's "reply" on a subscribed connection.
    redis_server.command("PUBLISH", "news", "stale-message")
    with pool.connection() as client:
        assert client.incr("calls") == 1
        assert client.get("state") == b"clean"
        assert client.echo("fresh") == b"fresh"
    stats = pool.stats()
    assert stats.closed_total == 1 and stats.created_total == 2
    del kept
    assert redis_server.command("GET", "state") == b"clean"


def test_a_command_error_keeps_the_client(redis_server: RedisServer,
                                          pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("errors", _pool(redis_server, MAX_SIZE=1))
    pool = pools["errors"]
    with pytest.raises(redis.ResponseError), pool.connection() as client:
        client.set("text", "abc")
        client.incr("text")
    with pool.connection() as client:
        assert client.ping()
    assert pool.stats().created_total == 1


@pytest.mark.slow
def test_after_a_restart_the_pool_is_healthy_within_2s_and_hands_out_nothing_broken(
        own_redis: RedisServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("restart", _pool(
        own_redis, MAX_SIZE=4, CONNECT_TIMEOUT=1.0, CONNECT_RETRIES=0, RETRY_BACKOFF=0.1,
        RETRY_BACKOFF_MAX=0.3))
    pool = pools["restart"]
    held = [pool.acquire() for _ in range(4)]
    for client in held:
        client.incr("before")
    for client in held:
        pool.release(client)
    own_redis.stop()
    # While down: an error within the timeout, never a hang. (An idle client is handed out
    # unchecked under CHECK "idle"; its command fails and the pool drops it and the older
    # idle ones; then creation fails, and the pool fails fast.)
    for _ in range(3):
        start = time.monotonic()
        with (pytest.raises((ClientCreationError, redis.ConnectionError)),
              pool.connection(timeout=2.0) as client):
            client.ping()
        assert time.monotonic() - start < 2.5
    own_redis.start()
    back_at = time.monotonic() - 0.05  # wait_ready() polls every 50 ms

    def healthy() -> bool:
        try:
            pool.check(timeout=0.5)
        except Exception:
            return False
        return pool.stats().healthy

    assert wait_until(healthy, 2.0), pool.stats()
    assert time.monotonic() - back_at < 2.0
    # Nothing broken is handed out: four clients at once, each answering.
    clients = [pool.acquire(timeout=2.0) for _ in range(4)]
    try:
        assert [client.incr("after") for client in clients] == [1, 2, 3, 4]
    finally:
        for client in clients:
            pool.release(client)


@pytest.mark.django_db
def test_every_surface_shows_the_pool_and_never_the_password(
        redis_server: RedisServer, pooled_clients_settings: Configure, client: Client,
        admin_client: Client) -> None:
    pooled_clients_settings("locks", _pool(redis_server))
    with pools["locks"].connection() as conn:
        conn.ping()
    target = f"redis://127.0.0.1:{redis_server.port}/0"
    assert_surfaces_show("locks", target, [PASSWORD], client, admin_client)
    # A URL with the password inside is masked the same way, and so is a failure's message.
    pooled_clients_settings("by-url", {"BACKEND": BACKEND, "OPTIONS": {"url": redis_server.url}})
    assert pools["by-url"].stats().target == target
    pooled_clients_settings("wrong", {"BACKEND": BACKEND, "CONNECT_RETRIES": 0, "OPTIONS": {
        "url": redis_server.url.replace(PASSWORD, PASSWORD + "-but-wrong")}})
    with pytest.raises(ClientCreationError) as failure:
        pools["wrong"].acquire(timeout=2.0)
    rendered = [str(failure.value), repr(pools["wrong"].stats()),
                str(pools["wrong"].stats().as_dict())]
    assert all(PASSWORD not in text for text in rendered), rendered


def test_a_lock_pool_beside_django_redis_cache(redis_server: RedisServer,
                                               pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("locks", _pool(redis_server, MAX_SIZE=2))
    with override_settings(CACHES={"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{redis_server.port}/1",
        "OPTIONS": {"password": PASSWORD},
    }}):
        caches["default"].set("report", "cached")
        with pools["locks"].connection() as client, client.lock("report-lock", timeout=5):
            assert caches["default"].get("report") == "cached"
            assert client.exists("report-lock") == 1
        with pools["locks"].connection() as client:
            assert client.exists("report-lock") == 0


def test_async_backend_counts_exactly_and_discards_a_client_left_in_multi(
        redis_server: RedisServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("acounter", _pool(redis_server, ASYNC_BACKEND, MAX_SIZE=4))
    pool = pools["acounter"]

    async def scenario() -> None:
        async with pool.aconnection() as client:
            await client.delete("ahits")

        async def work() -> None:
            for _ in range(20):
                async with pool.aconnection() as client:
                    await client.incr("ahits")

        await asyncio.gather(*(work() for _ in range(16)))
        async with pool.aconnection() as client:
            assert await client.get("ahits") == b"320"
            await client.execute_command("MULTI")
        async with pool.aconnection() as client:
            assert await client.incr("ahits") == 321

    asyncio.run(scenario())
    stats = pool.stats()
    assert stats.created_total <= 5 and stats.closed_total >= 1
