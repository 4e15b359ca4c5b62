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
        "OPTIONS": {"base_url": f"http://user:{AUTH_PW}@127.0.0.1:{upstream.port}/",
                    "health_path": f"health?key={TOKEN}",
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
