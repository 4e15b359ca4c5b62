"""``./scripts/run-example`` serves the demo, /health/ and the admin, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devservers.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "example-test-token-d41d8cd98f"
PG_PASSWORD = "app-s3cret-pw"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    site: str
    asgi_site: str
    password: str
    datadir: str
    output: Path
    errors: Path


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _session_members(sid: int) -> list[str]:
    """Processes (pid and command) whose session is ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    out_dir = tmp_path_factory.mktemp("run-example")
    stdout, stderr = out_dir / "stdout.txt", out_dir / "stderr.txt"
    port = free_port()
    env = dict(os.environ, EXAMPLE_PAYMENTS_TOKEN=TOKEN)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # Its own session, so the test can find every process it started afterwards.
        proc = subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "run-example"), "--port", str(port),
             "--asgi-port", str(free_port())],
            cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C to stop." not in _read(stdout):
            assert proc.poll() is None, f"run-example exited early:\n{_read(stderr)[-3000:]}"
            assert time.monotonic() < deadline, (
                f"run-example was not serving within 60 s:\n{_read(stderr)[-3000:]}"
            )
            time.sleep(0.2)
        text = _read(stdout)
        password = re.search(r"user: admin\s+password: (\S+)", text)
        datadir = re.search(r"\(data in (\S+)\)", text)
        asgi = re.search(r"async:\s+(\S+)async/", text)
        assert password and datadir and asgi, text
        yield Running(proc, f"http://127.0.0.1:{port}/", asgi.group(1), password.group(1),
                      datadir.group(1), stdout, stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _assert_no_secret(text: str) -> None:
    assert TOKEN not in text
    assert PG_PASSWORD not in text


def test_demo_pages_use_the_pools(running: Running) -> None:
    index = requests.get(running.site, timeout=10)
    assert index.status_code == 200
    warehouse = requests.get(running.site + "warehouse/", timeout=10)
    assert warehouse.status_code == 200, warehouse.text
    assert "Espresso beans" in warehouse.text
    payments = requests.get(running.site + "payments/", timeout=10)
    assert payments.status_code == 200, payments.text
    assert "/json/v1/charges/42" in payments.text
    # The pools served those pages: the index now shows both with checkouts recorded.
    index = requests.get(running.site, timeout=10)
    assert "warehouse" in index.text and "payments" in index.text
    for page in (index, warehouse, payments):
        _assert_no_secret(page.text)


def _skus(page: str) -> list[str]:
    return re.findall(r"<tr><td>([A-Z]-\d+)</td>", page)


def test_async_view_under_uvicorn_uses_aconnection(running: Running) -> None:
    response = requests.get(running.asgi_site + "async/", timeout=10)
    assert response.status_code == 200, response.text
    assert "Espresso beans" in response.text and "/json/v1/charges/42" in response.text
    _assert_no_secret(response.text)
    # The same rows as the sync page, the sold-out product included.
    sync_page = requests.get(running.site + "warehouse/", timeout=10)
    assert _skus(response.text) == _skus(sync_page.text) != []
    assert "Milk jug" in response.text


# "[2026-11-27 17:25:00 +0000] [1234] [WARNING] django.request: ..."
_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


def test_log_lines_carry_time_process_and_level(running: Running) -> None:
    missing = "/no-such-page/"
    for site in (running.site, running.asgi_site):
        assert requests.get(site.rstrip("/") + missing, timeout=10).status_code == 404
    wanted = {"run-example: starting gunicorn", "uvicorn.error: Started server process",
              f"django.request: Not Found: {missing}"}
    deadline = time.monotonic() + 15
    while True:
        lines = _read(running.errors).splitlines()
        found = {want for want in wanted for line in lines if want in line}
        if found == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found == wanted, "\n".join(lines[-40:])
    for want in wanted:
        for line in lines:
            if want in line:
                assert _LOG_LINE.match(line), line
    # None in the formats these lines had before: uvicorn's "INFO:     ...", the launcher's
    # bare "run-example: ...", the pools' bare "Pool '...' ...".
    untimed = [line for line in lines
               if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):|run-example:|Pool '", line)]
    assert untimed == [], untimed


def test_health_endpoint_checks_the_pools(running: Running) -> None:
    response = requests.get(running.site + "health/?format=json", timeout=15)
    assert response.status_code == 200, response.text
    body = response.json()
    assert all(value == "OK" for value in body.values()), body
    assert {"Pool warehouse", "Pool warehouse_async", "Pool payments"} <= set(body), body
    _assert_no_secret(response.text)


def test_metrics_endpoint_reports_every_pool(running: Running) -> None:
    requests.get(running.site + "warehouse/", timeout=10).raise_for_status()
    response = requests.get(running.site + "metrics", timeout=10)
    assert response.status_code == 200
    for alias in ("warehouse", "warehouse_async", "payments"):
        assert f'pooled_clients_max_size{{alias="{alias}"}}' in response.text, alias
    _assert_no_secret(response.text)


def test_admin_login_printed_by_the_launcher_works(running: Running) -> None:
    session = requests.Session()
    assert session.get(running.site + "admin/", timeout=10).url.endswith(
        "/admin/login/?next=/admin/"
    )
    response = session.post(
        running.site + "admin/login/?next=/admin/",
        data={"username": "admin", "password": running.password,
              "csrfmiddlewaretoken": session.cookies["csrftoken"], "next": "/admin/"},
        headers={"Referer": running.site + "admin/login/"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "Site administration" in response.text, response.text[:2000]
    status = session.get(running.site + "admin/pooled_clients/poolstatus/", timeout=15)
    assert status.status_code == 200
    assert "warehouse" in status.text and "payments" in status.text
    _assert_no_secret(status.text)
    # Shared status is on: the JSON lists the gunicorn workers that have published.
    data = session.get(running.site + "admin/pooled_clients/poolstatus/?format=json",
                       timeout=15).json()
    assert {pool["alias"] for pool in data["pools"]} >= {"warehouse", "payments"}
    assert "workers" in data, sorted(data)


def test_sigterm_stops_everything(running: Running) -> None:
    # Runs last in this module (pytest keeps file order): it ends the shared launcher.
    sid = running.proc.pid
    assert _processes_mentioning(running.datadir), "the PostgreSQL cluster should be running"
    assert len(_session_members(sid)) >= 4, "launcher, gunicorn master and workers, uvicorn"
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(60) == 0
    assert _session_members(sid) == []
    assert _processes_mentioning(running.datadir) == []
    assert not Path(running.datadir).exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(running.site, timeout=2)
