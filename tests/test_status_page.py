"""What a new user reads on the status page, the health URL and the commands agrees."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client
from prometheus_client import generate_latest

from devservers.http import UpstreamServer
from devservers.ports import free_port
from pooled_clients import metrics, pools
from pooled_clients.exceptions import ClientCreationError
from tests.observability_site.server import serve

Configure = Callable[[str, dict[str, Any]], None]
URL = "/admin/pooled_clients/poolstatus/"
REPO = Path(__file__).resolve().parent.parent
TCP = "pooled_clients.backends.tcp.TCPBackend"


def _card(html: str, alias: str) -> str:
    start = html.index(f'<section class="pc-pool" data-alias="{alias}">')
    return html[start:html.index("</section>", start)]


def test_an_unreachable_async_pool_is_unhealthy_on_every_surface(
        admin_client: Client, pooled_clients_settings: Configure) -> None:
    down = free_port()  # nothing listens there
    pooled_clients_settings("warehouse", {
        "BACKEND": "pooled_clients.backends.async_http.AsyncHTTPBackend",
        "OPTIONS": {"base_url": f"http://127.0.0.1:{down}"}, "CONNECT_RETRIES": 0,
        "HEALTH": {"TIMEOUT": 2.0}})
    assert admin_client.get("/health/").status_code == 500
    stats = pools["warehouse"].stats()
    assert not stats.healthy and stats.state == "failing"
    data = admin_client.get(f"{URL}?format=json").json()
    (pool,) = [p for p in data["pools"] if p["alias"] == "warehouse"]
    assert pool["healthy"] is False
    card = _card(admin_client.get(URL).content.decode(), "warehouse")
    assert ">healthy<" not in card and "pc-state-failing" in card


def test_a_recovered_pool_says_when_its_last_error_happened_and_that_it_recovered(
        admin_client: Client, pooled_clients_settings: Configure) -> None:
    port = free_port()
    pooled_clients_settings("ledger", {"BACKEND": TCP, "CONNECT_RETRIES": 0,
                                       "OPTIONS": {"host": "127.0.0.1", "port": port}})
    pool = pools["ledger"]
    with pytest.raises(ClientCreationError):
        pool.check(timeout=1.0)
    failed = pool.stats()
    assert failed.last_error and not failed.recovered and not failed.healthy
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", failed.last_error_at or "")
    with socket.create_server(("127.0.0.1", port)):
        pool.probe_now()
        pool.check(timeout=2.0)
        stats = pool.stats()
        assert stats.healthy and stats.recovered and stats.last_error_at == failed.last_error_at
        card = _card(admin_client.get(URL).content.decode(), "ledger")
        assert f"at <time class=\"pc-error-at\">{stats.last_error_at}</time>" in card
        assert "recovered since" in card and ">healthy<" in card


def test_the_page_shows_one_clock_in_utc_whatever_time_zone(
        admin_client: Client, settings: Any) -> None:
    settings.TIME_ZONE = "America/Chicago"
    before = time.time()
    html = admin_client.get(URL).content.decode()
    shown = re.search(r'<time class="pc-clock">([^<]+)</time>', html)
    assert shown, html[:2000]
    parsed = time.mktime(time.strptime(shown.group(1), "%Y-%m-%d %H:%M:%S UTC")) - time.timezone
    assert before - 2 <= parsed <= time.time() + 1
    script = (REPO / "pooled_clients/static/pooled_clients/status.js").read_text()
    assert "toLocale" not in script and "new Date()" not in script


def test_the_utilization_bar_has_a_legend_and_workers_name_their_server(
        upstream: UpstreamServer) -> None:
    http = {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url}}
    with serve(1, {"api": http}, OBS_SHARED_STATUS='"database"') as site:
        requests.get(f"{site.url}/work/", timeout=10)
        session = site.login()
        data = session.get(f"{site.url}{URL}?format=json", timeout=10).json()
        assert {w["server"] for w in data["workers"]} == {"gunicorn"}
        html = session.get(f"{site.url}{URL}", timeout=10).text
        assert '<td class="pc-server">gunicorn</td>' in html
        card = _card(html, "api")
        for key in ("pc-key-used", "pc-key-idle", "pc-key-free"):
            assert key in card
        assert "in use" in card and "idle" in card and "free to open" in card


def test_pool_check_prints_a_failure_once(tmp_path: Path) -> None:
    down = free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(REPO))
    script = (
        "import django, sys\n"
        "from django.conf import settings\n"
        f"settings.POOLED_CLIENTS = {{'down': {{'BACKEND': {TCP!r}, 'CONNECT_RETRIES': 0,"
        f" 'OPTIONS': {{'host': '127.0.0.1', 'port': {down}}}}}}}\n"
        "django.setup()\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(['manage.py', 'pool_check', '--timeout', '2'])\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.count("Connection refused") == 1, output
    assert "after 1 failed attempt;" in result.stdout


def test_max_size_says_it_adds_up_processes(pooled_clients_settings: Configure,
                                            upstream: UpstreamServer) -> None:
    pooled_clients_settings("api", {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
                                    "OPTIONS": {"base_url": upstream.url}})
    pools["api"]
    metrics.refresh()
    text = generate_latest().decode()
    (help_line,) = [line for line in text.splitlines()
                    if line.startswith("# HELP pooled_clients_max_size ")]
    assert "summed" in help_line and "server" in help_line
    page = (REPO / "docs/observability.md").read_text()
    assert "per server, not per service" in page and "adds up every process" in page


@pytest.mark.parametrize(("modules", "kind"), [
    ("gunicorn.arbiter", "gunicorn"),
    ("gunicorn.arbiter, uvicorn.workers", "gunicorn + uvicorn"),
    ("uvicorn.server", "uvicorn"),
    ("", "python"),
])
def test_each_worker_names_what_serves_it(modules: str, kind: str) -> None:
    # A fresh interpreter: what a server imports is what tells it apart.
    imports = "".join(f"import {name}; " for name in modules.split(", ") if name)
    out = subprocess.run(
        [sys.executable, "-c",
         f"{imports}from pooled_clients.shared_status import server_kind; print(server_kind())"],
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings"), cwd=REPO,
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == kind
