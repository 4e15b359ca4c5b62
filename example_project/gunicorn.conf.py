"""gunicorn settings for running the example site the way it would run in production.

    gunicorn -c example_project/gunicorn.conf.py example_project.wsgi

Each worker process gets its own pools (sizes in settings.py are per process). With
``preload_app`` the master imports Django once and forks: the pools exist in the master but have
opened nothing, and every worker opens its own clients on first use.
"""

import os

# post_fork: the worker starts from clean pools; worker_exit: pools close, waiting for clients
# still in use, before the worker goes; child_exit: the master tidies up after any worker,
# even one killed by SIGKILL. Call them from your own hooks if you need hooks of the same name.
from pooled_clients.gunicorn import child_exit, post_fork, worker_exit  # noqa: F401

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

