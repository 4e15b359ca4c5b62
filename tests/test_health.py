"""The django-health-check backend: healthy, down, saturated, bounded, never a secret."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from devservers.http import UpstreamServer
from devservers.postgres import APP_PASSWORD, PostgresCluster
from pooled_clients import pools
from pooled_clients.health import PoolHealthCheck, pool_checks

Configure = Callable[[str, dict[str, Any]], None]


def _pg(cluster: PostgresCluster, **extra: Any) -> dict[str, Any]:
    return {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": cluster.conninfo("app"), "autocommit": True},
        **extra,
    }


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster this module may stop (the session one is shared)."""
    cluster = PostgresCluster("health")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def _assert_no_secret(client: Client) -> None:
    for fmt in ("json", "text"):
        body = client.get(f"/health/?format={fmt}").content.decode()
        assert APP_PASSWORD not in body and "tok-XYZ" not in body, body


def test_pool_checks_lists_only_critical_pools(postgres: PostgresCluster,
                                               pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("critical", _pg(postgres))
    pooled_clients_settings("optional", _pg(postgres, HEALTH={"CRITICAL": False}))
    assert pool_checks() == [(PoolHealthCheck, {"alias": "critical"})]
    assert repr(PoolHealthCheck(alias="critical")) == "Pool critical"


def test_healthy_pools_give_200_and_no_secret(client: Client, postgres: PostgresCluster,
                                              upstream: UpstreamServer,
                                              pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(postgres))
    pooled_clients_settings("payments", {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "headers": {"Authorization": "Bearer tok-XYZ"},
                    "health_path": "health"},
    })
    response = client.get("/health/?format=json")
    assert response.status_code == 200, response.content
    assert response.json() == {"Pool warehouse": "OK",
                               "Pool payments": "OK"}
    _assert_no_secret(client)


def test_stopped_postgres_gives_500_within_health_timeout(
        client: Client, own_postgres: PostgresCluster, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(own_postgres, HEALTH={"TIMEOUT": 1.0}))
    with pools["warehouse"].connection() as conn:  # an idle client that will go stale
        conn.execute("select 1")
    assert client.get("/health/").status_code == 200
    own_postgres.stop("immediate")
    start = time.monotonic()
    response = client.get("/health/?format=json")
    elapsed = time.monotonic() - start
    assert response.status_code == 500
    assert elapsed < 1.0 + 1.0, elapsed
    message = response.json()["Pool warehouse"]
    assert message.startswith("Unavailable: "), message
    # Again with no idle client left: opening one fails.
    start = time.monotonic()
    response = client.get("/health/?format=text")
    assert response.status_code == 500
    assert time.monotonic() - start < 2.0
    assert "Pool warehouse: Unavailable" in response.content.decode()
    _assert_no_secret(client)


def test_saturated_pool_is_healthy(client: Client, postgres: PostgresCluster,
                                   pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(postgres, MAX_SIZE=1, HEALTH={"TIMEOUT": 0.5}))
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with pools["warehouse"].connection():
            held.set()
            done.wait(20)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert held.wait(10)
        response = client.get("/health/?format=json")
        assert response.status_code == 200, response.content
        assert pools["warehouse"].stats().in_use == 1
    finally:
        done.set()
        thread.join(10)


def test_failing_fast_pool_is_unhealthy(client: Client, postgres: PostgresCluster,
                                        pooled_clients_settings: Configure,
                                        pooled_clients_broken: Callable[[str], None]) -> None:
    pooled_clients_settings("warehouse", _pg(postgres, CONNECT_RETRIES=0, TIMEOUT=0.5,
                                             HEALTH={"TIMEOUT": 0.5}))
    pooled_clients_broken("warehouse")
    response = client.get("/health/?format=json")
    assert response.status_code == 500
    assert "Unavailable" in response.json()["Pool warehouse"]


def test_check_bounds_itself_when_the_service_hangs(upstream: UpstreamServer,
                                                     pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("slow", {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "health_path": "slow/5"},
        "CHECK": "never",
        "HEALTH": {"TIMEOUT": 0.5},
    })
    with pools["slow"].connection():  # an idle client the check will validate
        pass
    check = PoolHealthCheck(alias="slow")
    assert check.timeout.total_seconds() == 0.5
    start = time.monotonic()
    with pytest.raises(Exception, match="Unavailable"):
        check.run()
    assert time.monotonic() - start < 1.5


def test_unknown_alias_is_unavailable() -> None:
    with pytest.raises(Exception, match="no pool 'nope'"):
        PoolHealthCheck(alias="nope").run()
