"""Every system-check id is triggered by a test, through ``manage.py check``'s machinery."""

from __future__ import annotations

import sys
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
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
    """The ids every check of the app reports, as ``manage.py check`` runs them."""
    with override_settings(POOLED_CLIENTS=pool_settings, **extra):
        return [str(message.id) for message in run_checks(tags=["pooled_clients"])]


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
    ("pooled_clients.E017", {"x": {**GOOD_HTTP, "KEYS": {"MAX": 10},
                                   "ENDPOINTS": {"a": {}}}}, {}),
    ("pooled_clients.E017", {"x": {**GOOD_HTTP, "KEYS": {"MAXIMUM": 10}}}, {}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHUTDOWN_TIMEOUT": -1}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHUTDOWN_TIMEUOT": 1}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_SHARED_STATUS": "redis"}),
    ("pooled_clients.E020", {}, {"POOLED_CLIENTS_METRICS_INTERVAL": float("nan")}),
    ("pooled_clients.E021", {}, {"POOLED_CLIENTS_SHARED_STATUS": {"CACHE": "nope"}}),
    ("pooled_clients.E022", {}, {"POOLED_CLIENTS_SHARED_STATUS_INTERVAL": 10.0,
                                 "POOLED_CLIENTS_SHARED_STATUS_MAX_AGE": 10.0}),
    ("pooled_clients.W001", {"x": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "postgresql://app:s3cret@db/app"}}}, {}),
    ("pooled_clients.W002", {}, {"POOLED_CLIENTS_SHARED_STATUS": {"CACHE": "default"}}),
    ("pooled_clients.W003", {}, {"INSTALLED_APPS": [
        app for app in settings.INSTALLED_APPS if app != "health_check"]}),
]


@pytest.mark.parametrize(("expected", "pool_settings", "extra"), CASES)
def test_each_error_id_is_reported(expected: str, pool_settings: Any,
                                   extra: dict[str, Any]) -> None:
    assert expected in ids_for(pool_settings, **extra)


def test_opentelemetry_on_without_the_package_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as it does where the package is missing.
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    assert ids_for({}, POOLED_CLIENTS_OPENTELEMETRY=True) == ["pooled_clients.E023"]
    monkeypatch.undo()
    assert ids_for({}, POOLED_CLIENTS_OPENTELEMETRY=True) == []


def test_every_documented_id_has_a_case() -> None:
    # E023 (a missing package) has its own test above.
    tested = {case[0] for case in CASES} | {"pooled_clients.E023"}
    assert set(conf.ERROR_IDS) <= tested


def test_valid_settings_have_no_errors() -> None:
    assert ids_for({"api": GOOD_HTTP, "db": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "postgresql://app@127.0.0.1/app", "autocommit": True}}}) == []


def test_messages_name_alias_key_and_expectation() -> None:
    (message,) = messages_for({"payments": {**GOOD_HTTP, "MAX_SIZ": 3}})
    assert "'payments'" in message and "'MAX_SIZ'" in message
    assert "Did you mean 'MAX_SIZE'" in message
    (message,) = messages_for({"payments": {**GOOD_HTTP, "TIMEOUT": -1}})
    assert "['TIMEOUT']" in message and "from 0.1 to 86400" in message
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


def test_one_run_reports_every_problem_of_a_pool_with_its_id_and_suggestion() -> None:
    """An unknown key no longer hides OPTIONS errors: all three come out of one run."""
    definition = {"BACKEND": HTTP, "MAX_SIZ": 3, "OPTIONS": {
        "baseurl": "http://127.0.0.1:9/", "base_url": "http://127.0.0.1:9/", "timeout": -1}}
    with (override_settings(POOLED_CLIENTS={"payments": definition}),
          pytest.raises(SystemCheckError) as info):
        call_command("check", stdout=StringIO(), stderr=StringIO())
    text = str(info.value)
    assert "(pooled_clients.E003) POOLED_CLIENTS['payments'] has unknown key 'MAX_SIZ'" in text
    assert "Did you mean 'MAX_SIZE'?" in text
    assert ("(pooled_clients.E011) POOLED_CLIENTS['payments']['OPTIONS']: unknown option "
            "'baseurl'") in text
    assert "Did you mean 'base_url'?" in text
    assert ("(pooled_clients.E011) POOLED_CLIENTS['payments']['OPTIONS']: 'timeout' is -1; "
            "expected a number of seconds from 0.1 to 86400 or None.") in text


