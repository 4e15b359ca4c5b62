"""Every setting, fed extreme and wrong-typed values: ``manage.py check`` reports an id and
never a traceback, and what it accepts works at run time against a real server.

One ``check`` run takes every case at once (each case is its own alias); then only the
accepted values of the settings that shape run-time behaviour get a real checkout, with
short timeouts, against the session's PostgreSQL cluster and HTTP upstream.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings

from devservers.http import UpstreamServer
from devservers.postgres import PostgresCluster
from pooled_clients import conf, maintenance, pools, shared_status
from pooled_clients.conf import POOL_KEYS, PROCESS_SETTINGS, validate_definition
from pooled_clients.health import PoolHealthCheck

PG = "pooled_clients.backends.postgres.PostgresBackend"
HTTP = "pooled_clients.backends.http.HTTPBackend"
AHTTP = "pooled_clients.backends.async_http.AsyncHTTPBackend"
TCP = "pooled_clients.backends.tcp.TCPBackend"

#: The same extremes for every key: huge, tiny, zero, negative, non-finite, wrong types.
EXTREMES: list[Any] = [
    10**400, 10**30, 2**63, 1e300, 1e-300, 0, 0.0, -1, -1e-9, math.nan, math.inf, -math.inf,
    True, False, "5", "", None, [1], (), {"a": 1}, {}, b"5",
]
#: Values that are never a number: refused wherever a number is expected.
NEVER_A_NUMBER: list[Any] = [10**400, math.nan, math.inf, -math.inf, True, "5", [1], {"a": 1}]

#: Documented bounds of the numeric backend options: the bounds themselves are accepted
#: (and get a real checkout), just beyond them is refused.
OPTION_BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    (PG, "prepare_threshold"): (0, 1_000_000),
    (PG, "keepalives_idle"): (1, 32767),
    (PG, "tcp_user_timeout"): (0, 86_400_000),
    (PG, "connect_timeout"): (0, 86400),
    (HTTP, "timeout"): (0.1, 86400),
    (HTTP, "retries"): (0, 100),
    (HTTP, "backoff_factor"): (0, 60),
    (AHTTP, "timeout"): (0.1, 86400),
    (AHTTP, "retries"): (0, 100),
    (AHTTP, "backoff_factor"): (0, 60),
    (TCP, "timeout"): (0.1, 86400),
}
LIBPQ_INTEGERS = ("keepalives_idle", "tcp_user_timeout", "connect_timeout")
#: Options that name the target or something outside the process (a host, a file, a
#: service, a server-side permission): the fuzz only checks them, since a valid port may
#: have nothing listening on it. Every other accepted option value gets a real checkout.
CHECK_ONLY = {"conninfo", "host", "hostaddr", "port", "dbname", "user", "password", "service",
              "passfile", "options", "replication", "row_factory", "cursor_factory", "context",
              "base_url", "verify", "cert", "auth", "health_path", "tls"}
_HTTP_OPTIONS = ["base_url", "timeout", "retries", "backoff_factor", "status_forcelist",
                 "allowed_methods", "headers", "auth", "verify", "cert", "health_path"]
#: Every option of every built-in backend (every libpq keyword for PostgreSQL).
OPTIONS_FUZZED: dict[str, list[str]] = {
    PG: sorted({o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()}
               | {"conninfo", "autocommit", "prepare_threshold", "row_factory",
                  "cursor_factory", "context"}),
    HTTP: _HTTP_OPTIONS,
    AHTTP: _HTTP_OPTIONS,
    TCP: ["host", "port", "tls", "keepalive", "timeout"],
}


def _values_for(minimum: float | None = None, maximum: float | None = None) -> list[Any]:
    values = list(EXTREMES)
    if minimum is not None and maximum is not None:
        values += [minimum, maximum, maximum * 1.5 + 1]
        if minimum > 0:
            values.append(minimum / 2)
    return values


def _good_options(backend: str, postgres: PostgresCluster, upstream: UpstreamServer
                  ) -> dict[str, Any]:
    if backend == PG:
        return {"conninfo": postgres.conninfo("app"), "autocommit": True}
    if backend in (HTTP, AHTTP):
        return {"base_url": upstream.url, "health_path": "health"}
    return {"host": "127.0.0.1", "port": upstream.port}


#: Short bounds so that a value that does not work fails fast instead of waiting.
QUICK = {"TIMEOUT": 3.0, "CONNECT_TIMEOUT": 2.0, "CONNECT_RETRIES": 0}


class Case:
    """One definition with one fuzzed value, and whether it deserves a real checkout."""

    def __init__(self, alias: str, definition: dict[str, Any], run: bool,
                 must_refuse: bool) -> None:
        self.alias, self.definition, self.run, self.must_refuse = (
            alias, definition, run, must_refuse)


def _cases(postgres: PostgresCluster, upstream: UpstreamServer) -> list[Case]:
    base = {"BACKEND": HTTP, "OPTIONS": _good_options(HTTP, postgres, upstream), **QUICK}
    cases = []
    for key in POOL_KEYS:
        numeric = key.kind in ("int", "float")
        values = _values_for(key.minimum, key.maximum) if numeric else _values_for()
        for i, value in enumerate(values):
            must_refuse = numeric and any(value is v for v in NEVER_A_NUMBER)
            cases.append(Case(f"{key.name}#{i}", {**base, key.name: value}, True, must_refuse))
    for name, key in conf._HEALTH_KEYS.items():
        values = _values_for(key.minimum, key.maximum) if key.kind == "float" else _values_for()
        for i, value in enumerate(values):
            cases.append(Case(f"HEALTH.{name}#{i}", {**base, "HEALTH": {name: value}}, True,
                              key.kind == "float" and any(value is v for v in NEVER_A_NUMBER)))
    for name, key in conf._KEYS_KEYS.items():
        numeric = key.kind in ("int", "float")
        values = _values_for(key.minimum, key.maximum) if numeric else _values_for()
        for i, value in enumerate(values):
            cases.append(Case(f"KEYS.{name}#{i}", {**base, "KEYS": {name: value}}, True,
                              numeric and any(value is v for v in NEVER_A_NUMBER)))
    for name in sorted(conf.ENDPOINT_KEYS):
        key = conf._KEYS_BY_NAME[name]
        numeric = key.kind == "int"
        values = _values_for(key.minimum, key.maximum) if numeric else _values_for()
        for i, value in enumerate(values):
            cases.append(Case(f"ENDPOINTS.{name}#{i}",
                              {**base, "ENDPOINTS": {"a": {name: value}}}, True,
                              numeric and any(value is v for v in NEVER_A_NUMBER)))
    for backend, options in OPTIONS_FUZZED.items():
        good = _good_options(backend, postgres, upstream)
        for name in options:
            runnable = name not in CHECK_ONLY
            bounds = OPTION_BOUNDS.get((backend, name))
            values = _values_for(*bounds) if bounds else _values_for()
            for i, value in enumerate(values):
                short = backend.rsplit(".", 1)[-1]
                # libpq takes its integers as strings too: "5" is fine there.
                never = [v for v in NEVER_A_NUMBER
                         if not (backend == PG and name in LIBPQ_INTEGERS and v == "5")]
                cases.append(Case(
                    f"{short}.{name}#{i}",
                    {"BACKEND": backend, "OPTIONS": {**good, name: value}, **QUICK},
                    runnable, bounds is not None and any(value is v for v in never)))
    return cases


@pytest.fixture(scope="module")
def fuzz_cases(postgres: PostgresCluster, upstream: UpstreamServer) -> list[Case]:
    return _cases(postgres, upstream)


@pytest.fixture
def fuzzed_settings(fuzz_cases: list[Case]) -> Iterator[dict[str, Any]]:
    definitions = {case.alias: case.definition for case in fuzz_cases}
    with override_settings(POOLED_CLIENTS=definitions):
        try:
            yield definitions
        finally:
            pools.close_all(timeout=1.0)


_ID = re.compile(r"^pooled_clients\.[EW]\d{3}$")


def test_one_check_run_reports_every_bad_value_with_an_id(
        fuzz_cases: list[Case], fuzzed_settings: dict[str, Any]) -> None:
    with pytest.raises(SystemCheckError) as info:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    report = str(info.value)
    messages = run_checks(tags=["pooled_clients"])
    assert all(_ID.match(str(m.id)) for m in messages)
    refused = set()
    for case in fuzz_cases:
        errors = [p for p in validate_definition(case.alias, case.definition) if p.is_error]
        if errors:
            refused.add(case.alias)
            assert all(f"POOLED_CLIENTS[{case.alias!r}]" in p.message for p in errors), errors
            assert f"POOLED_CLIENTS[{case.alias!r}]" in report
        if case.must_refuse:
            assert errors, f"{case.alias} = {case.definition} was accepted"
    # Far more cases are refused than accepted, and both kinds exist.
    assert len(refused) > len(fuzz_cases) // 2
    assert len(refused) < len(fuzz_cases)


def test_every_accepted_value_works_at_run_time(
        fuzz_cases: list[Case], fuzzed_settings: dict[str, Any]) -> None:
    accepted = [case for case in fuzz_cases if case.run and not any(
        p.is_error for p in validate_definition(case.alias, case.definition))]
    assert len(accepted) > 50
    failures = []
    for case in accepted:
        start = time.monotonic()
        try:
            _use(case)
        except Exception as exc:
            failures.append(f"{case.alias} = {case.definition}: {type(exc).__name__}: {exc}")
            continue
        timeout = case.definition.get("TIMEOUT", QUICK["TIMEOUT"])
        elapsed = time.monotonic() - start
        if elapsed > timeout + 2.0:
            failures.append(f"{case.alias}: took {elapsed:.1f}s")
        pools[case.alias].close(timeout=0)
    assert not failures, "\n".join(failures)


def _use(case: Case) -> None:
    """Check out a client of ``case``'s pool and do one real round trip with it."""
    pool = pools[case.alias]
    backend = case.definition["BACKEND"]
    if backend == AHTTP:
        async def main() -> None:
            async with pool.aconnection() as client:
                assert (await client.get("health")).status_code == 200

        asyncio.run(main())
        return
    # A keyed pool's client is the one of a key: here, the pool's own base URL again.
    keyed = {"key": "./"} if case.definition.get("KEYS") is not None else {}
    with pool.connection(**keyed) as client:
        if backend == PG:
            assert client.execute("select 1").fetchone() == (1,)
        elif backend == TCP:
            client.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            client.settimeout(3.0)
            # Read to the end (HTTP/1.0: the server closes), so no unread reply resets it.
            reply = b""
            while chunk := client.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.") and b'"ok": true' in reply
        else:
            assert client.get("health").status_code == 200
    if "HEALTH" in case.definition:
        PoolHealthCheck(alias=case.alias).run()


