"""gunicorn settings of the observability test site."""

import os


def child_exit(server: object, worker: object) -> None:
    # prometheus_client multiprocess mode: the dead worker's live gauges must go.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
