"""Secrets in conninfo, headers and auth never show in str(pool), stats, errors or logs."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import override_settings

from devservers.http import UpstreamServer
from devservers.ports import free_port
from devservers.postgres import PostgresCluster
from pooled_clients import pools
from pooled_clients.exceptions import ClientCreationError, PoolTimeout
from pooled_clients.masking import mask_text, mask_url

PG_SECRET = "pg-Pa55word-xyz"
TOKEN = "tok-Abc123-SECRET"
AUTH_PW = "auth-pw-Q9Q9"


def rendered(pool_alias: str) -> str:
    pool = pools[pool_alias]
    stats = pool.stats()
    return "\n".join([str(pool), repr(pool), repr(stats), json.dumps(stats.as_dict()),
                      repr(pool.backend)])


def test_postgres_password_is_masked_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with override_settings(POOLED_CLIENTS={"db": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": f"postgresql://app:{PG_SECRET}@127.0.0.1:{port}/app"},
        "CONNECT_RETRIES": 0,
    }}), caplog.at_level(logging.DEBUG):
        with pytest.raises(ClientCreationError) as info:
            pools["db"].acquire(timeout=3)
        text = rendered("db") + str(info.value) + caplog.text
        assert PG_SECRET not in text
        assert f"postgresql://app@127.0.0.1:{port}/app" in str(pools["db"])


def test_password_keyword_is_masked(postgres: PostgresCluster) -> None:
    with override_settings(POOLED_CLIENTS={"db": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": postgres.port, "dbname": "app",
                    "user": "app", "password": postgres.password},
    }}):
        with pools["db"].connection() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert postgres.password not in rendered("db")


def test_http_headers_and_auth_are_masked(upstream: UpstreamServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(POOLED_CLIENTS={"api": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": f"http://user:{AUTH_PW}@127.0.0.1:{upstream.port}/?key={TOKEN}",
                    "headers": {"Authorization": f"Bearer {TOKEN}"},
                    "auth": ["user", AUTH_PW]},
        "MAX_SIZE": 1,
    }}), caplog.at_level(logging.DEBUG):
        pool = pools["api"]
        held = pool.acquire()
        with pytest.raises(PoolTimeout) as info:
            pool.acquire(timeout=0.05)
        pool.release(held)
        text = rendered("api") + str(info.value) + caplog.text
        assert TOKEN not in text and AUTH_PW not in text


def test_mask_helpers() -> None:
    assert "s3cr3t" not in mask_text("postgresql://u:s3cr3t@h/db")
    assert "s3cr3t" not in mask_text("host=h password=s3cr3t user=u")
    assert "s3cr3t" not in mask_text("password='s3cr3t'")
    assert "abc" not in mask_text("Authorization: Bearer abc")
    assert "zzz-token" not in mask_text("anything zzz-token here", secrets=["zzz-token"])
    assert mask_url("https://u:p@host:8443/a/?token=x#f") == "https://u@host:8443/a/"


@pytest.mark.parametrize("text, secret", [
    ("access_token=AT-1&x=1", "AT-1"),
    ("client_secret: CS-1", "CS-1"),
    ("refresh_token=RT-1 user_password=UP-1", "RT-1"),
    ("refresh_token=RT-1 user_password=UP-1", "UP-1"),
    ("PGPASSWORD=PG-1 psql", "PG-1"),
    ("x-api-key: XK-1", "XK-1"),
    ("{'password': 'DP-1', 'user': 'u'}", "DP-1"),
    ('{"password": "JP-1", "user": "u"}', "JP-1"),
    ("{'auth': ('user', 'TP-1')}", "TP-1"),
    ("Max retries exceeded with url: /health?code=QS-1 (Caused by ...)", "QS-1"),
    ("https://h/v1/?sig=QS-2#frag", "QS-2"),
    ("host=h password='SP a b c' port=5", "SP a b c"),
])
def test_secret_names_anywhere_and_query_strings_are_masked(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked and "********" in masked, masked


def test_ordinary_text_is_left_alone() -> None:
    text = "Pool 'db': a client to postgresql://app@127.0.0.1:5432/app failed: timed out."
    assert mask_text(text) == text


def test_masking_hostile_text_takes_linear_time() -> None:
    import time

    for text in ("token" * 100_000 + "=x", "?" * 100_000 + "=", "x" * 500_000 + "://a:"):
        start = time.monotonic()
        mask_text(text, ["abcdef"])
        assert time.monotonic() - start < 2.0


def test_printable_escapes_what_could_forge_a_line() -> None:
    from pooled_clients.masking import printable

    assert printable("worker\n2026-01-01 WARNING forged") == "worker\\n2026-01-01 WARNING forged"
    assert printable("a\r\x1b[31m\u202e\u2028b\tc") == "a\\r\\x1b[31m\\u202e\\u2028b\\tc"
    assert printable("plain text, ünïcode") == "plain text, ünïcode"


def test_unquoted_password_with_spaces_never_shows_in_check_errors() -> None:
    from pooled_clients import conf

    with override_settings(POOLED_CLIENTS={"db": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": "host=127.0.0.1 password=first-half second-half user=app"},
    }}):
        problems = conf.validate_all()
    assert [p.id for p in problems] == ["pooled_clients.E011"]
    assert "half" not in problems[0].message, problems[0].message


def test_non_string_secret_options_of_a_custom_backend_are_collected() -> None:
    from pooled_clients.backends.base import ClientBackend

    class Vendor(ClientBackend[object]):
        secret_options = ("credentials",)

    backend = Vendor("vendor", {
        "credentials": {"user": "CU-1", "keys": ["CK-1", ("CK-2", b"CK-3")]},
        "config": {"nested": {"x-api-key": "XK-2", "deeper": [{"client_secret": 12345678}]}},
        "auth": ("someone", "AU-1"),
        "endpoint": "https://vendor.example/",
    })
    found = backend.secrets()
    for marker in ("CU-1", "CK-1", "CK-2", "CK-3", "XK-2", "12345678", "AU-1"):
        assert marker in found, (marker, found)
    assert "https://vendor.example/" not in found