@pytest.mark.parametrize("setting", PROCESS_SETTINGS, ids=lambda s: s.name)
def test_process_settings_are_checked_and_what_is_accepted_works(
        setting: conf.ProcessSetting, upstream: UpstreamServer) -> None:
    values = _values_for(setting.minimum, setting.maximum) if setting.kind == "float" else [
        *_values_for(), "database", "redis", {"CACHE": "default"}, {"CACHE": "nope"},
        {"CACHE": 5}, {"CACH": "default"}]
    pool = {"api": {"BACKEND": HTTP, "OPTIONS": {"base_url": upstream.url}, **QUICK}}
    for value in values:
        with override_settings(POOLED_CLIENTS=pool, **{setting.name: value}):
            messages = run_checks(tags=["pooled_clients"])
            errors = [m for m in messages if m.is_serious()]
            assert all(_ID.match(str(m.id)) for m in messages)
            assert all(setting.name in m.msg for m in errors), errors
            if setting.kind == "float" and any(value is v for v in NEVER_A_NUMBER):
                assert errors, f"{setting.name} = {value!r} was accepted"
            if not errors:
                _use_process_setting(setting, value)


def _use_process_setting(setting: conf.ProcessSetting, value: Any) -> None:
    name = setting.name
    if name == "POOLED_CLIENTS_SHUTDOWN_TIMEOUT":
        with pools["api"].connection():
            pass
        start = time.monotonic()
        pools.close_all()  # nothing in use: returns at once, whatever the grace period
        assert time.monotonic() - start < 2.0
    elif name in ("POOLED_CLIENTS_SHARED_STATUS_INTERVAL", "POOLED_CLIENTS_METRICS_INTERVAL"):
        ran = threading.Event()
        maintenance.add_periodic("fuzz", float(value), ran.set)
        try:
            if value <= 1.0:
                assert ran.wait(5.0), f"{name} = {value!r}: the job never ran"
        finally:
            maintenance.remove_periodic("fuzz")
    elif name == "POOLED_CLIENTS_SHARED_STATUS" and value is not None and value != "database":
        shared_status.publish()
        try:
            assert os.getpid() in [w["pid"] for w in shared_status.read()]
        finally:
            shared_status._withdraw_cache(value["CACHE"], shared_status.host_id(), os.getpid())
    elif name == "POOLED_CLIENTS_SHARED_STATUS_MAX_AGE":
        assert shared_status._max_age() == float(value)


