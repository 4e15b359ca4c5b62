"""Pools under real gunicorn workers against the real PostgreSQL cluster.

Each test starts its own gunicorn (``tests/lifecycle_site``) with its own application_name, so
the server log and ``pg_stat_activity`` can be filtered to the sessions it opened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devservers.ports import free_port
from devservers.postgres import PostgresCluster
from pooled_clients import gunicorn as gunicorn_hooks
from pooled_clients import lifecycle

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE = REPO_ROOT / "tests" / "lifecycle_site"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


class Gunicorn:
    """One gunicorn master serving the lifecycle site, with its state directory."""

    def __init__(self, cluster: PostgresCluster, state: Path, **env: str) -> None:
        self.cluster = cluster
        self.state = state
        self.app_name = f"lc-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.lifecycle_site.settings",
            "LIFECYCLE_PG_CONNINFO": cluster.conninfo("app"),
            "LIFECYCLE_APP_NAME": self.app_name,
            "LIFECYCLE_STATE_DIR": str(state),
            "LIFECYCLE_BIND": f"127.0.0.1:{self.port}",
            **env,
        }
        self.log_path = state / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(SITE / "gunicorn_conf.py"),
                 "tests.lifecycle_site.wsgi:application"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/pid/", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Signal the master and wait for it to exit; return how long that took."""
        assert self.proc is not None
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 10) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def concurrent(self, path: str, count: int = 3) -> list[dict[str, Any]]:
        """``count`` requests at once. With slow requests and sync workers each lands on a
        different worker, since a sync worker accepts nothing while it serves."""
        results: list[dict[str, Any] | BaseException] = [RuntimeError("no answer")] * count

        def one(i: int) -> None:
            try:
                results[i] = self.get(path)
            except BaseException as exc:
                results[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    def answers_by_worker(self, want: int = 3, deadline_s: float = 20,
                          exclude: frozenset[int] = frozenset()) -> dict[int, list[dict[str, Any]]]:
        """Spread slow requests until ``want`` distinct workers (not in ``exclude``) answered."""
        seen: dict[int, list[dict[str, Any]]] = defaultdict(list)
        deadline = time.monotonic() + deadline_s
        while len([w for w in seen if w not in exclude]) < want:
            assert time.monotonic() < deadline, f"only saw workers {sorted(seen)}"
            for answer in self.concurrent("/pid/?sleep=0.3"):
                seen[answer["worker_pid"]].append(answer)
        return dict(seen)

    def sessions(self) -> list[tuple[int, str, str]]:
        """This site's sessions on the server: (pid, state, query)."""
        rows = self.cluster.execute(
            "select pid, coalesce(state, ''), query from pg_stat_activity "
            "where application_name = %s", [self.app_name])
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def wait_no_sessions(self, timeout: float = 5) -> list[tuple[int, str, str]]:
        # A backend leaves pg_stat_activity a moment after it read the Terminate message.
        deadline = time.monotonic() + timeout
        while (left := self.sessions()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def server_log_lines(self) -> list[str]:
        return [line for line in self.cluster.read_log().splitlines()
                if f"app={self.app_name} " in line]

    def abrupt_disconnects(self) -> list[str]:
        return [line for line in self.server_log_lines()
                if "unexpected EOF" in line or "connection reset" in line.lower()]

    def state_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / name).read_text())
        return data


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def gunicorn_factory(postgres: PostgresCluster, state_dir: Path) -> Iterator[Any]:
    started: list[Gunicorn] = []

    def make(**env: str) -> Gunicorn:
        server = Gunicorn(postgres, state_dir, **env)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.kill()


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_preload_workers_get_their_own_sessions_and_the_master_keeps_its_own(
        gunicorn_factory: Any) -> None:
    server = gunicorn_factory(LIFECYCLE_PRELOAD="1", LIFECYCLE_WARM_MASTER="1",
                              LIFECYCLE_MIN_SIZE="2")
    master = server.state_json("master-ready.json")
    master_backends = set(master["backend_pids"])
    assert len(master_backends) == 2, master  # MIN_SIZE=2 was open before the first fork

    by_worker = server.answers_by_worker(3)
    backends_of: dict[int, set[int]] = {}
    for worker_pid, answers in by_worker.items():
        assert worker_pid != master["pid"]
        for answer in answers:
            assert answer["pool_pid"] == worker_pid  # the pool knows it lives in the worker
            assert answer["created_total"] >= 1  # its clients were opened by the worker
        backends_of[worker_pid] = {a["backend_pid"] for a in answers}
    for worker_pid, backends in backends_of.items():
        assert not backends & master_backends, "a worker used a session the master opened"
        for other, other_backends in backends_of.items():
            if other != worker_pid:
                assert not backends & other_backends, "two workers shared a session"

    assert server.stop() < 10
    after = server.state_json("master-exit.json")
    assert "error" not in after, after.get("error", "")
    # The same two sessions, still working after the workers served, exited and closed
    # their own pools; nothing had to be reopened.
    assert set(after["backend_pids"]) == master_backends
    assert after["created_total"] == master["created_total"]
    assert server.abrupt_disconnects() == []
    assert server.wait_no_sessions() == []


