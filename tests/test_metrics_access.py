"""POOLED_CLIENTS_METRICS_ACCESS: /metrics open by default, else a permission, a bearer
token or an address allow-list; everyone else gets 403."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from pooled_clients import conf

TOKEN = "metrics-token-0123456789abcdef"


def test_open_by_default(client: Client) -> None:
    assert client.get("/metrics").status_code == 200


def test_a_bearer_token(settings: Any, client: Client) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"TOKEN": TOKEN}
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"pooled_clients_" in response.content


def test_an_address_allow_list(settings: Any, client: Client) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"IPS": ["10.0.0.0/8", "::1"]}
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"IPS": ["127.0.0.1"]}
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="not an address").status_code == 403


@pytest.mark.django_db
def test_a_permission(settings: Any, client: Client, django_user_model: Any) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"PERMISSION": "pooled_clients.view_pool_status"}
    assert client.get("/metrics").status_code == 403
    user = django_user_model.objects.create_user("scraper", password="scraper-pw")
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_pool_status"))
    client.force_login(django_user_model.objects.get(pk=user.pk))  # a fresh permission cache
    assert client.get("/metrics").status_code == 200


def test_any_one_of_several_rules_lets_a_request_in(settings: Any, client: Client) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"IPS": ["10.0.0.0/8"], "TOKEN": TOKEN}
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.9.9.9").status_code == 200


@pytest.mark.parametrize("value", [
    "pooled_clients.view_pool_status", {}, {"TOKEN": "short"}, {"TOKEN": 12345678901234567890},
    {"IPS": "10.0.0.0/8"}, {"IPS": ["10.0.0.300"]}, {"PERMISSION": "nodot"}, {"USERS": ["a"]},
])
def test_a_malformed_value_is_a_check_error_and_lets_nobody_in(settings: Any, client: Client,
                                                               value: Any) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = value
    problems = [p for p in conf.validate_all() if "METRICS_ACCESS" in p.message]
    assert problems and all(p.id == "pooled_clients.E020" for p in problems), problems
    assert client.get("/metrics").status_code == 403


def test_the_token_never_shows_in_a_check_message(settings: Any) -> None:
    settings.POOLED_CLIENTS_METRICS_ACCESS = {"TOKEN": "has a space in it, a secret one"}
    messages = " ".join(p.message for p in conf.validate_all())
    assert "METRICS_ACCESS" in messages and "secret one" not in messages