# --------------------------------------------------------------------------- surfaces


BAD = {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://[::1/"}}


@pytest.fixture
def bad_beside_good(upstream: UpstreamServer) -> Iterator[None]:
    definitions = {"bad": BAD,
                   "good": {"BACKEND": HTTP, "OPTIONS": {"base_url": upstream.url}, **QUICK}}
    with override_settings(POOLED_CLIENTS=definitions, ROOT_URLCONF="tests.import_time_urls"):
        import importlib
        import sys

        from django.urls import clear_url_caches

        # The URLconf calls pool_checks() when imported: import it under these settings.
        sys.modules.pop("tests.import_time_urls", None)
        importlib.import_module("tests.import_time_urls")
        clear_url_caches()
        try:
            yield
        finally:
            sys.modules.pop("tests.import_time_urls", None)
            clear_url_caches()
            pools.close_all(timeout=1.0)


def test_a_misconfigured_pool_does_not_take_the_urlconf_or_health_down(
        bad_beside_good: None, client: Any) -> None:
    from tests import import_time_urls

    assert [kwargs["alias"] for _, kwargs in import_time_urls.CHECKS] == ["bad", "good"]
    response = client.get("/health/?format=json")
    assert response.status_code == 500
    body = response.json()
    assert body["Pool good"] == "OK"
    assert "misconfigured" in body["Pool bad"]


@pytest.mark.django_db
def test_the_admin_page_shows_the_misconfigured_pool_beside_the_good_one(
        bad_beside_good: None, admin_client: Any) -> None:
    url = "/admin/pooled_clients/poolstatus/"
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-alias="good"' in html and 'data-alias="bad"' in html
    assert "misconfigured" in html and "pooled_clients.E011" in html
    data = admin_client.get(url, {"format": "json"}).json()
    assert [p["alias"] for p in data["pools"]] == ["good"]
    (bad,) = data["misconfigured"]
    assert bad["alias"] == "bad" and "'base_url'" in bad["problem"]


def test_commands_show_the_misconfigured_pool_and_carry_on(bad_beside_good: None) -> None:
    out = StringIO()
    call_command("pool_status", stdout=out)
    text = out.getvalue()
    assert re.search(r"^good\s+\S+", text, re.MULTILINE), text
    assert "bad: MISCONFIGURED, not built: POOLED_CLIENTS['bad']['OPTIONS']" in text
    out = StringIO()
    with pytest.raises(CommandError) as error:
        call_command("pool_check", stdout=out, stderr=StringIO())
    assert error.value.returncode == 1
    text = out.getvalue()
    assert "good: OK" in text
    assert "bad: FAILED: misconfigured: POOLED_CLIENTS['bad']['OPTIONS']" in text
    assert "(pooled_clients.E011)" in text


def test_only_the_bad_alias_raises(bad_beside_good: None) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings():
        [check_message] = [m.msg for m in run_checks(tags=["pooled_clients"])
                           if "'bad'" in m.msg]
    with pytest.raises(ImproperlyConfigured) as info:
        pools["bad"]
    assert check_message in str(info.value)
    with pools["good"].connection() as session:
        assert session.get("health").status_code == 200