def test_sigterm_lets_in_flight_requests_finish_and_closes_every_pool(
        gunicorn_factory: Any, postgres: PostgresCluster) -> None:
    grace = 5
    server = gunicorn_factory(LIFECYCLE_GRACE=str(grace), LIFECYCLE_SHUTDOWN_TIMEOUT="2")
    by_worker = server.answers_by_worker(3)
    worker_pids = set(by_worker)

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(server.get("/pid/?sleep=1.5")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: sum("pg_sleep" in q and s == "active" for _, s, q in server.sessions()) == 3,
              10, "three requests in flight")
    elapsed = server.stop(signal.SIGTERM)
    for thread in threads:
        thread.join(10)

    assert len(results) == 3, server.log()
    assert {r["worker_pid"] for r in results} == worker_pids
    assert elapsed < grace + 1, f"shutdown took {elapsed:.2f}s"
    for pid in worker_pids:
        exit_record = server.state_json(f"worker-exit-{pid}.json")
        assert exit_record == {"closed": [True], "in_use": [0]}
    assert server.wait_no_sessions() == []
    assert server.abrupt_disconnects() == []
    disconnections = [line for line in server.server_log_lines() if "disconnection:" in line]
    assert len(disconnections) >= len(worker_pids)  # the filter does see this site's sessions
    assert "Traceback" not in server.log()


def test_a_worker_killed_by_sigkill_costs_the_others_nothing(gunicorn_factory: Any) -> None:
    server = gunicorn_factory()
    before = server.answers_by_worker(3)
    victim, *survivors = sorted(before)
    last = {pid: max(a["acquired_total"] for a in before[pid]) for pid in survivors}
    backends = {pid: {a["backend_pid"] for a in before[pid]} for pid in survivors}

    os.kill(victim, signal.SIGKILL)
    _wait_for(lambda: (server.state / "child-exits.txt").exists(), 10, "child_exit")
    master_pid, exited = (server.state / "child-exits.txt").read_text().split()
    assert (int(master_pid), int(exited)) == (server.proc.pid, victim)  # type: ignore[union-attr]

    after = server.answers_by_worker(3, exclude=frozenset({victim}))
    assert victim not in after
    replacement = set(after) - set(survivors)
    assert len(replacement) == 1
    for pid in survivors:
        answers = after[pid]
        # Same pool, same sessions, counters carrying on from where they were.
        assert min(a["acquired_total"] for a in answers) > last[pid]
        assert {a["backend_pid"] for a in answers} == backends[pid]
        assert {a["created_total"] for a in answers} == {before[pid][-1]["created_total"]}
    live = {pid for pid, _, _ in server.sessions()}
    for pid in survivors:
        assert backends[pid] <= live
    assert server.stop() < 10


def test_worker_exit_called_in_the_master_leaves_its_pools_alone(
        postgres: PostgresCluster, settings: Any) -> None:
    from pooled_clients import pools

    app_name = f"lc-{uuid.uuid4().hex[:10]}"
    settings.POOLED_CLIENTS = {"pg": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": postgres.conninfo("app"), "application_name": app_name,
                    "autocommit": True},
    }}
    pool = pools["pg"]
    with pool.connection() as conn:
        conn.execute("select 1")
    # What gunicorn passes for a worker that had already vanished (Arbiter.kill_worker).
    gunicorn_hooks.worker_exit(SimpleNamespace(), SimpleNamespace(pid=os.getpid() + 100000))
    assert not pool.closed
    with pool.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    gunicorn_hooks.post_fork(SimpleNamespace(), SimpleNamespace(pid=os.getpid()))
    assert pool.stats().idle == 1  # no fork happened: nothing was abandoned


def test_child_exit_runs_the_registered_callbacks_with_the_worker_pid() -> None:
    seen: list[int] = []

    def callback(pid: int) -> None:
        seen.append(pid)

    def broken(pid: int) -> None:
        raise RuntimeError("a failing callback must not stop the others")

    lifecycle.on_child_exit(broken)
    lifecycle.on_child_exit(callback)
    lifecycle.on_child_exit(callback)
    try:
        gunicorn_hooks.child_exit(SimpleNamespace(), SimpleNamespace(pid=4242))
        gunicorn_hooks.child_exit(SimpleNamespace(), SimpleNamespace(pid=os.getpid()))
    finally:
        lifecycle._child_exit_callbacks.remove(callback)
        lifecycle._child_exit_callbacks.remove(broken)
    assert seen == [4242]
