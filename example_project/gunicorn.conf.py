"""gunicorn settings for running the example site the way it would run in production.

    gunicorn -c example_project/gunicorn.conf.py example_project.wsgi

Each worker process gets its own pools (sizes in settings.py are per process). With
``preload_app`` the master imports Django once and forks: the pools exist in the master but have
opened nothing, and every worker opens its own clients on first use.
"""

import os
from typing import Any

from pooled_clients import gunicorn as pooled_clients_hooks

# post_fork: the worker starts from clean pools; worker_exit: pools close, waiting for clients
# still in use, before the worker goes.
post_fork = pooled_clients_hooks.post_fork
worker_exit = pooled_clients_hooks.worker_exit

bind = os.environ.get("EXAMPLE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("EXAMPLE_WORKERS", "2"))
# Threads share a worker's pools: keep each pool's MAX_SIZE >= threads so no request waits.
worker_class = "gthread"
threads = 4
preload_app = True
# Long enough for in-flight requests to finish and pools to close within
# POOLED_CLIENTS_SHUTDOWN_TIMEOUT (5 s).
graceful_timeout = 10
timeout = 30
accesslog = os.environ.get("EXAMPLE_ACCESS_LOG", "-")
errorlog = "-"
# gunicorn >= 24 opens a control socket at one fixed per-user path; several sites (or tests) on
# one machine would fight over it, and nothing here uses it.
control_socket_disable = True



def child_exit(server: Any, worker: Any) -> None:
    """In the master, after any worker exited (even by SIGKILL)."""
    pooled_clients_hooks.child_exit(server, worker)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The dead worker's gauges must stop counting in the live sums.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
