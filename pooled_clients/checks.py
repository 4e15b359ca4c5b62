"""System checks: every problem in the settings, reported by ``manage.py check``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks

from pooled_clients import conf


def check_settings(app_configs: Sequence[AppConfig] | None = None,
                   **kwargs: Any) -> list[checks.CheckMessage]:
    """One ``pooled_clients.E0xx`` error or ``W0xx`` warning per problem in
    ``POOLED_CLIENTS`` and ``POOLED_CLIENTS_*``, every pool's at once."""
    return [
        checks.Error(problem.message, id=problem.id) if problem.is_error
        else checks.Warning(problem.message, id=problem.id)
        for problem in conf.validate_all()
    ]


def check_health_app(app_configs: Sequence[AppConfig] | None = None,
                     **kwargs: Any) -> list[checks.CheckMessage]:
    """``pooled_clients.W003`` when the URLconf uses ``pooled_clients.health`` but
    ``"health_check"`` is not installed: django-health-check's HTML page then fails with
    ``TemplateDoesNotExist``."""
    from django.urls import get_resolver

    try:
        # Import the URLconf as Django's own URL checks do; its errors are theirs to report.
        get_resolver().url_patterns  # noqa: B018
    except Exception:
        return []
    if "pooled_clients.health" not in sys.modules or apps.is_installed("health_check"):
        return []
    return [checks.Warning(
        'The URLconf uses pooled_clients.health but "health_check" is not in INSTALLED_APPS: '
        "the health page's HTML format fails with TemplateDoesNotExist "
        "(health_check/index.html).",
        hint='Add "health_check" to INSTALLED_APPS.',
        id="pooled_clients.W003",
    )]


def register() -> None:
    """Register the checks (idempotent)."""
    checks.register(check_settings, "pooled_clients")
    checks.register(check_health_app, "pooled_clients", checks.Tags.urls)
