"""Pools across process transitions: fork, interpreter exit, reload and override_settings.

The gunicorn side (preload, SIGTERM, SIGKILL) lives in test_gunicorn.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from devservers.postgres import PostgresCluster
from pooled_clients import PoolClosed, lifecycle, maintenance, pools

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


def pg_pools(cluster: PostgresCluster, app_name: str, **extra: Any) -> dict[str, Any]:
    return {"pg": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": cluster.conninfo("app"), "application_name": app_name,
                    "autocommit": True},
        **extra,
    }}


def sessions(cluster: PostgresCluster, app_name: str) -> set[int]:
    rows = cluster.execute(
        "select pid from pg_stat_activity where application_name = %s", [app_name])
    return {int(r[0]) for r in rows}


def wait_sessions(cluster: PostgresCluster, app_name: str, expected: set[int],
                  timeout: float = 5) -> set[int]:
    # A backend leaves pg_stat_activity a moment after it read the client's Terminate.
    deadline = time.monotonic() + timeout
    while (found := sessions(cluster, app_name)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def abrupt_disconnects(cluster: PostgresCluster, app_name: str) -> list[str]:
    return [line for line in cluster.read_log().splitlines()
            if f"app={app_name} " in line
            and ("unexpected EOF" in line or "connection reset" in line.lower())]


def backend_pid(conn: Any) -> int:
    return int(conn.execute("select pg_backend_pid()").fetchone()[0])


@pytest.fixture
def app_name() -> str:
    return f"lc-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------- fork


@pytest.mark.parametrize("mode", ["os-fork", "raw-fork", "raw-fork-hook"])
def test_forked_child_never_closes_or_finalizes_inherited_clients(
        mode: str, tmp_path: Path) -> None:
    """os-fork: Python's at-fork hook resets the pool. raw-fork (libc fork(), as uWSGI does):
    the pid check on the slow path does; raw-fork-hook: the uWSGI post-fork hook
    (``lifecycle.reset_after_fork``) does, with an idle client the fast path would otherwise
    hand out. Either way the child abandons the parent's clients
    (no close, no finalizer, even through interpreter exit) and opens its own."""
    events = tmp_path / "events"
    result = subprocess.run(
        [sys.executable, "-m", "tests.lifecycle_site.forkcheck", mode, str(events)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    parent = json.loads(result.stdout)
    child = json.loads((tmp_path / "events.child.json").read_text())
    lines = [line.split() for line in events.read_text().splitlines()]

    assert parent["status"] == 0
    assert child["pid"] == parent["child"]
    assert child["stats_pid"] == child["pid"]
    assert child["label"].startswith(f"{child['pid']}-"), "the child reused a parent's client"
    child_pid = str(child["pid"])
    touched = [line for line in lines
               if line[1] in parent["parent_labels"] and line[2] == child_pid]
    assert touched == [], "the child closed or finalized a client of its parent"
    assert ["closed", child["label"], child_pid] in lines  # it did close its own
    # The parent's pool carries on with the same clients, nothing reopened.
    assert parent["again"] in parent["parent_labels"]
    assert parent["created_total"] == len(parent["parent_labels"])


def _child_uses_pool(queue: Any) -> None:
    """A multiprocessing child: query, report, then close pools as Celery's
    worker_process_shutdown receiver would (the child leaves with os._exit)."""
    pool = pools["pg"]
    with pool.connection() as conn:
        backend = backend_pid(conn)
    stats = pool.stats()
    thread = maintenance._thread
    queue.put({
        "pid": os.getpid(), "backend": backend, "stats_pid": stats.pid,
        "created": stats.created_total,
        "maintenance_alive": bool(thread is not None and thread.is_alive()),
        "maintenance_pid": maintenance._thread_pid,
    })
    lifecycle.on_worker_process_shutdown(sender=None, pid=os.getpid(), exitcode=0)


def test_multiprocessing_fork_children_use_their_own_connections(
        postgres: PostgresCluster, app_name: str) -> None:
    with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name)):
        pool = pools["pg"]
        held = pool.acquire()  # in use across the fork
        spare = pool.acquire()
        parent_backends = {backend_pid(held), backend_pid(spare)}
        pool.release(spare)  # idle across the fork

        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        children = [ctx.Process(target=_child_uses_pool, args=(queue,)) for _ in range(2)]
        for child in children:
            child.start()
        reports = [queue.get(timeout=20) for _ in children]
        for child in children:
            child.join(20)
            assert child.exitcode == 0

        child_backends = {r["backend"] for r in reports}
        assert len(child_backends) == 2
        assert not child_backends & parent_backends
        for report in reports:
            assert report["stats_pid"] == report["pid"]
            assert report["created"] == 1
            # The parent's maintenance thread does not exist in the child: a new one runs.
            assert report["maintenance_alive"]
            assert report["maintenance_pid"] == report["pid"]

        # The parent's sessions are intact: same server sessions, nothing reopened.
        assert backend_pid(held) in parent_backends
        pool.release(held)
        with pool.connection() as conn:
            assert backend_pid(conn) in parent_backends
        assert pool.stats().created_total == 2
        # The children closed their own sessions cleanly; the parent's two remain.
        assert wait_sessions(postgres, app_name, parent_backends) == parent_backends
    assert wait_sessions(postgres, app_name, set()) == set()
    assert abrupt_disconnects(postgres, app_name) == []


# ---------------------------------------------------------------------------- shutdown


def test_interpreter_exit_closes_pools_within_the_shutdown_timeout(
        postgres: PostgresCluster, app_name: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.lifecycle_site.settings",
        "LIFECYCLE_PG_CONNINFO": postgres.conninfo("app"),
        "LIFECYCLE_APP_NAME": app_name,
        "LIFECYCLE_SHUTDOWN_TIMEOUT": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.lifecycle_site.exitcheck"], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout, stderr = proc.communicate(timeout=30)
    exited = time.time()
    assert proc.returncode == 0, stderr
    main_done = float(stdout.split("main done ")[1])
    # One grace period for the client still in use, then exit: never a hang.
    assert 0.4 <= exited - main_done < 1.5, f"exit took {exited - main_done:.2f}s"
    assert "closed 1 client(s) still in use at shutdown" in stderr
    for noise in ("Traceback", "Fatal Python error", "Exception ignored", "couldn't stop"):
        assert noise not in stderr, stderr
    assert wait_sessions(postgres, app_name, set()) == set()
    assert abrupt_disconnects(postgres, app_name) == []


def test_close_all_waits_for_a_client_in_use_and_closes_it_on_release(
        postgres: PostgresCluster, app_name: str) -> None:
    with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name)):
        pool = pools["pg"]
        client = pool.acquire()
        closing = threading.Event()

        def release_once_closing() -> None:
            deadline = time.monotonic() + 10
            while pool.stats().state != "closing" and time.monotonic() < deadline:
                time.sleep(0.005)
            closing.set()
            pool.release(client)

        thread = threading.Thread(target=release_once_closing)
        thread.start()
        start = time.monotonic()
        pools.close_all(timeout=10)
        elapsed = time.monotonic() - start
        thread.join(5)
        assert closing.is_set()
        assert elapsed < 5, "close_all did not return when the client came back"
        assert client.closed
        assert pool.closed
        with pytest.raises(PoolClosed):
            pool.acquire(timeout=1)
    assert abrupt_disconnects(postgres, app_name) == []


def test_close_all_gives_up_waiting_after_the_timeout(
        postgres: PostgresCluster, app_name: str) -> None:
    with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name)):
        pool = pools["pg"]
        client = pool.acquire()
        start = time.monotonic()
        pools.close_all(timeout=0.3)
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 2
        assert client.closed  # closed anyway once the grace period was over
        assert wait_sessions(postgres, app_name, set()) == set()


# ---------------------------------------------------------------------------- reload


def test_override_settings_retires_the_old_pool_without_waiting(
        postgres: PostgresCluster, app_name: str) -> None:
    with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name)):
        old = pools["pg"]
        held = old.acquire()
        idle = old.acquire()
        held_backend, idle_backend = backend_pid(held), backend_pid(idle)
        old.release(idle)

        start = time.monotonic()
        with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name + "-new")):
            assert time.monotonic() - start < 1, "switching settings waited for clients in use"
            new = pools["pg"]
            assert new is not old
            assert old.closed
            assert idle.closed  # idle clients close at once
            assert wait_sessions(postgres, app_name, {held_backend}) == {held_backend}
            with pytest.raises(PoolClosed):
                old.acquire(timeout=5)  # hands out nothing, and says so at once
            assert time.monotonic() - start < 1
            # The thread holding an old client carries on, and returns it normally.
            assert backend_pid(held) == held_backend
            old.release(held)
            assert held.closed  # closed on release
            with new.connection() as conn:
                assert conn.execute("select current_setting('application_name')").fetchone() \
                    == (app_name + "-new",)
        assert pools["pg"] is not new  # the outer settings are back, on a fresh pool
        assert new.closed
        assert idle_backend not in sessions(postgres, app_name)
    assert wait_sessions(postgres, app_name, set()) == set()
    assert abrupt_disconnects(postgres, app_name) == []


def test_reload_wakes_waiters_of_the_old_pool_at_once(
        postgres: PostgresCluster, app_name: str) -> None:
    with override_settings(POOLED_CLIENTS=pg_pools(postgres, app_name, MAX_SIZE=1)):
        old = pools["pg"]
        held = old.acquire()
        outcome: list[BaseException] = []
        waiting = threading.Event()

        def wait_for_a_client() -> None:
            waiting.set()
            try:
                old.acquire(timeout=30)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait_for_a_client)
        thread.start()
        assert waiting.wait(5)
        deadline = time.monotonic() + 5
        while old.stats().waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert old.stats().waiting == 1

        pools.reload()
        thread.join(2)
        assert not thread.is_alive(), "a waiter of the retired pool kept waiting"
        assert len(outcome) == 1 and isinstance(outcome[0], PoolClosed)
        assert pools["pg"] is not old
        old.release(held)
        assert held.closed
    assert wait_sessions(postgres, app_name, set()) == set()
