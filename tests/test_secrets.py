"""Secrets in conninfo, headers and auth never show in str(pool), stats, errors or logs."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import requests
from django.test import Client, override_settings

from devservers.hostile import HostileServer
from devservers.http import UpstreamServer
from devservers.ports import free_port
from devservers.postgres import PostgresCluster
from pooled_clients import pools
from pooled_clients.backends.base import ClientBackend
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


@pytest.mark.parametrize("text", [
    "Pool 'db': a client to postgresql://app@127.0.0.1:5432/app failed: timed out.",
    "KeyError: 'warehouse'",
    "AuthenticationError: the server refused the login",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
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
    # E011 for the bad conninfo; W001 for a password written inside it.
    assert sorted(p.id for p in problems) == ["pooled_clients.E011", "pooled_clients.W001"]
    assert "half" not in problems[0].message, problems[0].message


def test_non_string_secret_options_of_a_custom_backend_are_collected() -> None:
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


# --------------------------------------------------------------------------- every surface

class VendorBackend(ClientBackend[requests.Session]):
    """A custom backend with secrets in names of every shape and in nested options; its
    create() sends them all to ``endpoint`` (a hostile server that echoes them back)."""

    secret_options = ("credentials",)

    def create(self) -> requests.Session:
        o = self.options
        session = requests.Session()
        session.get(o["endpoint"], timeout=self.connect_timeout, auth=tuple(o["auth"]), headers={
            "X-Access-Token": o["access_token"], "X-Client-Secret": o["client_secret"],
            "X-Refresh": o["refresh_token"], "X-Password": o["user_password"],
            "X-PG": o["PGPASSWORD"], "X-Api-Key": o["x-api-key"],
            "X-Nested": o["credentials"]["login"]["password"],
            "X-Nested-Token": o["credentials"]["token"][1],
            "X-Deep": o["api"]["settings"]["signing_secret"],
            "X-Number": str(o["api"]["pin_secret"]),
        })
        return session

    def describe(self) -> str:
        return mask_url(self.options["endpoint"])


MARKERS = {
    "pg URL password": "MKpgurl71", "pg keyword password (1)": "MKpgkwA72",
    "pg keyword password (2)": "MKpgkwB73", "pg OPTIONS password": "MKpgopt74",
    "HTTP base_url password": "MKburl75", "HTTP base_url query": "MKbq76",
    "HTTP Authorization header": "MKhdr77", "HTTP x-api-key header": "MKxak78",
    "HTTP auth tuple": "MKauth79", "HTTP health_path query": "MKhq80",
    "async base_url password": "MKaburl81", "async header": "MKahdr82",
    "async health_path query": "MKahq83",
    "vendor endpoint query": "MKvqs84", "vendor access_token": "MKvat85",
    "vendor client_secret": "MKvcs86", "vendor refresh_token": "MKvrt87",
    "vendor user_password": "MKvup88", "vendor PGPASSWORD": "MKvpg89",
    "vendor x-api-key": "MKvxak90", "vendor nested password": "MKvnp91",
    "vendor nested token tuple": "MKvnt92", "vendor deep secret": "MKvdeep93",
    "vendor number": "9458812094", "vendor auth tuple": "MKvauth95",
    "E011 password (1)": "MKbadA96", "E011 password (2)": "MKbadB97",
    "pg callable password": "MKpgcall98", "HTTP callable token": "MKhcall99",
}


def _pools(pg: HostileServer, http: HostileServer) -> dict[str, Any]:
    m = MARKERS
    fast = {"CONNECT_RETRIES": 0, "TIMEOUT": 3.0, "HEALTH": {"TIMEOUT": 3.0}}
    pg_backend = "pooled_clients.backends.postgres.PostgresBackend"
    http_base = f"127.0.0.1:{http.port}"
    return {
        "pg_url": {"BACKEND": pg_backend, **fast, "OPTIONS": {
            "conninfo": f"postgresql://app:{m['pg URL password']}@127.0.0.1:{pg.port}/app"}},
        "pg_kw": {"BACKEND": pg_backend, **fast, "OPTIONS": {
            "conninfo": f"host=127.0.0.1 port={pg.port} user=app dbname=app password="
                        f"'{m['pg keyword password (1)']} {m['pg keyword password (2)']}'"}},
        "pg_opt": {"BACKEND": pg_backend, **fast, "OPTIONS": {
            "host": "127.0.0.1", "port": pg.port, "user": "app", "dbname": "app",
            "password": m["pg OPTIONS password"]}},
        # What a callable returns is a secret too (the server echoes it back).
        "pg_call": {"BACKEND": pg_backend, **fast, "OPTIONS": {
            "host": "127.0.0.1", "port": pg.port, "user": "app", "dbname": "app",
            "password": lambda: m["pg callable password"]}},
        "api_call": {"BACKEND": "pooled_clients.backends.http.HTTPBackend", **fast,
                     "OPTIONS": {"base_url": f"http://{http_base}/v3/", "health_path": "health",
                                 "headers": {"Authorization":
                                             lambda: f"Bearer {m['HTTP callable token']}"}}},
        "pg_bad": {"BACKEND": pg_backend, **fast, "OPTIONS": {
            "conninfo": f"host=127.0.0.1 password={m['E011 password (1)']} "
                        f"{m['E011 password (2)']} user=app"}},
        # A query string in base_url is refused (E011): the pool is misconfigured, and its
        # check message must not show the query either.
        "api_bad": {"BACKEND": "pooled_clients.backends.http.HTTPBackend", **fast, "OPTIONS": {
            "base_url": f"http://{http_base}/v1/?api_sig={m['HTTP base_url query']}"}},
        "api": {"BACKEND": "pooled_clients.backends.http.HTTPBackend", **fast, "OPTIONS": {
            "base_url": f"http://svc:{m['HTTP base_url password']}@{http_base}/v1/",
            "headers": {"Authorization": f"Bearer {m['HTTP Authorization header']}",
                        "X-Api-Key": m["HTTP x-api-key header"]},
            "auth": ["svc", m["HTTP auth tuple"]],
            "health_path": f"health?access_token={m['HTTP health_path query']}"}},
        "api_async": {"BACKEND": "pooled_clients.backends.async_http.AsyncHTTPBackend", **fast,
                      "OPTIONS": {
            "base_url": f"http://svc:{m['async base_url password']}@{http_base}/v2/",
            "headers": {"Authorization": f"Token {m['async header']}"},
            "health_path": f"/health?code={m['async health_path query']}"}},
        "vendor": {"BACKEND": "tests.test_secrets.VendorBackend", **fast, "OPTIONS": {
            "endpoint": f"http://{http_base}/v1/login?sig={m['vendor endpoint query']}",
            "access_token": m["vendor access_token"], "client_secret": m["vendor client_secret"],
            "refresh_token": m["vendor refresh_token"], "user_password": m["vendor user_password"],
            "PGPASSWORD": m["vendor PGPASSWORD"], "x-api-key": m["vendor x-api-key"],
            "credentials": {"login": {"password": m["vendor nested password"]},
                            "token": ("Bearer", m["vendor nested token tuple"])},
            "api": {"settings": {"signing_secret": m["vendor deep secret"]},
                    "pin_secret": int(m["vendor number"])},
            "auth": ("vendor", m["vendor auth tuple"])}},
    }


def _leaks(surfaces: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, what) for where, text in surfaces.items()
            for what, marker in MARKERS.items() if marker in text]


@pytest.mark.django_db
def test_no_secret_shows_on_any_surface(settings: Any, client: Client, admin_client: Client,
                                        caplog: pytest.LogCaptureFixture) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from pooled_clients import conf, shared_status
    from pooled_clients.exceptions import PoolError
    from pooled_clients.models import WorkerStatus

    caplog.set_level(logging.DEBUG)
    settings.POOLED_CLIENTS_SHARED_STATUS = "database"
    surfaces: dict[str, str] = {}
    with HostileServer("postgres") as pg, HostileServer("http") as http, \
            override_settings(POOLED_CLIENTS=_pools(pg, http)):
        definitions = conf.pool_definitions()
        surfaces["check messages"] = "\n".join(p.message for p in conf.validate_all())
        assert "pooled_clients.E011" in {p.id for p in conf.validate_all()}
        for bad in ("pg_bad", "api_bad"):
            with pytest.raises(Exception) as misconfigured:
                pools[bad]
            surfaces[f"misconfigured pool {bad}"] = (
                f"{misconfigured.value}\n{misconfigured.value!r}")
        for alias in definitions:
            if alias in ("pg_bad", "api_bad"):
                continue
            pool = pools[alias]
            with pytest.raises(PoolError) as info:
                pool.check(timeout=3.0)
            chain: list[BaseException] = []
            error: BaseException | None = info.value
            while error is not None:
                if isinstance(error, PoolError):  # what the project renders of the chain
                    chain.append(error)
                error = error.__cause__ or error.__context__
            surfaces[f"{alias} exception"] = "\n".join(f"{e}\n{e!r}" for e in chain)
            stats = pool.stats()
            surfaces[f"{alias} pool"] = "\n".join([
                str(pool), repr(pool), repr(stats), json.dumps(stats.as_dict()),
                repr(pool.backend), str(stats.last_error)])
            # The hostile answer really came back in the library's error.
            assert stats.last_error, alias

        surfaces["admin html"] = admin_client.get("/admin/pooled_clients/poolstatus/"
                                                  ).content.decode()
        for fmt in ("json", "fragment"):
            surfaces[f"admin {fmt}"] = admin_client.get(
                f"/admin/pooled_clients/poolstatus/?format={fmt}").content.decode()
        for url in ("/pooled-health/", "/health/"):
            for who, http_client in (("anonymous", client), ("staff", admin_client)):
                for fmt in ("json", "text", "atom", "rss", "openmetrics", "html"):
                    response = http_client.get(f"{url}?format={fmt}" if fmt != "html" else url)
                    surfaces[f"{url} {who} {fmt}"] = response.content.decode()
        assert "Unavailable" in surfaces["/pooled-health/ staff text"]
        for args in (("pool_status",), ("pool_status", "--json"), ("pool_check",)):
            out = io.StringIO()
            try:
                call_command(*args, stdout=out)
            except CommandError as exc:
                out.write(f"\n{exc}")
            surfaces[" ".join(args)] = out.getvalue()
        assert "FAILED" in surfaces["pool_check"]
        out = io.StringIO()
        try:
            call_command("check", stdout=out, stderr=out)
        except Exception as exc:
            out.write(str(exc))
        surfaces["manage.py check"] = out.getvalue()
        surfaces["metrics"] = client.get("/metrics").content.decode()
        shared_status.publish()
        surfaces["shared store rows"] = "\n".join(
            WorkerStatus.objects.values_list("payload", flat=True))
        assert "pg_url" in surfaces["shared store rows"]
        # Client libraries log at DEBUG what they send and get (httpcore the raw answer):
        # the project's loggers, and those logging what the project raised, are its own.
        surfaces["logs"] = "\n".join(
            caplog.handler.format(r) for r in caplog.records
            if r.name.split(".")[0] in ("pooled_clients", "health_check", "django"))
    assert "password authentication failed" in surfaces["logs"]  # hostile text was logged
    assert _leaks(surfaces) == []
    # Nothing was hidden by never being rendered: every pool shows on the page and in JSON.
    for alias in ("pg_url", "pg_kw", "pg_opt", "api", "api_async", "vendor"):
        assert f'"alias": "{alias}"' in surfaces["pool_status --json"], alias


@pytest.mark.parametrize("backend", ["PostgresBackend", "AsyncPostgresBackend"])
def test_both_postgres_backends_find_conninfo_passwords_without_connecting(backend: str) -> None:
    from pooled_clients.backends import postgres

    cls = getattr(postgres, backend)
    options = {"conninfo": "postgresql://app:url-pw-1@h/db", "sslpassword": "key-pw-2"}
    assert {"url-pw-1", "key-pw-2"} <= set(cls.option_secrets(options))
    unparsable = {"conninfo": "host=h password=left-half right-half user=app"}
    assert {"left-half", "right-half"} <= set(cls.option_secrets(unparsable))
