"""Every worker on one page: each process publishes its stats snapshot to a shared store.

Opt-in with ``POOLED_CLIENTS_SHARED_STATUS``: ``"database"`` (the default database, table
``pooled_clients_workerstatus``) or ``{"CACHE": "<alias>"}`` (a cache every worker shares:
Redis, Memcached, the database or file cache; not ``LocMemCache``). Each serving process
publishes every ``POOLED_CLIENTS_SHARED_STATUS_INTERVAL`` seconds from the maintenance
thread, starting with its first request; readers drop workers that have not published for
``POOLED_CLIENTS_SHARED_STATUS_MAX_AGE`` seconds (a SIGKILLed worker publishes nothing more).
A process that shuts down cleanly withdraws its entry at once (:func:`withdraw`).
When the setting is None nothing is connected, imported or written.

The same store carries fleet-wide drains: :func:`request_drain` records a drain id per alias;
each worker, at its next publication, drains that pool if the request is newer than the
process, and publishes the id it applied (``"drains"`` in its snapshot), which is how
``manage.py pool_drain --all-workers`` and the admin's Drain button learn who confirmed.
A worker is named by its host (``socket.gethostname()``, or the ``POOLED_CLIENTS_HOST``
environment variable when set) and pid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pooled_clients import conf, fork
from pooled_clients.masking import printable

__all__ = ["apply_drain_requests", "enabled", "host", "local_snapshot", "publish", "read",
           "read_report", "request_drain", "start", "totals", "withdraw"]

logger = logging.getLogger("pooled_clients")

JOB_NAME = "pooled_clients.shared_status"
_INDEX_KEY = "pooled_clients:status:index"
_KEY_PREFIX = "pooled_clients:status:"
#: Text fields of a published pool (None or a string).
_TEXT_FIELDS = ("state", "target", "backend", "last_error")
_DRAIN_PREFIX = "pooled_clients:drain:"
#: Counters summed across workers in the totals.
TOTAL_FIELDS = (
    "size", "idle", "in_use", "waiting", "max_size", "acquired_total", "released_total",
    "created_total", "closed_total", "timeouts_total", "errors_total", "check_failures_total",
    "leaks_total",
)

_started_pid = 0
_start_lock = threading.Lock()
_index_lock = threading.Lock()
_process_started = time.time()
#: alias -> {"id": the last drain id applied, "drained_at": Unix time, or None when the
#: request was older than this process}.
_applied: dict[str, dict[str, Any]] = {}


def host_id() -> str:
    """This machine on the page: ``POOLED_CLIENTS_HOST`` from the environment (for
    containers whose hostnames mean nothing, or two servers on one machine), else the
    hostname."""
    return os.environ.get("POOLED_CLIENTS_HOST") or socket.gethostname()


def host() -> str:
    """The name this process's host goes by on the all-workers page."""
    return host_id()


def _after_fork_in_child() -> None:
    global _process_started, _applied
    _process_started = time.time()
    _applied = {}


fork.on_fork_in_child(_after_fork_in_child)


def server_kind() -> str:
    """What serves this process: gunicorn, uvicorn, uWSGI, ... (or "python")."""
    modules = sys.modules
    if "uwsgi" in modules:
        return "uWSGI"
    if "gunicorn.arbiter" in modules or "gunicorn.workers.base" in modules:
        return "gunicorn + uvicorn" if "uvicorn.workers" in modules else "gunicorn"
    for name, label in (("uvicorn.server", "uvicorn"), ("daphne.server", "daphne"),
                        ("hypercorn", "hypercorn")):
        if name in modules:
            return label
    if "runserver" in sys.argv[1:2]:
        return "runserver"
    return "python"


def enabled() -> bool:
    """True when ``POOLED_CLIENTS_SHARED_STATUS`` names a store."""
    return conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS") is not None


