"""gunicorn.conf.py of the lifecycle test site: the pooled_clients hooks, composed with
hooks that record what happened in ``LIFECYCLE_STATE_DIR`` for the tests to read."""

import json
import os
import time
from pathlib import Path
from typing import Any

from pooled_clients import lifecycle
from pooled_clients.gunicorn import child_exit as _child_exit
from pooled_clients.gunicorn import post_fork as post_fork
from pooled_clients.gunicorn import post_worker_init as post_worker_init
from pooled_clients.gunicorn import worker_exit as _worker_exit

STATE = Path(os.environ["LIFECYCLE_STATE_DIR"])
WARM_MASTER = os.environ.get("LIFECYCLE_WARM_MASTER") == "1"

bind = os.environ["LIFECYCLE_BIND"]
workers = int(os.environ.get("LIFECYCLE_WORKERS", "3"))
worker_class = "sync"
graceful_timeout = int(os.environ.get("LIFECYCLE_GRACE", "5"))
timeout = 30
preload_app = os.environ.get("LIFECYCLE_PRELOAD") == "1"
loglevel = "info"


def _write(name: str, data: dict[str, Any]) -> None:
    tmp = STATE / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.rename(STATE / name)  # readers never see half a file


def _master_sessions() -> dict[str, Any]:
    """Borrow every client of the master's pool at once; report their server sessions."""
    from pooled_clients import pools

    pool = pools["pg"]
    size = pool.stats().min_size
    clients = [pool.acquire() for _ in range(size)]
    try:
        pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in clients]
    finally:
        for client in clients:
            pool.release(client)
    return {"pid": os.getpid(), "backend_pids": pids,
            "created_total": pool.stats().created_total}


def when_ready(server: Any) -> None:
    """In the --preload master, before any fork: warm the pool to MIN_SIZE."""
    if not WARM_MASTER:
        return
    from pooled_clients import pools

    pool = pools["pg"]
    with pool.connection() as conn:  # first use starts the background fill to MIN_SIZE
        conn.execute("select 1")
    deadline = time.monotonic() + 10
    while pool.stats().idle < pool.stats().min_size and time.monotonic() < deadline:
        time.sleep(0.02)
    _write("master-ready.json", _master_sessions())


def on_exit(server: Any) -> None:
    """In the master after every worker is gone: are its pre-fork sessions still usable?"""
    if not WARM_MASTER:
        return
    try:
        data = _master_sessions()
    except Exception as exc:
        data = {"error": repr(exc)}
    _write("master-exit.json", data)


def worker_exit(server: Any, worker: Any) -> None:
    from pooled_clients import pools

    built = pools.built() if worker.pid == os.getpid() else []
    _worker_exit(server, worker)
    if worker.pid == os.getpid():
        _write(f"worker-exit-{worker.pid}.json", {
            "closed": [pool.closed for pool in built],
            "in_use": [pool.stats().in_use for pool in built],
        })


@lifecycle.on_child_exit
def _record_child_exit(pid: int) -> None:
    with open(STATE / "child-exits.txt", "a") as fh:
        fh.write(f"{os.getpid()} {pid}\n")


def child_exit(server: Any, worker: Any) -> None:
    _child_exit(server, worker)
