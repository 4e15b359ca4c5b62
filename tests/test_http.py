"""The HTTP backend against a real local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.test import override_settings

from devservers.http import UpstreamServer
from pooled_clients import pools
from pooled_clients.backends.http import HTTPBackend, PooledSession


@pytest.fixture
def http_pool(upstream: UpstreamServer) -> Iterator[Any]:
    definition = {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "timeout": 5,
                    "headers": {"X-Api-Key": "key-abc123"}, "health_path": "/health"},
        "MAX_SIZE": 3,
    }
    with override_settings(POOLED_CLIENTS={"payments": definition}):
        yield pools["payments"]
        pools["payments"].close(timeout=1)


def test_relative_urls_with_or_without_slash_join_base_path(upstream: UpstreamServer) -> None:
    backend = HTTPBackend("api", {"base_url": upstream.url + "echo/v1"})
    http = backend.create()
    assert isinstance(http, PooledSession)
    one = http.get("charges/42").json()
    two = http.get("/charges/42").json()
    assert one["path"] == two["path"] == "/echo/v1/charges/42"
    backend.close(http)


def test_absolute_url_is_used_as_is(http_pool: Any, upstream: UpstreamServer) -> None:
    with http_pool.connection() as http:
        assert http.get(upstream.url + "echo/abs").json()["path"] == "/echo/abs"


def test_headers_and_auth_are_sent(upstream: UpstreamServer) -> None:
    with override_settings(POOLED_CLIENTS={"api": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "headers": {"X-Api-Key": "k-1"},
                    "auth": ["user", "pw-2"]},
    }}), pools["api"].connection() as http:
        headers = http.get("echo").json()["headers"]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-api-key"] == "k-1"
    assert lowered["authorization"].startswith("Basic ")


def test_default_timeout_applies(upstream: UpstreamServer) -> None:
    with override_settings(POOLED_CLIENTS={"slow": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "timeout": 0.2},
    }}), pytest.raises(requests.Timeout), pools["slow"].connection() as http:
        http.get("slow/2")


def test_session_keeps_its_connection_alive(http_pool: Any, upstream: UpstreamServer) -> None:
    with http_pool.connection() as http:
        http.get("json/a")
        opened = upstream.connections_opened
        for _ in range(5):
            http.get("json/a")
        assert upstream.connections_opened == opened


def test_cookies_and_header_changes_do_not_leak_to_next_caller(http_pool: Any) -> None:
    with http_pool.connection() as http:
        http.cookies.set("session", "one-user")
        http.headers["X-Temp"] = "1"
    with http_pool.connection() as again:
        assert again is http
        assert not again.cookies
        assert "X-Temp" not in again.headers
        assert again.headers["X-Api-Key"] == "key-abc123"


def test_retries_then_returns_last_response(upstream: UpstreamServer) -> None:
    upstream.script("flaky", [503, 503, 503, 503])
    with override_settings(POOLED_CLIENTS={"retrying": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "retries": 2, "backoff_factor": 0},
    }}):
        before = upstream.requests_seen("/script/flaky")
        with pools["retrying"].connection() as http:
            response = http.get("script/flaky")
        assert response.status_code == 503
        assert upstream.requests_seen("/script/flaky") - before == 3


def test_check_uses_health_path(http_pool: Any, upstream: UpstreamServer) -> None:
    before = upstream.requests_seen("/health")
    http_pool.check(timeout=2)
    with http_pool.connection() as http:
        http_pool.backend.check(http)
    assert upstream.requests_seen("/health") > before


def test_latency_and_error_rate_are_recorded(http_pool: Any) -> None:
    with http_pool.connection() as http:
        http.get("json/ok")
        http.get("status/500")
    figures = http_pool.stats().backend_stats
    assert figures["requests_total"] >= 2
    assert figures["request_errors_total"] >= 1
    assert figures["latency_ms_p50"] is not None


def test_describe_masks_credentials_and_query() -> None:
    backend = HTTPBackend("x", {"base_url": "https://bob:hunter22@api.example.com/v1?token=t0k"})
    assert backend.describe() == "https://bob@api.example.com/v1/"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({}, "'base_url' is required"),
        ({"base_url": "ftp://x/"}, "not an http"),
        ({"base_url": "http://x/", "retries": -1}, "'retries'"),
        ({"base_url": "http://x/", "timeout": "5"}, "'timeout'"),
        ({"base_url": "http://x/", "headers": {"a": 1}}, "'headers'"),
        ({"base_url": "http://x/", "auth": "secret"}, "'auth'"),
        ({"base_url": "http://x/", "status_forcelist": [999]}, "'status_forcelist'"),
        ({"base_url": "http://x/", "bogus": 1}, "unknown option 'bogus'"),
    ],
)
def test_check_options_names_the_problem(options: dict[str, Any], fragment: str) -> None:
    problems = HTTPBackend.check_options(options)
    assert any(fragment in p for p in problems), problems
