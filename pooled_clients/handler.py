"""``pools``: this process's pools by alias, built from ``settings.POOLED_CLIENTS``.

Shaped like Django's ``BaseConnectionHandler`` (``caches``, ``connections``), except that
pools are shared by every thread of the process and survive forks by starting afresh.
A pool is built on its first access in a process: ``django.setup()`` imports no client
library and opens nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from pooled_clients import conf, fork
from pooled_clients.core import ClientPool
from pooled_clients.exceptions import PoolDoesNotExist
from pooled_clients.stats import PoolStats

__all__ = ["PoolHandler", "pools"]

logger = logging.getLogger("pooled_clients")


class PoolHandler:
    """Maps aliases to pools. ``pools[alias]``, ``alias in pools``, ``iter(pools)``."""

    settings_name = "POOLED_CLIENTS"

    def __init__(self) -> None:
        self._pools: dict[str, ClientPool[Any]] = {}
        self._lock = threading.RLock()

    def __getitem__(self, alias: str) -> ClientPool[Any]:
        try:
            return self._pools[alias]
        except KeyError:
            return self._build(alias)

    def _build(self, alias: str) -> ClientPool[Any]:
        with self._lock:
            pool = self._pools.get(alias)
            if pool is not None:
                return pool
            definitions = conf.pool_definitions()
            if alias not in definitions:
                known = ", ".join(repr(a) for a in definitions) or "none"
                raise PoolDoesNotExist(
                    f"No pool {alias!r} in settings.POOLED_CLIENTS (configured: {known})."
                )
            pool = self.create_pool(alias, definitions[alias])
            self._pools[alias] = pool
            return pool

    def create_pool(self, alias: str, definition: Any) -> ClientPool[Any]:
        """Build the pool for one definition (raises ``ImproperlyConfigured`` if it is bad)."""
        parsed = conf.parse_definition(alias, definition)
        if parsed.endpoints:
            from pooled_clients.endpoints import EndpointPool

            return EndpointPool.from_definition(parsed)
        backend = parsed.backend_class(alias, parsed.options)
        if parsed.backend_class.is_async:
            from pooled_clients.aio import AsyncPool
            from pooled_clients.backends.base import AsyncClientBackend

            if not isinstance(backend, AsyncClientBackend):
                from django.core.exceptions import ImproperlyConfigured

                raise ImproperlyConfigured(
                    f"POOLED_CLIENTS[{alias!r}]['BACKEND'] {parsed.backend_path!r} sets "
                    "is_async but does not subclass "
                    "pooled_clients.backends.base.AsyncClientBackend."
                )
            return AsyncPool(alias, backend, parsed.settings, backend_path=parsed.backend_path)
        from pooled_clients.pool import Pool

        return Pool(alias, backend, parsed.settings, backend_path=parsed.backend_path)

    def __contains__(self, alias: object) -> bool:
        return alias in conf.pool_definitions()

    def __iter__(self) -> Iterator[str]:
        return iter(list(conf.pool_definitions()))

    def __len__(self) -> int:
        return len(conf.pool_definitions())

    def all(self) -> list[ClientPool[Any]]:
        """Every configured pool (building those not yet used)."""
        return [self[alias] for alias in self]

    def built(self) -> list[ClientPool[Any]]:
        """The pools already built in this process (nothing is built by calling this)."""
        return list(self._pools.values())

    def stats(self) -> dict[str, PoolStats]:
        """alias -> :class:`PoolStats` for every configured pool."""
        return {pool.alias: pool.stats() for pool in self.all()}

    def reload(self) -> None:
        """Build new pools from the current settings on next access; retire the old ones
        without waiting (clients in use close when they are released)."""
        with self._lock:
            old, self._pools = self._pools, {}
        for pool in old.values():
            pool.retire()

    def close_all(self, timeout: float | None = None) -> None:
        """Close every built pool, waiting up to ``timeout`` seconds in all for clients in use
        (default ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT``)."""
        import time

        if timeout is None:
            timeout = float(conf.get_process_setting("POOLED_CLIENTS_SHUTDOWN_TIMEOUT"))
        with self._lock:
            old, self._pools = self._pools, {}
        deadline = time.monotonic() + timeout
        # Every pool stops handing out clients at once, then all wait out one grace period.
        for pool in old.values():
            pool.begin_close()
        for pool in old.values():
            pool.finish_close(deadline)


pools = PoolHandler()


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at fork time; it would never be released here.
    pools._lock = threading.RLock()


fork.on_fork_in_child(_after_fork_in_child)
