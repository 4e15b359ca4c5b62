"""System checks: every problem in the settings, reported by ``manage.py check``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from pooled_clients import conf


def check_settings(app_configs: Sequence[AppConfig] | None = None,
                   **kwargs: Any) -> list[checks.CheckMessage]:
    """One ``pooled_clients.E0xx`` error per problem in ``POOLED_CLIENTS`` and
    ``POOLED_CLIENTS_*``."""
    return [checks.Error(problem.message, id=problem.id) for problem in conf.validate_all()]


def register() -> None:
    """Register the checks (idempotent)."""
    checks.register(check_settings, "pooled_clients")
