"""Fork a process that holds pooled clients; report what the child did with the parent's.

Run by tests/test_lifecycle.py as ``python -m tests.lifecycle_site.forkcheck MODE EVENTS``:
``os-fork`` forks with ``os.fork()`` (Python's at-fork hooks run); ``raw-fork`` calls libc's
``fork()`` directly, the way uWSGI forks, so only the pool's own pid check can notice;
``raw-fork-hook`` forks the same way, then calls ``lifecycle.reset_after_fork()`` in the child
as the uWSGI post-fork hook does.

Clients are plain objects whose ``close`` and finalizer append ``<event> <label> <pid>`` to
EVENTS, so the test sees every close and every finalization, in whichever process.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import json
import os
import sys
from typing import Any

from pooled_clients.backends.base import ClientBackend
from pooled_clients.pool import Pool

MODE, EVENTS = sys.argv[1], sys.argv[2]
_FD = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _event(kind: str, label: str, _write: Any = os.write, _getpid: Any = os.getpid,
           _fd: int = _FD) -> None:
    # Everything bound as defaults: module globals are gone late in interpreter finalization.
    _write(_fd, f"{kind} {label} {_getpid()}\n".encode())


class Tracked:
    def __init__(self, label: str) -> None:
        self.label = label

    def __del__(self, _event: Any = _event) -> None:
        _event("finalized", self.label)


class TrackedBackend(ClientBackend[Tracked]):
    _numbers = itertools.count(1)

    def create(self) -> Tracked:
        return Tracked(f"{os.getpid()}-{next(self._numbers)}")

    def close(self, client: Tracked) -> None:
        _event("closed", client.label)

    def describe(self) -> str:
        return "tracked"


def main() -> int:
    pool = Pool("tracked", TrackedBackend("tracked", {}))
    held = pool.acquire()
    if MODE in ("os-fork", "raw-fork-hook"):
        spare = pool.acquire()
        pool.release(spare)  # one idle, one in use when the fork happens
        del spare
        fork = os.fork if MODE == "os-fork" else ctypes.PyDLL(None).fork
    else:
        # Nothing idle: a raw fork runs no hook, so the fast path must not find a client.
        fork = ctypes.PyDLL(None).fork
    parent_labels = [held.label, *[c.label for c in pool.iter_idle_clients()]]
    pid = fork()
    if pid == 0:
        if MODE == "raw-fork-hook":
            from pooled_clients import lifecycle

            lifecycle.reset_after_fork()
        client = pool.acquire()
        report = {"pid": os.getpid(), "label": client.label, "stats_pid": pool.stats().pid}
        pool.release(client)
        pool.release(held)  # the parent's: ignored here, not an error
        pool.close(timeout=1.0)
        with open(EVENTS + ".child.json", "w") as fh:
            json.dump(report, fh)
        del client, held, pool
        gc.collect()
        return 0  # a normal exit: interpreter finalization runs in the child
    _, status = os.waitpid(pid, 0)
    pool.release(held)
    again = pool.acquire()
    print(json.dumps({"parent": os.getpid(), "child": pid, "status": status,
                      "parent_labels": parent_labels, "again": again.label,
                      "created_total": pool.stats().created_total}))
    pool.release(again)
    pool.close(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
