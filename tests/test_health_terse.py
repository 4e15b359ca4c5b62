"""pooled_clients.health.HealthCheckView: the status code and names for the public, details
for staff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from devservers.http import UpstreamServer
from devservers.ports import free_port

Configure = Callable[[str, dict[str, Any]], None]
URL = "/pooled-health/"
FORMATS = ("json", "text", "atom", "rss", "openmetrics", None)
# What the public must not learn: where the services are, who connects, why they fail.
HIDDEN = ("127.0.0.1", "terse_db", "terse_user", "Connection refused", "postgresql://")


@pytest.fixture
def one_down_one_up(upstream: UpstreamServer, pooled_clients_settings: Configure) -> int:
    port = free_port()
    pooled_clients_settings("warehouse", {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": port, "dbname": "terse_db",
                    "user": "terse_user"},
        "CONNECT_RETRIES": 0, "HEALTH": {"TIMEOUT": 1.0},
    })
    pooled_clients_settings("payments", {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "health_path": "health?access_token=tok-terse"},
    })
    return port


def _get(client: Client, fmt: str | None) -> tuple[int, str]:
    response = client.get(URL + (f"?format={fmt}" if fmt else ""))
    return response.status_code, response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", FORMATS)
def test_anonymous_callers_get_names_and_status_only(client: Client, one_down_one_up: int,
                                                     fmt: str | None) -> None:
    status, body = _get(client, fmt)
    assert status == (200 if fmt in ("atom", "rss", "openmetrics") else 500)
    for hidden in (*HIDDEN, str(one_down_one_up), "tok-terse"):
        assert hidden not in body, (hidden, body)
    assert "warehouse" in body and "payments" in body
    if fmt == "json":
        assert _json(client) == {"Database(alias='default')": "OK",
                                 "Pool warehouse": "unavailable",
                                 "Pool payments": "OK"}
    if fmt == "openmetrics":
        assert ('django_health_check_status{check="PoolHealthCheck",alias="warehouse"} 0'
                in body)


def _json(client: Client) -> dict[str, str]:
    data: dict[str, str] = client.get(URL + "?format=json").json()
    return data


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", FORMATS)
def test_staff_see_the_reasons_but_never_a_secret(admin_client: Client, one_down_one_up: int,
                                                  fmt: str | None) -> None:
    status, body = _get(admin_client, fmt)
    assert "tok-terse" not in body
    if fmt in ("json", "text", None):
        assert status == 500
        assert "terse_db" in body and str(one_down_one_up) in body, body


@pytest.mark.django_db
def test_logged_in_users_who_are_not_staff_get_the_terse_form(
        client: Client, django_user_model: Any, one_down_one_up: int) -> None:
    user = django_user_model.objects.create_user("viewer", password="viewer-pw")
    client.force_login(user)
    assert _json(client)["Pool warehouse"] == "unavailable"


@pytest.mark.django_db
def test_terse_can_be_turned_off_or_forced(rf: Any, admin_user: Any,
                                           one_down_one_up: int) -> None:
    import asyncio
    import json

    from django.contrib.auth.models import AnonymousUser

    from pooled_clients.health import HealthCheckView, pool_checks

    def run(user: Any, **initkwargs: Any) -> dict[str, str]:
        request = rf.get("/?format=json")
        request.user = user
        response = asyncio.run(HealthCheckView.as_view(checks=pool_checks(),
                                                       **initkwargs)(request))
        data: dict[str, str] = json.loads(response.content)
        return data

    key = "Pool warehouse"
    assert run(AnonymousUser(), terse=False)[key].startswith("Unavailable: ")
    assert run(admin_user, terse=True)[key] == "unavailable"
    assert run(admin_user)[key].startswith("Unavailable: ")
