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

from django.core.exceptions import ImproperlyConfigured

from pooled_clients import conf, fork
from pooled_clients.core import ClientPool
from pooled_clients.exceptions import PoolDoesNotExist
from pooled_clients.masking import mask_exception
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
            _require_installed_app()
            pool = self.create_pool(alias, definitions[alias])
            self._pools[alias] = pool
            return pool

    def create_pool(self, alias: str, definition: Any) -> ClientPool[Any]:
        """Build the pool for one definition. Raises ``ImproperlyConfigured`` if it is bad,
        with the system check's message, or if its backend cannot be built from it."""
        parsed = conf.parse_definition(alias, definition)
        try:
            return self._pool_from(parsed)
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            # A backend's __init__ may refuse what its check_options let through (a custom
            # backend, a file that is gone): still a setting problem, never another error.
            raise ImproperlyConfigured(
                f"POOLED_CLIENTS[{alias!r}]: {parsed.backend_path} cannot be built from its "
                f"OPTIONS: {mask_exception(exc)}"
            ) from exc

    @staticmethod
    def _pool_from(parsed: conf.PoolDefinition) -> ClientPool[Any]:
        alias = parsed.alias
        if parsed.endpoints:
            from pooled_clients.endpoints import EndpointPool

            return EndpointPool.from_definition(parsed)
        if parsed.keys is not None:
            from pooled_clients.keyed import KeyedPool

            return KeyedPool.from_definition(parsed)
        backend = parsed.backend_class.from_options(alias, parsed.options)
        if parsed.backend_class.is_async:
            from pooled_clients.aio import AsyncPool
            from pooled_clients.backends.base import AsyncClientBackend

            if not isinstance(backend, AsyncClientBackend):
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

    def drain(self, alias: str | None = None) -> None:
        """Replace the clients of pool ``alias``, or of every pool built in this process
        (see ``drain()`` on a pool): after a credential rotation or a failover."""
        for pool in [self[alias]] if alias is not None else self.built():
            pool.drain()

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


def _require_installed_app() -> None:
    """Django imports nothing of an app missing from INSTALLED_APPS, so no system check of
    ours can warn about it: the first pool built says so instead of running without its
    checks and shutdown hooks."""
    from django.apps import apps

    if apps.ready and not apps.is_installed("pooled_clients"):
        raise ImproperlyConfigured(
            'POOLED_CLIENTS is set but "pooled_clients" is not in INSTALLED_APPS: add it, so '
            "that manage.py check validates the pools and they close when the process exits."
        )


pools = PoolHandler()


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at fork time; it would never be released here.
    pools._lock = threading.RLock()


fork.on_fork_in_child(_after_fork_in_child)
