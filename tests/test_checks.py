"""Every system-check id is triggered by a test, through ``manage.py check``'s machinery."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from pooled_clients import conf, pools
from pooled_clients.checks import check_settings

PG = "pooled_clients.backends.postgres.PostgresBackend"
HTTP = "pooled_clients.backends.http.HTTPBackend"
GOOD_HTTP = {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://127.0.0.1:9/"}}


def ids_for(pool_settings: Any, **extra: Any) -> list[str]:
    with override_settings(POOLED_CLIENTS=pool_settings, **extra):
        return [message.id for message in check_settings()]


def messages_for(pool_settings: Any) -> list[str]:
    with override_settings(POOLED_CLIENTS=pool_settings):
        return [message.msg for message in check_settings()]


CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("pooled_clients.E001", ["not", "a", "dict"], {}),
    ("pooled_clients.E002", {"": GOOD_HTTP}, {}),
    ("pooled_clients.E002", {"x": "not a dict"}, {}),
    ("pooled_clients.E003", {"x": {**GOOD_HTTP, "MAX_SIZ": 3}}, {}),
    ("pooled_clients.E004", {"x": {"OPTIONS": {}}}, {}),
    ("pooled_clients.E005", {"x": {"BACKEND": "no.such.module.Backend"}}, {}),
    ("pooled_clients.E006", {"x": {"BACKEND": "collections.OrderedDict"}}, {}),
    ("pooled_clients.E007", {"x": {**GOOD_HTTP, "MAX_SIZE": "10"}}, {}),
    ("pooled_clients.E007", {"x": {**GOOD_HTTP, "TIMEOUT": None}}, {}),
    ("pooled_clients.E008", {"x": {**GOOD_HTTP, "TIMEOUT": -1}}, {}),
    ("pooled_clients.E008", {"x": {**GOOD_HTTP, "MAX_SIZE": 0}}, {}),
    ("pooled_clients.E009", {"x": {**GOOD_HTTP, "CHECK": "sometimes"}}, {}),
    ("pooled_clients.E010", {"x": {**GOOD_HTTP, "MIN_SIZE": 5, "MAX_SIZE": 2}}, {}),
    ("pooled_clients.E011", {"x": {"BACKEND": HTTP, "OPTIONS": {"base_url": 3}}}, {}),
    ("pooled_clients.E011", {"x": {"BACKEND": PG, "OPTIONS": {"no_such_option": 1}}}, {}),
    ("pooled_clients.E012", {"x": {**GOOD_HTTP, "HEALTH": {"TIMOUT": 1}}}, {}),
    ("pooled_clients.E012", {"x": {**GOOD_HTTP, "HEALTH": {"TIMEOUT": 0}}}, {}),
    ("pooled_clients.E013", {"x": {**GOOD_HTTP, "ENDPOINTS": {}}}, {}),
    ("pooled_clients.E013", {"x": {**GOOD_HTTP, "ENDPOINTS": ["a"]}}, {}),
    ("pooled_clients.E014", {"x": {**GOOD_HTTP, "ENDPOINTS": {"a": {"OPTONS": {}}}}}, {}),
    ("pooled_clients.E015", {"x": {**GOOD_HTTP, "ROUTING": "round_robin"}}, {}),
    ("pooled_clients.E016", {"x": {"BACKEND": "pooled_clients.backends.postgres."
                                   "AsyncPostgresBackend", "OPTIONS": {},
                                   "ENDPOINTS": {"a": {}, "b": {}}}}, {}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHUTDOWN_TIMEOUT": -1}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHUTDOWN_TIMEUOT": 1}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHARED_STATUS": "redis"}),
]


@pytest.mark.parametrize(("expected", "pool_settings", "extra"), CASES)
def test_each_error_id_is_reported(expected: str, pool_settings: Any,
                                   extra: dict[str, Any]) -> None:
    assert expected in ids_for(pool_settings, **extra)


def test_every_documented_id_has_a_case() -> None:
    tested = {case[0] for case in CASES}
    assert set(conf.ERROR_IDS) <= tested


def test_valid_settings_have_no_errors() -> None:
    assert ids_for({"api": GOOD_HTTP, "db": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "postgresql://app@127.0.0.1/app", "autocommit": True}}}) == []


def test_messages_name_alias_key_and_expectation() -> None:
    (message,) = messages_for({"payments": {**GOOD_HTTP, "MAX_SIZ": 3}})
    assert "'payments'" in message and "'MAX_SIZ'" in message
    assert "Did you mean 'MAX_SIZE'" in message
    (message,) = messages_for({"payments": {**GOOD_HTTP, "TIMEOUT": -1}})
    assert "['TIMEOUT']" in message and "> 0" in message
    (message,) = messages_for({"payments": {**GOOD_HTTP, "MIN_SIZE": 5, "MAX_SIZE": 2}})
    assert "MIN_SIZE 5" in message and "MAX_SIZE 2" in message


def test_manage_py_check_reports_errors() -> None:
    with (override_settings(POOLED_CLIENTS={"x": {**GOOD_HTTP, "CHECK": "maybe"}}),
          pytest.raises(SystemCheckError, match=r"pooled_clients\.E009")):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_building_a_bad_pool_raises_improperly_configured_with_same_message() -> None:
    with override_settings(POOLED_CLIENTS={"x": {**GOOD_HTTP, "CHECK": "maybe"}}):
        (message,) = [m.msg for m in check_settings()]
        with pytest.raises(ImproperlyConfigured) as info:
            pools["x"]
        assert message in str(info.value)


def test_password_in_rejected_options_is_not_shown() -> None:
    messages = messages_for({"x": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "postgresql://app:TopSecret99@db/app", "bogus": 1}}})
    assert messages and all("TopSecret99" not in m for m in messages)