def test_every_pool_is_reported_in_the_same_run() -> None:
    ids = ids_for({"a": {**GOOD_HTTP, "MAX_SIZE": 0},
                   "b": {"BACKEND": PG, "OPTIONS": {"hots": "db"}},
                   "c": {"BACKEND": "no.such.Backend"}})
    assert sorted(ids) == ["pooled_clients.E005", "pooled_clients.E008", "pooled_clients.E011"]


@pytest.mark.parametrize(("name", "known", "hint"), [
    ("MAX_SIZ", "pool", "Did you mean 'MAX_SIZE'?"),
    ("max_size", "pool", "Did you mean 'MAX_SIZE'?"),
    ("baseurl", "http", "Did you mean 'base_url'?"),
    ("header", "http", "Did you mean 'headers'?"),
    ("dbnmae", "pg", "Did you mean 'dbname'?"),
    ("pasword", "pg", "Did you mean 'password'?"),
])
def test_misspelled_keys_get_a_suggestion(name: str, known: str, hint: str) -> None:
    if known == "pool":
        definition: dict[str, Any] = {**GOOD_HTTP, name: 1}
    elif known == "http":
        definition = {"BACKEND": HTTP, "OPTIONS": {**GOOD_HTTP["OPTIONS"], name: {}}}
    else:
        definition = {"BACKEND": PG, "OPTIONS": {name: "x"}}
    (message,) = messages_for({"x": definition})
    assert hint in message, message


@pytest.mark.parametrize("name", ["LOCATION", "NAME", "KEY_PREFIX", "IDLE_TIMEOUT"])
def test_unrelated_keys_get_no_nonsense_suggestion(name: str) -> None:
    (message,) = messages_for({"x": {**GOOD_HTTP, name: 1}})
    assert "Did you mean" not in message, message


def test_a_lower_case_pool_key_is_pointed_to_options() -> None:
    (message,) = messages_for({"x": {**GOOD_HTTP, "verify": False}})
    assert "Backend options belong in OPTIONS" in message


def test_every_bad_conninfo_option_is_reported_without_a_blank_line() -> None:
    messages = messages_for({"x": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "host=db foo=1 bar=2", "hots": "db", "sslmode": "sometimes"}}})
    text = "\n".join(messages)
    for name in ("'foo'", "'bar'", "'hots'"):
        assert name in text
    assert all(m == m.strip() and "\n" not in m for m in messages), messages
    messages = messages_for({"x": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "host=db port=99999 sslmode=sometimes keepalives_idle=-1"}}})
    assert len(messages) == 3, messages


def test_a_conninfo_syntax_error_does_not_quote_the_password() -> None:
    messages = messages_for({"x": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "host=db password=halfOf sEcReT99"}}})
    assert any("psycopg rejects" in m for m in messages), messages
    assert all("sEcReT99" not in m and "halfOf" not in m for m in messages), messages