def _max_age() -> float:
    return float(conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS_MAX_AGE"))


def _interval() -> float:
    return float(conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL"))


def pool_dicts() -> list[dict[str, Any]]:
    """``as_dict()`` of every configured pool of this process, without acquiring stacks
    (lines of source have no place on a shared page), each text masked with the pool's
    secrets and on one line (:func:`~pooled_clients.masking.printable`)."""
    from django.core.exceptions import ImproperlyConfigured

    from pooled_clients.handler import pools

    result = []
    for alias in pools:
        try:
            pool = pools[alias]
            data = pool.stats().as_dict()
        except ImproperlyConfigured:  # reported by `manage.py check`; the others still show
            continue
        _strip_stacks(data)
        _mask_errors(data, pool.mask)
        result.append(clean(data))
    return result


def _mask_errors(data: dict[str, Any], mask: Callable[[str], str]) -> None:
    # The pool masked its errors already; again, in case a backend's text slipped through.
    if isinstance(data.get("last_error"), str):
        data["last_error"] = mask(data["last_error"])
    for endpoint in data.get("endpoints", {}).values():
        _mask_errors(endpoint, mask)


def clean(value: Any) -> Any:
    """``value`` (JSON-ready data) with every string, keys included, made
    :func:`~pooled_clients.masking.printable`: a newline in an alias, a thread name or a
    target cannot split a line of a table or forge a log line."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Mapping):
        return {clean(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


def _strip_stacks(data: dict[str, Any]) -> None:
    for lease in data.get("leases", ()):
        lease.pop("stack", None)
    for endpoint in data.get("endpoints", {}).values():
        _strip_stacks(endpoint)


def local_snapshot() -> dict[str, Any]:
    """This process: ``{"host", "pid", "server", "published_at", "pools", "drains"}``."""
    return {"host": host_id(), "pid": os.getpid(), "server": server_kind(),
            "published_at": time.time(), "pools": pool_dicts(),
            "drains": {a: dict(d) for a, d in _applied.items()}}


def publish() -> None:
    """Write this process's snapshot to the configured store (nothing when off)."""
    store = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS")
    if store is None:
        return
    snapshot = local_snapshot()
    if store == "database":
        _publish_database(snapshot)
    else:
        _publish_cache(store["CACHE"], snapshot)


def read() -> list[dict[str, Any]]:
    """Every worker that published within MAX_AGE, sorted by host and pid; each has an
    ``age`` in seconds. Malformed entries are left out (see :func:`read_report`)."""
    return read_report()[0]


def read_report() -> tuple[list[dict[str, Any]], int]:
    """``(workers, skipped)``: the workers of :func:`read`, and how many entries of the
    store were left out because they are malformed (written by another version of the
    app, or tampered with: not JSON, missing keys, wrong types)."""
    store = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS")
    if store is None:
        return [], 0
    now = time.time()
    oldest = now - _max_age()
    raw = (_read_database(oldest) if store == "database"
           else _read_cache(store["CACHE"], oldest))
    workers = []
    skipped = 0
    for entry in raw:
        worker = _valid_worker(entry)
        if worker is None:
            skipped += 1
        elif worker["published_at"] >= oldest:
            worker["age"] = round(max(0.0, now - worker["published_at"]), 1)
            workers.append(worker)
    if skipped:
        logger.debug("Skipped %d malformed entr%s of the shared pool status.", skipped,
                     "y" if skipped == 1 else "ies")
    return sorted(workers, key=lambda w: (w["host"], w["pid"])), skipped


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_worker(entry: Any) -> dict[str, Any] | None:
    """A clean copy of one published snapshot, or None when it is malformed."""
    if not isinstance(entry, Mapping):
        return None
    host, pid, published_at, pools = (entry.get("host"), entry.get("pid"),
                                      entry.get("published_at"), entry.get("pools"))
    if (not isinstance(host, str) or not _is_count(pid) or not isinstance(pools, list)
            or not isinstance(published_at, int | float) or isinstance(published_at, bool)
            or not math.isfinite(published_at)):
        return None
    clean_pools = []
    for pool in pools:
        if not isinstance(pool, Mapping) or not isinstance(pool.get("alias"), str):
            return None
        if not all(_is_count(pool.get(name, 0)) for name in TOTAL_FIELDS):
            return None
        if not isinstance(pool.get("healthy", True), bool):
            return None
        if not all(isinstance(pool.get(name), str | None) for name in _TEXT_FIELDS):
            return None
        clean_pools.append({**dict.fromkeys(("in_use", "size", "max_size"), 0),
                            "healthy": True, **pool})
    worker: dict[str, Any] = clean({**entry, "pools": clean_pools})
    return worker


def totals(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per alias, the sum of sizes and counters over ``workers`` and how many are healthy."""
    by_alias: dict[str, dict[str, Any]] = {}
    # Workers from read() are valid; an entry that is not is skipped here as well.
    for worker in filter(None, map(_valid_worker, workers)):
        for pool in worker["pools"]:
            total = by_alias.setdefault(pool["alias"], {
                "alias": pool["alias"], "workers": 0, "unhealthy_workers": 0,
                **dict.fromkeys(TOTAL_FIELDS, 0),
            })
            total["workers"] += 1
            if not pool.get("healthy", True):
                total["unhealthy_workers"] += 1
            for name in TOTAL_FIELDS:
                total[name] += int(pool.get(name) or 0)
    for total in by_alias.values():
        total["utilization"] = (
            round(total["in_use"] / total["max_size"], 4) if total["max_size"] else 0.0
        )
    return list(by_alias.values())


def start() -> None:
    """Publish from this process every interval (idempotent; once per process)."""
    global _started_pid
    if not enabled() or _started_pid == os.getpid():
        return
    with _start_lock:
        if _started_pid == os.getpid():
            return
        _started_pid = os.getpid()
    from pooled_clients import maintenance

    maintenance.add_periodic(JOB_NAME, _interval(), _publish_job)


def withdraw(timeout: float = 2.0) -> bool:
    """Stop publishing and delete this process's entry from the store, so that a worker
    that exits cleanly (a restart, a reload, a scale-down) leaves the page at once instead
    of after MAX_AGE.

    Called by the shutdown hooks. A no-op in a process that never published. The store is
    written from a daemon thread joined for at most ``timeout`` seconds, so an unreachable
    database or cache never holds up the exit; then the entry simply ages out. True when
    the entry is known to be gone.
    """
    global _started_pid
    with _start_lock:
        if _started_pid != os.getpid():
            return False
        _started_pid = 0
    from pooled_clients import maintenance

    maintenance.remove_periodic(JOB_NAME)
    store = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS")
    if store is None:
        return False
    done = threading.Event()

    def run() -> None:
        try:
            if store == "database":
                _withdraw_database(host_id(), os.getpid())
            else:
                _withdraw_cache(store["CACHE"], host_id(), os.getpid())
            done.set()
        except Exception as exc:  # the entry ages out instead
            from pooled_clients.masking import mask_exception

            logger.warning("Could not withdraw the shared status of process %d: %s",
                           os.getpid(), mask_exception(exc))

    try:
        thread = threading.Thread(target=run, name="pooled_clients-withdraw", daemon=True)
        thread.start()
    except RuntimeError:  # no new threads this late in interpreter shutdown
        return False
    thread.join(timeout)
    return done.is_set()


def on_request_started(**kwargs: Any) -> None:
    """``request_started`` receiver: the first request of a serving process starts publishing."""
    if _started_pid != os.getpid():
        start()


def _publish_job() -> None:
    global _started_pid
    if not enabled():
        from pooled_clients import maintenance

        maintenance.remove_periodic(JOB_NAME)
        with _start_lock:
            _started_pid = 0  # turned on again later (tests), start() starts afresh
        return
    try:
        try:
            apply_drain_requests()
        except Exception as exc:  # publishing goes on; the next round tries again
            from pooled_clients.masking import mask_exception

            logger.warning("Reading drain requests failed: %s", mask_exception(exc))
        publish()
    finally:
        # The maintenance thread must not keep a database connection open between rounds.
        from django.db import connections

        connections.close_all()


# --------------------------------------------------------------------------- drains


def request_drain(alias: str) -> str:
    """Drain pool ``alias`` here and ask every other worker to at its next publication;
    return the drain id."""
    store = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS")
    if store is None:
        raise RuntimeError("POOLED_CLIENTS_SHARED_STATUS is off: no other process can be "
                           "reached.")
    drain_id, requested_at = uuid.uuid4().hex, time.time()
    request = {"id": drain_id, "requested_at": requested_at}
    if store == "database":
        from pooled_clients.models import DrainRequest

        DrainRequest.objects.update_or_create(
            alias=alias, defaults={"drain_id": drain_id, "requested_at": requested_at})
    else:
        from django.core.cache import caches

        caches[store["CACHE"]].set(_DRAIN_PREFIX + alias, request, timeout=None)
    from pooled_clients.handler import pools

    pools.drain(alias)
    _applied[alias] = {"id": drain_id, "drained_at": time.time()}
    return drain_id


def _drain_requests() -> dict[str, dict[str, Any]]:
    """alias -> {"id", "requested_at"} for every pool configured here."""
    from pooled_clients.handler import pools

    store = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS")
    aliases = list(pools)
    if store is None or not aliases:
        return {}
    if store == "database":
        from pooled_clients.models import DrainRequest

        return {row.alias: {"id": row.drain_id, "requested_at": row.requested_at}
                for row in DrainRequest.objects.filter(alias__in=aliases)}
    from django.core.cache import caches

    found = caches[store["CACHE"]].get_many([_DRAIN_PREFIX + a for a in aliases])
    return {key[len(_DRAIN_PREFIX):]: dict(value) for key, value in found.items()
            if isinstance(value, Mapping) and "id" in value}


def apply_drain_requests() -> list[str]:
    """Drain each pool of this process with a drain request it has not applied yet (one
    newer than the process; an older one is only recorded: every client here is newer).
    Returns the aliases drained."""
    from pooled_clients.handler import pools

    drained = []
    for alias, request in _drain_requests().items():
        if _applied.get(alias, {}).get("id") == request["id"]:
            continue
        drained_at = None
        if float(request.get("requested_at") or 0) >= _process_started:
            try:
                pools.drain(alias)
            except Exception as exc:  # a misconfigured pool: nothing of it to drain
                from pooled_clients.masking import mask_exception

                logger.warning("Draining pool %r failed: %s", alias, mask_exception(exc))
            else:
                drained_at = time.time()
                drained.append(alias)
                logger.info("Drained pool %r (fleet-wide drain %s).", alias, request["id"])
        _applied[alias] = {"id": request["id"], "drained_at": drained_at}
    return drained


# --------------------------------------------------------------------------- database


def _publish_database(snapshot: dict[str, Any]) -> None:
    from django.db import IntegrityError

    from pooled_clients.models import WorkerStatus

    row = WorkerStatus.objects.filter(host=snapshot["host"], pid=snapshot["pid"])
    values = {"published_at": snapshot["published_at"], "payload": json.dumps(snapshot)}
    # Single autocommit statements rather than update_or_create's transaction: no lock is
    # held between a read and a write (SQLite would fail such an upgrade with "locked").
    if not row.update(**values):
        try:
            WorkerStatus.objects.create(host=snapshot["host"], pid=snapshot["pid"], **values)
        except IntegrityError:  # a pid reused on this host since the last clean-up
            row.update(**values)
    # Rows of workers gone long ago are removed by whoever publishes next.
    WorkerStatus.objects.filter(published_at__lt=snapshot["published_at"] - 10 * _max_age()
                                ).delete()


def _withdraw_database(host: str, pid: int) -> None:
    from django.db import connections

    from pooled_clients.models import WorkerStatus

    try:
        WorkerStatus.objects.filter(host=host, pid=pid).delete()
    finally:
        connections.close_all()  # this thread's connections


def _read_database(oldest: float) -> list[dict[str, Any]]:
    from pooled_clients.models import WorkerStatus

    rows = WorkerStatus.objects.filter(published_at__gte=oldest).values_list("payload", flat=True)
    return [_loads(payload) for payload in rows]


def _loads(payload: Any) -> Any:
    try:
        return json.loads(payload)
    except (TypeError, ValueError, RecursionError):
        return None  # counted as malformed by the reader


# --------------------------------------------------------------------------- cache


def _publish_cache(alias: str, snapshot: dict[str, Any]) -> None:
    from django.core.cache import caches

    cache = caches[alias]
    name = f"{snapshot['host']}:{snapshot['pid']}"
    max_age = _max_age()
    cache.set(_KEY_PREFIX + name, snapshot, timeout=max_age * 2)
    # The index is read-modify-write: a concurrent publisher may drop this entry, and the
    # next round (one interval later) puts it back.
    with _index_lock:
        index = cache.get(_INDEX_KEY)
        index = dict(index) if isinstance(index, Mapping) else {}
        now = snapshot["published_at"]
        index = {key: at for key, at in index.items()
                 if isinstance(key, str) and isinstance(at, int | float) and at >= now - max_age}
        index[name] = now
        cache.set(_INDEX_KEY, index, timeout=max_age * 10)


def _withdraw_cache(alias: str, host: str, pid: int) -> None:
    from django.core.cache import caches

    cache = caches[alias]
    name = f"{host}:{pid}"
    cache.delete(_KEY_PREFIX + name)
    with _index_lock:
        index = cache.get(_INDEX_KEY)
        if isinstance(index, Mapping) and name in index:
            cache.set(_INDEX_KEY, {k: v for k, v in index.items() if k != name},
                      timeout=_max_age() * 10)


def _read_cache(alias: str, oldest: float) -> list[dict[str, Any]]:
    from django.core.cache import caches

    cache = caches[alias]
    index = cache.get(_INDEX_KEY)
    if not isinstance(index, Mapping):
        return []
    found = cache.get_many([_KEY_PREFIX + name for name in index if isinstance(name, str)])
    # The reader validates each entry (and counts the malformed ones) and ages them out.
    return list(found.values())
