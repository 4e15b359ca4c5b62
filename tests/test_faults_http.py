"""HTTP pools against a misbehaving upstream: 5xx bursts, closed keep-alive connections."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from urllib3.util.connection import is_connection_dropped

from devservers.http import UpstreamServer
from devservers.proxy import FaultProxy
from pooled_clients.backends.http import HTTPBackend, PooledSession
from pooled_clients.pool import Pool, PoolSettings
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

PoolFactory = Callable[..., Pool[PooledSession]]


@pytest.fixture
def fresh_upstream(upstream: UpstreamServer) -> Iterator[UpstreamServer]:
    """The session upstream with counters, scripts and connection behaviour reset."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    made: list[Pool[PooledSession]] = []

    def make(base_url: str, options: dict[str, Any] | None = None,
             **settings: Any) -> Pool[PooledSession]:
        backend = HTTPBackend("api", {"base_url": base_url, "timeout": 5, **(options or {})})
        pool = Pool("api", backend, PoolSettings(**settings))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close(timeout=0.5)


def script(upstream: UpstreamServer, statuses: list[int]) -> str:
    """Queue ``statuses`` under a fresh name; return the path that plays them."""
    name = uuid.uuid4().hex[:10]
    upstream.script(name, statuses)
    return f"script/{name}"


def test_502_and_503_are_retried_until_200(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url, {"retries": 3})
    path = script(fresh_upstream, [502, 503])
    with pool.connection() as http:
        response = http.get(path)
    assert response.status_code == 200
    assert fresh_upstream.requests_seen("/" + path) == 3


def test_after_the_last_retry_the_last_response_is_returned(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url, {"retries": 1})
    path = script(fresh_upstream, [502, 503, 504])
    with pool.connection() as http:
        response = http.get(path)
    assert response.status_code == 503
    assert fresh_upstream.requests_seen("/" + path) == 2


def test_without_retries_a_5xx_is_returned_at_once(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url)
    path = script(fresh_upstream, [503])
    with pool.connection() as http:
        assert http.get(path).status_code == 503
    assert fresh_upstream.requests_seen("/" + path) == 1


def test_only_statuses_in_the_forcelist_are_retried(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url, {"retries": 3, "status_forcelist": [500]})
    not_listed = script(fresh_upstream, [502])
    listed = script(fresh_upstream, [500, 500])
    with pool.connection() as http:
        assert http.get(not_listed).status_code == 502
        assert http.get(listed).status_code == 200
    assert fresh_upstream.requests_seen("/" + not_listed) == 1
    assert fresh_upstream.requests_seen("/" + listed) == 3


def test_post_is_not_retried_unless_allowed(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    default = make_pool(fresh_upstream.url, {"retries": 2})
    path = script(fresh_upstream, [503])
    with default.connection() as http:
        assert http.post(path, json={"charge": 1}).status_code == 503
    assert fresh_upstream.requests_seen("/" + path) == 1

    allowed = make_pool(fresh_upstream.url, {"retries": 2, "allowed_methods": ["POST"]})
    path = script(fresh_upstream, [503])
    with allowed.connection() as http:
        assert http.post(path, json={"charge": 1}).status_code == 200
    assert fresh_upstream.requests_seen("/" + path) == 2


def test_backoff_factor_spaces_the_retries(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url, {"retries": 3, "backoff_factor": 0.1})
    path = script(fresh_upstream, [503, 503, 503])
    start = time.monotonic()
    with pool.connection() as http:
        assert http.get(path).status_code == 200
    # urllib3: no sleep before the first retry, then factor * 2 ** (n - 1): 0.2s + 0.4s.
    assert time.monotonic() - start >= 0.55
    assert fresh_upstream.requests_seen("/" + path) == 4


def test_upstream_closing_keep_alive_connections_does_not_fail_the_next_request(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(fresh_upstream.url, max_size=1)
    with pool.connection() as http:
        assert http.get("health").status_code == 200
    fresh_upstream.close_after_each_response = True
    opened = fresh_upstream.connections_opened
    for _ in range(5):
        with pool.connection() as http:
            assert http.get("json/a").json()["ok"] is True
            assert http.get("health").status_code == 200
    # Every request after the first (which reused the connection already open) needed a
    # new connection, on the same pooled session.
    assert fresh_upstream.connections_opened - opened == 9
    stats = pool.stats()
    assert stats.created_total == 1 and stats.errors_total == 0


def kept_alive(pool: Pool[PooledSession]) -> list[Any]:
    """The keep-alive connections urllib3 holds in the pool's idle sessions."""
    conns: dict[int, Any] = {}  # one adapter serves both http:// and https://
    for session in pool.iter_idle_clients():
        for adapter in session.adapters.values():
            pools = adapter.poolmanager.pools  # type: ignore[attr-defined]
            for key in pools.keys():  # noqa: SIM118 (iterating the container raises)
                conns |= {id(c): c for c in (pools[key].pool.queue or []) if c is not None}
    return list(conns.values())


def test_keep_alive_connection_reset_while_idle_is_replaced_transparently(
    fresh_upstream: UpstreamServer, make_pool: PoolFactory,
    fault_proxy_factory: Callable[[str, int], FaultProxy],
) -> None:
    proxy = fault_proxy_factory(fresh_upstream.host, fresh_upstream.port)
    pool = make_pool(f"http://{proxy.host}:{proxy.port}/", max_size=1)
    with pool.connection() as http:
        assert http.get("health").status_code == 200
    assert proxy.active_connections == 1
    assert len(kept_alive(pool)) == 1
    proxy.drop()  # the idle keep-alive connection is reset under the session's feet
    # An idle connection reset "earlier": wait until the reset reached the session's socket
    # (on a loaded machine the kernel may deliver it a little after drop() returns).
    wait_until(lambda: all(is_connection_dropped(conn) for conn in kept_alive(pool)),
               timeout=5.0, message="the reset never reached the idle connection")
    for _ in range(3):
        with pool.connection() as http:
            assert http.get("health").json() == {"ok": True}
    assert pool.stats().created_total == 1