@pytest.mark.parametrize("definition", [
    {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://[::1/"}},
    {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://h:abc/"}},
    {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://h:99999/"}},
    {**GOOD_HTTP, "TIMEOUT": 10**400},
    {**GOOD_HTTP, "MAX_SIZE": 10**5000},
    {**GOOD_HTTP, "TIMEOUT": float("inf")},
    {"BACKEND": "tests.backend_raising_on_import.Backend"},
    {"BACKEND": "tests.backend_exiting_on_import.Backend"},
    {"BACKEND": PG, "OPTIONS": {"port": 10**400}},
    {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
     "OPTIONS": {"host": "h", "port": 10**400, "timeout": float("nan")}},
    {**GOOD_HTTP, "ENDPOINTS": {"a": {"MAX_SIZE": 10**400, "OPTIONS": []}}},
])
def test_manage_py_check_reports_instead_of_raising(definition: dict[str, Any]) -> None:
    with (override_settings(POOLED_CLIENTS={"bad": definition}),
          pytest.raises(SystemCheckError, match=r"pooled_clients\.E0\d\d.*'bad'")):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_a_backend_module_that_raises_on_import_is_e005() -> None:
    (message,) = messages_for({"x": {"BACKEND": "tests.backend_raising_on_import.Backend"}})
    assert "cannot be imported: RuntimeError: this module refuses to load" in message


def test_a_query_string_in_base_url_is_refused() -> None:
    messages = messages_for({"x": {"BACKEND": HTTP, "OPTIONS": {
        "base_url": "http://127.0.0.1:9/v1/?version=2"}}})
    assert any("query string" in m and "would drop" in m for m in messages), messages


@pytest.mark.parametrize(("options", "fires"), [
    ({"conninfo": "postgresql://app:s3cret@db/app"}, True),
    ({"conninfo": "host=db user=app password=s3cret"}, True),
    ({"conninfo": "postgresql://app@db/app?password=s3cret"}, True),
    ({"conninfo": "postgresql://app@db/app", "password": "s3cret"}, False),
    ({"conninfo": "postgresql://app@db/app", "password": lambda: "s3cret"}, False),
    ({"conninfo": lambda: "postgresql://app:s3cret@db/app"}, False),
    ({"conninfo": "host=db passfile=/etc/pgpass sslkey=/k"}, False),
])
def test_w001_flags_a_password_written_in_a_connection_string(options: dict[str, Any],
                                                               fires: bool) -> None:
    with override_settings(POOLED_CLIENTS={"db": {"BACKEND": PG, "OPTIONS": options}}):
        found = [m for m in check_settings() if m.id == "pooled_clients.W001"]
    assert bool(found) is fires, found
    assert all("s3cret" not in m.msg for m in found)


@pytest.mark.parametrize(("options", "fires"), [
    ({"base_url": "https://app:s3cret@api.example/"}, True),
    ({"base_url": "https://api.example/?api_key=s3cret"}, True),
    ({"base_url": "https://api.example/", "health_path": "health?token=s3cret"}, True),
    ({"base_url": "https://api.example/", "headers": {"Authorization": "Bearer s3cret"}}, False),
    ({"base_url": "https://api.example/", "auth": ("app", "s3cret")}, False),
    ({"base_url": "https://api.example/", "health_path": "health?verbose=1"}, False),
])
def test_w001_flags_a_secret_written_in_a_url(options: dict[str, Any], fires: bool) -> None:
    with override_settings(POOLED_CLIENTS={"payments": {"BACKEND": HTTP, "OPTIONS": options}}):
        found = [m for m in check_settings() if m.id == "pooled_clients.W001"]
    assert bool(found) is fires, found
    assert all("s3cret" not in m.msg and "DEBUG" in m.msg for m in found)


def test_w001_stays_quiet_where_the_debug_page_masks_the_whole_pool() -> None:
    # Django's debug page masks every setting whose name contains API, TOKEN, PASS...
    definition = {"BACKEND": PG, "OPTIONS": {"conninfo": "postgresql://app:s3cret@db/app"}}
    assert "pooled_clients.W001" not in ids_for({"billing_api": definition})


def test_a_dict_that_contains_itself_is_reported_not_looped_over() -> None:
    options: dict[str, Any] = {"base_url": "http://127.0.0.1:9/"}
    options["headers"] = {"nested": options}
    assert "pooled_clients.E011" in ids_for({"x": {"BACKEND": HTTP, "OPTIONS": options}})


def test_w001_is_a_warning_and_the_pool_still_builds() -> None:
    definition = {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://app:s3cret@127.0.0.1:9/"}}
    with override_settings(POOLED_CLIENTS={"payments": definition}):
        err = StringIO()
        call_command("check", stdout=StringIO(), stderr=err)
        assert "pooled_clients.W001" in err.getvalue() and "s3cret" not in err.getvalue()
        assert pools["payments"].alias == "payments"


def test_callable_options_are_accepted_as_provided_at_creation() -> None:
    assert ids_for({"db": {"BACKEND": PG, "OPTIONS": {
        "conninfo": "postgresql://app@127.0.0.1/app", "password": lambda: "s3cret",
        "port": lambda: 5432}},
        "api": {"BACKEND": HTTP, "OPTIONS": {
            "base_url": lambda: "http://127.0.0.1:9/", "headers": lambda: {}}},
        "tcp": {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
                "OPTIONS": {"host": lambda: "127.0.0.1", "port": lambda: 9}}}) == []


def test_the_first_pool_built_without_the_app_installed_says_so() -> None:
    installed = [app for app in settings.INSTALLED_APPS if app != "pooled_clients"]
    with (override_settings(INSTALLED_APPS=installed, POOLED_CLIENTS={"x": GOOD_HTTP}),
          pytest.raises(ImproperlyConfigured, match='"pooled_clients" is not in INSTALLED_APPS')):
        pools["x"]


def test_a_backend_that_fails_to_build_is_improperly_configured_for_its_alias_only() -> None:
    with override_settings(POOLED_CLIENTS={
            "bad": {"BACKEND": "tests.broken_backend.RefusingBackend"}, "good": GOOD_HTTP}):
        with pytest.raises(ImproperlyConfigured, match=r"POOLED_CLIENTS\['bad'\].*ValueError"):
            pools["bad"]
        assert pools["good"].alias == "good"
