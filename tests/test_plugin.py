"""The pytest plugin's fixtures, used the way a project's own tests use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from pooled_clients import ClientCreationError, pools

HTTP = {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": "http://127.0.0.1:9/"}}


@override_settings(POOLED_CLIENTS={"from_decorator": HTTP})
def test_fixture_inside_override_settings_decorator(
    pooled_clients_settings: Callable[[str, dict[str, Any]], None],
) -> None:
    pooled_clients_settings("from_fixture", HTTP)
    assert set(settings.POOLED_CLIENTS) == {"from_decorator", "from_fixture"}
    assert pools["from_fixture"].alias == "from_fixture"


def test_decorator_settings_did_not_outlive_their_test() -> None:
    # Runs after the test above: neither its decorator nor its fixture may leak.
    assert "from_decorator" not in settings.POOLED_CLIENTS
    assert "from_fixture" not in settings.POOLED_CLIENTS
    assert "from_decorator" not in pools


def test_broken_pool_fails_then_recovers(
    pooled_clients_settings: Callable[[str, dict[str, Any]], None],
    upstream: Any,
) -> None:
    from pooled_clients.testing import break_pool

    pooled_clients_settings("api", {**HTTP, "OPTIONS": {"base_url": upstream.url},
                                    "RETRY_BACKOFF_MAX": 0.1})
    pool = pools["api"]
    with break_pool("api"), pytest.raises(ClientCreationError):
        pool.acquire(timeout=1)
    with pool.connection(timeout=2) as http:
        assert http.get("json/x").status_code == 200
