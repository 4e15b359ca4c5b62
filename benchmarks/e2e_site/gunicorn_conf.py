"""gunicorn settings for the end-to-end benchmark (bind, workers and threads come from the CLI)."""

import contextlib
import os

worker_class = "gthread"
accesslog = None
loglevel = "warning"

if os.environ.get("BENCH_WITH_POOLED_CLIENTS", "1") == "1":
    with contextlib.suppress(ImportError):
        from pooled_clients.gunicorn import post_fork, worker_exit  # noqa: F401
