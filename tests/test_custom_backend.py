"""A custom backend from settings: one SDK client per API key, as in docs/backends.md."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.checks import run_checks
from django.test import override_settings

from devservers.http import UpstreamServer
from pooled_clients import ClientCreationError, pools
from tests.acme_backend import AcmeClient

ACME = "tests.acme_backend.AcmeBackend"
KEY_A = "sk_live_tenant_a_5f2e9c1d7b"
KEY_B = "sk_live_tenant_b_8a4d3e6f0c"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "backends.md"


@pytest.fixture
def acme(pooled_clients_settings: Callable[[str, dict[str, Any]], None],
         upstream: UpstreamServer) -> Iterator[Any]:
    pooled_clients_settings("acme", {
        "BACKEND": ACME,
        "OPTIONS": {"base_url": upstream.url + "/", "timeout": 5},
        "ENDPOINTS": {
            "tenant-a": {"OPTIONS": {"api_key": KEY_A}, "MAX_SIZE": 2},
            "tenant-b": {"OPTIONS": {"api_key": KEY_B}},
        },
        "TOTAL_MAX_SIZE": 3,
        "CHECK": "always",
        "CONNECT_RETRIES": 0,
    })
    try:
        yield pools["acme"]
    finally:
        pools.close_all(timeout=1.0)


def test_each_tenant_gets_a_client_with_its_own_key(acme: Any) -> None:
    with acme.connection(endpoint="tenant-a") as client:
        assert isinstance(client, AcmeClient)
        assert client.get("echo/orders")["headers"]["Authorization"] == f"Bearer {KEY_A}"
    with acme.connection(endpoint="tenant-b") as client:
        assert client.get("/echo/orders")["headers"]["Authorization"] == f"Bearer {KEY_B}"
    with acme.connection(endpoint="tenant-a") as again:
        assert again.get("echo")["headers"]["Authorization"] == f"Bearer {KEY_A}"
    stats = acme.stats()
    assert stats.endpoints["tenant-a"].created_total == 1  # reused, and checked on checkout
    assert stats.endpoints["tenant-a"].acquired_total == 2
    assert stats.max_size == 3


def test_api_keys_never_appear_in_what_the_pool_renders(acme: Any,
                                                        upstream: UpstreamServer) -> None:
    with acme.connection(endpoint="tenant-b"):
        rendered = [repr(acme), str(acme.stats()), json.dumps(acme.stats().as_dict())]
    for text in rendered:
        assert KEY_A not in text and KEY_B not in text
    assert upstream.url in acme.stats().target


def test_an_unreachable_service_is_a_creation_error_without_the_key(
        pooled_clients_settings: Callable[[str, dict[str, Any]], None]) -> None:
    pooled_clients_settings("acme", {
        "BACKEND": ACME,
        "OPTIONS": {"base_url": "http://127.0.0.1:9/", "api_key": KEY_A},
        "CHECK": "always",
        "CONNECT_RETRIES": 0,
        "CONNECT_TIMEOUT": 0.5,
    })
    try:
        pool = pools["acme"]
        with pool.connection() as client, pytest.raises(requests.ConnectionError):
            client.get("echo")  # the SDK connects lazily: its first request fails
        with pytest.raises(ClientCreationError) as info:
            pool.check(timeout=1.0)
        assert KEY_A not in str(info.value)
        assert KEY_A not in (pool.stats().last_error or "")
    finally:
        pools.close_all(timeout=1.0)


@pytest.mark.parametrize(("options", "fragment"), [
    ({"base_url": "https://api.example/"}, "'api_key' is required"),
    ({"api_key": "k", "base_url": ""}, "'base_url' is required"),
    ({"api_key": "k", "base_url": "https://x/", "retries": 3}, "unknown option 'retries'"),
])
def test_the_backends_option_checks_are_system_checks(options: dict[str, Any],
                                                      fragment: str) -> None:
    with override_settings(POOLED_CLIENTS={"acme": {"BACKEND": ACME, "OPTIONS": options}}):
        messages = run_checks(tags=["pooled_clients"])
    assert [m.id for m in messages] == ["pooled_clients.E011"]
    assert fragment in messages[0].msg
    assert "POOLED_CLIENTS['acme']['OPTIONS']" in messages[0].msg


def test_endpoint_options_are_checked_merged(upstream: UpstreamServer) -> None:
    definition = {"BACKEND": ACME, "OPTIONS": {"base_url": upstream.url},
                  "ENDPOINTS": {"tenant-a": {"OPTIONS": {"api_key": KEY_A}},
                                "tenant-b": {}}}
    with override_settings(POOLED_CLIENTS={"acme": definition}):
        messages = run_checks(tags=["pooled_clients"])
    assert [(m.id, "['tenant-b']" in m.msg) for m in messages] == [("pooled_clients.E011", True)]
    assert KEY_A not in messages[0].msg


@pytest.mark.parametrize(("path", "code"), [
    ("tests.acme_backend.AcmeClient", "pooled_clients.E006"),
    ("tests.acme_backend.Missing", "pooled_clients.E005"),
])
def test_a_backend_path_must_name_a_client_backend(path: str, code: str) -> None:
    with override_settings(POOLED_CLIENTS={"acme": {"BACKEND": path}}):
        assert [m.id for m in run_checks(tags=["pooled_clients"])] == [code]


def test_the_docs_show_this_exact_backend() -> None:
    source = (Path(__file__).parent / "acme_backend.py").read_text()
    code = source[source.index("from __future__"):]
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert code in blocks, "docs/backends.md must show tests/acme_backend.py verbatim"
