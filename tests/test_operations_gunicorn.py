"""Warm workers and fleet-wide drains under real gunicorn masters, against the real
PostgreSQL cluster and a real Redis shared by every worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devservers.postgres import PostgresCluster
from devservers.redis import RedisServer
from tests.test_gunicorn import REPO_ROOT, SITE, Gunicorn
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _sessions_by_worker(cluster: PostgresCluster, app: str) -> dict[int, list[Any]]:
    """pid in the application_name -> backend_start of each of its sessions."""
    rows = cluster.execute("select application_name, backend_start from pg_stat_activity "
                           "where application_name like %s", [f"{app}-%"])
    found: dict[int, list[Any]] = {}
    for name, started in rows:
        found.setdefault(int(name.rsplit("-", 1)[1]), []).append(started)
    return found


def test_preload_workers_open_min_size_before_their_first_request(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    server = Gunicorn(postgres, tmp_path, LIFECYCLE_PRELOAD="1", LIFECYCLE_WARM_UP="1",
                      LIFECYCLE_MIN_SIZE="2", LIFECYCLE_APP_PER_PID="1")
    with open(server.log_path, "wb") as log:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(SITE / "gunicorn_conf.py"),
             "tests.lifecycle_site.wsgi:application"],
            cwd=REPO_ROOT, env=server.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # No request is sent until every worker is warm.
        wait_until(lambda: sum(map(len, _sessions_by_worker(postgres, server.app_name)
                                   .values())) >= 6, timeout=30,
                   message=f"3 workers x 2 warm sessions\n{server.log()}")
        by_worker = _sessions_by_worker(postgres, server.app_name)
        assert len(by_worker) == 3 and all(len(s) == 2 for s in by_worker.values())
        assert server.proc.pid not in by_worker  # the --preload master opened nothing
        answers = server.answers_by_worker(3)
        assert set(answers) == set(by_worker)
        for worker_answers in answers.values():
            assert worker_answers[0]["created_total"] >= 2  # warm before it served
    finally:
        server.kill()


class Fleet:
    """Two gunicorn masters ("hosts") of two workers each, sharing status through Redis."""

    def __init__(self, postgres: PostgresCluster, redis: RedisServer, tmp_path: Path) -> None:
        prefix = f"fleet-{uuid.uuid4().hex[:8]}"
        self.env = {"LIFECYCLE_WORKERS": "2", "LIFECYCLE_WARM_UP": "1",
                    "LIFECYCLE_MIN_SIZE": "1", "LIFECYCLE_REDIS_URL": redis.url,
                    "LIFECYCLE_CACHE_PREFIX": prefix, "LIFECYCLE_INTERVAL": "1.0"}
        self.masters = []
        for host in ("host-a", "host-b"):
            state = tmp_path / host
            state.mkdir()
            self.masters.append(Gunicorn(postgres, state, POOLED_CLIENTS_HOST=host,
                                         **self.env))

    def start(self) -> None:
        for master in self.masters:
            master.start()

    def kill(self) -> None:
        for master in self.masters:
            master.kill()

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.masters[0].env, "POOLED_CLIENTS_HOST": "admin-host"}
        return subprocess.run([sys.executable, "-m", "django", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def share_status_with(self, settings: Any) -> None:
        """Point this process at the fleet's shared status store, as a reader."""
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": self.env["LIFECYCLE_REDIS_URL"],
                       "KEY_PREFIX": self.env["LIFECYCLE_CACHE_PREFIX"]}}
        settings.POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "shared"}
        settings.POOLED_CLIENTS_SHARED_STATUS_MAX_AGE = 10.0

    @staticmethod
    def workers() -> list[dict[str, Any]]:
        """Every worker on the all-workers page."""
        from pooled_clients import shared_status

        return shared_status.read()


@pytest.mark.django_db
def test_pool_drain_and_the_admin_button_drain_every_worker_of_two_hosts(
        settings: Any, postgres: PostgresCluster, redis_server: RedisServer,
        tmp_path: Path, admin_client: Client,
        pooled_clients_settings: Callable[[str, dict[str, Any]], None]) -> None:
    fleet = Fleet(postgres, redis_server, tmp_path)
    fleet.share_status_with(settings)
    # The admin page's process has the pool too (it drains its own, then the fleet's).
    pooled_clients_settings("pg", {"BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
                                   "OPTIONS": {"conninfo": postgres.conninfo("app")}})
    try:
        fleet.start()
        # Warm workers publish from the start: all four are reachable before any request.
        wait_until(lambda: len(fleet.workers()) == 4, timeout=30, interval=0.3,
                   message="four workers on the all-workers page")
        assert {w["host"] for w in fleet.workers()} == {"host-a", "host-b"}
        errors: list[BaseException] = []
        stop = threading.Event()

        def load(master: Gunicorn) -> None:
            while not stop.is_set():
                try:
                    master.get("/pid/?sleep=0.05")
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=load, args=(m,)) for m in fleet.masters * 2]
        for thread in threads:
            thread.start()
        try:
            drained_at = postgres.execute("select clock_timestamp()")[0][0]
            start = time.monotonic()
            result = fleet.manage("pool_drain", "pg", "--all-workers", "--timeout", "10")
            took = time.monotonic() - start
            assert result.returncode == 0, result.stdout + result.stderr
            confirmed = {line.split("host ")[1] for line in result.stdout.splitlines()
                         if "confirmed: host" in line}
            assert {c.split(" pid ")[0] for c in confirmed} == {"host-a", "host-b"}
            assert len(confirmed) == 4
            # One publish interval (1 s), plus the command's own start-up and polling.
            assert took < 1.0 + 4.0, took
            time.sleep(0.5)  # requests keep flowing on the new sessions
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert errors == []

        def all_new() -> bool:
            rows = [r for m in fleet.masters for r in postgres.execute(
                "select backend_start from pg_stat_activity where application_name = %s",
                [m.app_name])]
            return bool(rows) and all(started > drained_at for (started,) in rows)

        wait_until(all_new, timeout=10, message="sessions from before the drain remain")

        # The admin's Drain button: the same, confirmed on the all-workers page.
        pressed_at = time.time()
        drained_at = postgres.execute("select clock_timestamp()")[0][0]
        response = admin_client.post("/admin/pooled_clients/poolstatus/drain/", {"alias": "pg"})
        assert response.status_code == 302

        def every_worker_drained() -> bool:
            workers = [w for w in fleet.workers() if w["host"] != "admin-host"
                       and w["pid"] != os.getpid()]
            return len(workers) == 4 and all(
                (w["drains"].get("pg", {}).get("drained_at") or 0) > pressed_at
                for w in workers)

        wait_until(every_worker_drained, timeout=1.0 + 2.0, interval=0.1,
                   message="every worker confirming the button's drain")
        for master in fleet.masters:
            master.get("/pid/")  # a request after the drain runs on a new session
        wait_until(all_new, timeout=10, message="sessions from before the button remain")
    finally:
        fleet.kill()
