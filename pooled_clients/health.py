"""django-health-check 4.x checks, one per pool, and a view that is terse for the public.

    from pooled_clients.health import HealthCheckView, pool_checks

    urlpatterns = [path("health/", HealthCheckView.as_view(checks=pool_checks()))]

A pool is unhealthy when it cannot reach its service within ``HEALTH["TIMEOUT"]``: its idle
client fails validation, opening one fails or is too slow, or the pool is failing fast. A
saturated pool (every client in use) is healthy: saturation shows in the stats.

:class:`HealthCheckView` is django-health-check's view, except that callers who are not
active staff users get the terse form: each check's name and ``OK`` or ``unavailable``,
with the status code, but no target and no error text.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from health_check import views as health_check_views
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceUnavailable

from pooled_clients import conf
from pooled_clients.exceptions import PoolDoesNotExist
from pooled_clients.masking import printable

__all__ = ["HealthCheckView", "PoolHealthCheck", "pool_checks"]


@dataclasses.dataclass(repr=False)
class PoolHealthCheck(HealthCheck):  # type: ignore[misc]
    """Borrow or open one client of ``pools[alias]`` and validate it, within the pool's
    ``HEALTH["TIMEOUT"]``."""

    alias: str

    def __repr__(self) -> str:
        # django-health-check names a check by its repr on its page and in its JSON.
        return f"Pool {printable(self.alias)}"

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
            raise ServiceUnavailable(f"pool {self.alias!r} ({printable(pool.target)}) got no "
                                     f"working client within {timeout:g}s")
        error = outcome[0]
        if error is not None:
            reason = printable(pool.mask(str(error))) or type(error).__name__
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


class _TerseError(HealthCheckException):  # type: ignore[misc]
    """What a caller without details sees of a failed check: one word."""

    message_type = "unavailable"

    def __str__(self) -> str:
        return "unavailable"


class _TerseName:
    """Stands for a check in a terse report: its class name and, when it has one, its
    alias (a pool's alias, a database's or a cache's); none of its other fields."""

    def __init__(self, check: HealthCheck) -> None:
        self._name = type(check).__name__
        alias = getattr(check, "alias", None)
        self._alias = printable(alias) if isinstance(alias, str) else None
        # A pool's check goes by the same name in the terse and the full report.
        self._shown = repr(check) if isinstance(check, PoolHealthCheck) else (
            f"{self._name}(alias={self._alias!r})" if self._alias is not None else self._name)

    def __repr__(self) -> str:
        return self._shown

    @property
    def labels(self) -> dict[str, str]:
        """OpenMetrics labels of the check."""
        labels = {"check": self._name}
        if self._alias is not None:
            labels["alias"] = self._alias
        return labels


class _TerseCheck:
    """Runs a check as it is and reports the terse form of its result."""

    def __init__(self, check: HealthCheck) -> None:
        self.check = check

    async def get_result(self, executor: Any = None) -> HealthCheckResult:
        result = await self.check.get_result(executor)
        error = result.error
        return HealthCheckResult(
            check=_TerseName(self.check),
            error=None if error is None else _TerseError(
                "unavailable", timestamp=getattr(error, "timestamp", None)),
            time_taken=result.time_taken,
        )


class HealthCheckView(health_check_views.HealthCheckView):  # type: ignore[misc]
    """django-health-check's ``HealthCheckView``, terse for the public.

    Every format (HTML, JSON, text, Atom, RSS, OpenMetrics) and the status code stay as
    django-health-check renders them. Callers for whom :meth:`show_details` is false (by
    default anyone but an active staff user) see each check as its class name and alias
    with ``OK`` or ``unavailable``: no target, no error text. The details still go to the
    ``health_check`` logger. ``terse=False`` (``as_view(terse=False)``) shows details to
    everyone; ``terse=True`` to no one.
    """

    #: None: terse unless :meth:`show_details` says otherwise; True or False: always/never.
    terse: bool | None = None
    _details = False

    def show_details(self, request: HttpRequest, user: Any) -> bool:
        """Whether the caller may see targets and error texts: an active staff ``user``
        (None without ``AuthenticationMiddleware``: then every caller gets the terse form)."""
        if self.terse is not None:
            return not self.terse
        return bool(user is not None and user.is_active and user.is_staff)

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        """Decide between details and the terse form, then run the checks."""
        user = None
        if self.terse is None:
            # The view is async: AuthenticationMiddleware's auser() reads the session
            # without blocking the loop.
            auser = getattr(request, "auser", None)
            user = await auser() if auser is not None else getattr(request, "user", None)
        self._details = self.show_details(request, user)
        return await super().get(request, *args, **kwargs)

    def get_checks(self) -> Any:
        """The checks, wrapped so that their results are terse for this request."""
        checks = super().get_checks()
        if self._details:
            return checks
        return (_TerseCheck(check) for check in checks)
