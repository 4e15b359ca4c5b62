"""Hooks for ``gunicorn.conf.py``::

    from pooled_clients.gunicorn import child_exit, post_fork, post_worker_init, worker_exit

Each pool is already fork-safe and closed at interpreter exit on its own; these hooks make
the transitions explicit and cover what atexit cannot:

- ``post_fork`` runs in the new worker: pools inherited from a ``--preload`` master start
  afresh (inherited clients are abandoned without I/O; the child opens its own). With
  ``POOLED_CLIENTS_WARM_UP`` it also starts opening each pool's ``MIN_SIZE`` clients in the
  background; ``post_worker_init`` (after the worker loaded the application) does the same
  for workers started without ``--preload``.
- ``worker_exit`` runs in the worker as it leaves (graceful stop, SIGINT/SIGQUIT, max
  requests) and closes its pools, waiting up to ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT`` for
  clients in use. Gunicorn also calls it in the master for a worker that had already vanished:
  there it does nothing, so the master's own pools are never touched.
- ``child_exit`` runs in the master after any worker exited, even one killed by SIGKILL: it
  runs the callbacks registered with :func:`pooled_clients.lifecycle.on_child_exit`.

To add your own work, call these from your hooks of the same name.
"""

from __future__ import annotations

import os
from typing import Any

from pooled_clients import lifecycle

__all__ = ["child_exit", "post_fork", "post_worker_init", "worker_exit"]


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: make sure no pool uses a client opened by the master; warm up
    (``POOLED_CLIENTS_WARM_UP``) when the application is loaded already (``--preload``)."""
    lifecycle.reset_after_fork()
    lifecycle.warm_up()


def post_worker_init(worker: Any) -> None:
    """In the worker, once it loaded the application: warm up (``POOLED_CLIENTS_WARM_UP``)."""
    lifecycle.warm_up()


def worker_exit(server: Any, worker: Any) -> None:
    """In the exiting worker: close its pools (bounded). In the master: nothing."""
    if getattr(worker, "pid", None) != os.getpid():
        return
    lifecycle.shutdown()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker exited: run the ``on_child_exit`` callbacks."""
    pid = getattr(worker, "pid", None)
    if isinstance(pid, int) and pid != os.getpid():
        lifecycle.child_exited(pid)
