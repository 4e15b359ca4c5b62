"""``pools``: the handler of aliases, per process, rebuilt when settings change."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.test import override_settings

from pooled_clients import PoolDoesNotExist, pools
from pooled_clients.exceptions import PoolClosed

HTTP = {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": "http://127.0.0.1:9/"}}


def test_unknown_alias_raises_pool_does_not_exist() -> None:
    with override_settings(POOLED_CLIENTS={"a": HTTP}):
        with pytest.raises(PoolDoesNotExist, match="'nope'") as info:
            pools["nope"]
        assert isinstance(info.value, KeyError)
        assert "'a'" in str(info.value)


def test_mapping_protocol() -> None:
    with override_settings(POOLED_CLIENTS={"a": HTTP, "b": HTTP}):
        assert "a" in pools and "z" not in pools
        assert list(pools) == ["a", "b"]
        assert [p.alias for p in pools.all()] == ["a", "b"]
        assert set(pools.stats()) == {"a", "b"}
        assert pools["a"] is pools["a"]


def test_override_settings_rebuilds_and_retires_old_pool() -> None:
    with override_settings(POOLED_CLIENTS={"a": HTTP}):
        old = pools["a"]
        session = old.acquire()
        with override_settings(POOLED_CLIENTS={"a": {**HTTP, "MAX_SIZE": 3}}):
            new = pools["a"]
            assert new is not old and new.settings.max_size == 3
            with pytest.raises(PoolClosed):
                old.acquire()
        old.release(session)


def test_reload_retires_without_waiting() -> None:
    with override_settings(POOLED_CLIENTS={"a": HTTP}):
        old = pools["a"]
        held = old.acquire()
        pools.reload()
        assert pools["a"] is not old
        assert old.stats().state == "retired"
        old.release(held)
        assert old.stats().size == 0


def test_close_all_closes_every_pool() -> None:
    with override_settings(POOLED_CLIENTS={"a": HTTP, "b": HTTP}):
        a, b = pools["a"], pools["b"]
        a.release(a.acquire())
        pools.close_all(timeout=1)
        assert a.closed and b.closed
        assert pools["a"] is not a


def test_setup_with_many_pools_imports_no_client_library_and_opens_nothing() -> None:
    script = textwrap.dedent("""
        import sys, django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["pooled_clients"],
            POOLED_CLIENTS={f"p{i}": {
                "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
                "OPTIONS": {"conninfo": "postgresql://app:pw@127.0.0.1:9/app"},
                "MIN_SIZE": 2} for i in range(50)},
        )
        django.setup()
        import threading
        print("psycopg" in sys.modules, "requests" in sys.modules,
              threading.active_count())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "False", "1"]
