"""django-health-check 4.x checks, one per pool.

    from health_check.views import HealthCheckView
    from pooled_clients.health import pool_checks

    urlpatterns = [path("health/", HealthCheckView.as_view(checks=pool_checks()))]

A pool is unhealthy when it cannot reach its service within ``HEALTH["TIMEOUT"]``: its idle
client fails validation, opening one fails or is too slow, or the pool is failing fast. A
saturated pool (every client in use) is healthy: saturation shows in the stats.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from pooled_clients import conf
from pooled_clients.exceptions import PoolDoesNotExist

__all__ = ["PoolHealthCheck", "pool_checks"]


@dataclasses.dataclass(repr=False)
class PoolHealthCheck(HealthCheck):  # type: ignore[misc]
    """Borrow or open one client of ``pools[alias]`` and validate it, within the pool's
    ``HEALTH["TIMEOUT"]``."""

    alias: str

    def __repr__(self) -> str:
        # django-health-check names a check by its repr on its page and in its JSON.
        return f"Pool {self.alias}"

    def __post_init__(self) -> None:
        # health-check's own bound (4.x adds a second to it); ours is enforced in run().
        self.timeout = datetime.timedelta(seconds=self._health_timeout())

    def _health_timeout(self) -> float:
        definition = conf.pool_definitions().get(self.alias)
        try:
            return conf.parse_definition(self.alias, definition).health_timeout
        except ImproperlyConfigured:
            return float(conf._HEALTH_KEYS["TIMEOUT"].default)

    def run(self) -> None:
        """Raise ``ServiceUnavailable`` (with a masked reason) when the pool cannot serve."""
        from pooled_clients.handler import pools

        try:
            pool = pools[self.alias]
        except PoolDoesNotExist:
            raise ServiceUnavailable(f"no pool {self.alias!r} is configured") from None
        except ImproperlyConfigured:
            raise ServiceUnavailable(
                f"pool {self.alias!r} is misconfigured (see manage.py check)") from None
        timeout = self._health_timeout()
        outcome: list[BaseException | None] = []

        def probe() -> None:
            try:
                pool.check(timeout=timeout, wait=False)
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        # A sync check is not interrupted by the view's timeout: the thread and its join
        # bound the check itself even if a backend overruns its deadline.
        thread = threading.Thread(target=probe, name=f"pooled_clients-health-{self.alias}",
                                  daemon=True)
        thread.start()
        thread.join(timeout)
        if not outcome:
            raise ServiceUnavailable(
                f"pool {self.alias!r} ({pool.target}) got no working client within {timeout:g}s")
        error = outcome[0]
        if error is not None:
            reason = pool.mask(str(error)) or type(error).__name__
            raise ServiceUnavailable(f"{type(error).__name__}: {reason}")


def pool_checks() -> list[tuple[type[PoolHealthCheck], dict[str, Any]]]:
    """``[(PoolHealthCheck, {"alias": a}), ...]`` for every pool with ``HEALTH["CRITICAL"]``.

    Called when the URLconf is imported, so it never raises: a misconfigured pool is listed
    (its check then fails, naming it) unless its own ``HEALTH["CRITICAL"]`` says False."""
    checks: list[tuple[type[PoolHealthCheck], dict[str, Any]]] = []
    for alias, definition in conf.pool_definitions().items():
        try:
            critical = conf.parse_definition(alias, definition).health_critical
        except Exception:
            health = definition.get("HEALTH") if isinstance(definition, Mapping) else None
            flag = health.get("CRITICAL") if isinstance(health, Mapping) else None
            critical = flag if isinstance(flag, bool) else True
        if critical:
            checks.append((PoolHealthCheck, {"alias": alias}))
    return checks
