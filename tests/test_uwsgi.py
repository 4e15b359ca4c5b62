"""Pools under a real uWSGI master with prefork workers (``pyuwsgi``), against PostgreSQL.

uWSGI forks from C, so Python's at-fork hooks do not run in its workers; the app's
``ready()`` registers ``pooled_clients.uwsgi``'s post-fork hook instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.ports import free_port
from devservers.postgres import PostgresCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
UWSGI = Path(sys.executable).with_name("uwsgi")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def sessions(cluster: PostgresCluster, app_name: str) -> set[int]:
    rows = cluster.execute(
        "select pid from pg_stat_activity where application_name = %s", (app_name,))
    return {int(row[0]) for row in rows}


@pytest.fixture
def uwsgi_server(postgres: PostgresCluster, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not UWSGI.exists() and not os.environ.get("CI"):
        pytest.skip("pyuwsgi is not installed (scripts/bootstrap installs it)")
    app_name = f"uw-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.lifecycle_site.settings",
        "LIFECYCLE_PG_CONNINFO": postgres.conninfo("app"),
        "LIFECYCLE_APP_NAME": app_name,
        "LIFECYCLE_STATE_DIR": str(tmp_path),
        "LIFECYCLE_MIN_SIZE": "2",
        "LIFECYCLE_WARM_MASTER": "1",
    }
    log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(UWSGI), "--master", "--processes", "3", "--http-socket", f"127.0.0.1:{port}",
         "--module", "tests.lifecycle_site.uwsgi_app:application", "--need-app",
         "--die-on-term", "--disable-logging", "--worker-reload-mercy", "5"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/pid/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise AssertionError((tmp_path / "uwsgi.log").read_text()[-3000:]) from None
            time.sleep(0.1)
    try:
        yield {"base": base, "proc": proc, "app_name": app_name, "state": tmp_path,
               "log": tmp_path / "uwsgi.log"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_uwsgi_workers_use_their_own_sessions_and_leave_the_masters_alone(
        uwsgi_server: dict[str, Any], postgres: PostgresCluster) -> None:
    master = json.loads((uwsgi_server["state"] / "master-ready.json").read_text())
    master_backends = set(master["backend_pids"])
    assert len(master_backends) == 2
    answers: dict[int, set[int]] = {}
    deadline = time.monotonic() + 20
    while len(answers) < 2 and time.monotonic() < deadline:
        body = urllib.request.urlopen(uwsgi_server["base"] + "/pid/?sleep=0.05", timeout=5)
        answer = json.loads(body.read())
        assert answer["worker_pid"] != master["pid"]
        assert answer["pool_pid"] == answer["worker_pid"]
        answers.setdefault(answer["worker_pid"], set()).add(answer["backend_pid"])
    assert len(answers) >= 2, "requests never reached a second worker"
    for worker, backends in answers.items():
        assert not backends & master_backends, "a worker used a session the master opened"
        for other, other_backends in answers.items():
            if other != worker:
                assert not backends & other_backends, "two workers shared a session"
    # The master's sessions were neither used nor closed by any worker.
    assert master_backends <= sessions(postgres, uwsgi_server["app_name"])
    log = postgres.read_log()
    app = uwsgi_server["app_name"]
    assert not [line for line in log.splitlines() if f"app={app}" in line
                and ("unexpected EOF" in line or "connection reset" in line.lower())]

    proc = uwsgi_server["proc"]
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 5
    while sessions(postgres, app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions(postgres, app) == set()
