"""App configuration: wires settings changes and shutdown; opens nothing."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(POOLED_CLIENTS=...) must not leave pools built from the old value.
    if setting == "POOLED_CLIENTS":
        from pooled_clients.handler import pools

        pools.reload()


class PooledClientsConfig(AppConfig):
    """``ready()`` runs for every management command, under the autoreloader twice and in a
    ``--preload`` master: it registers hooks only, and never touches the network."""

    name = "pooled_clients"
    verbose_name = "Pooled clients"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from pooled_clients import checks, lifecycle

        checks.register()
        setting_changed.connect(_on_setting_changed, dispatch_uid="pooled_clients_settings")
        lifecycle.install()
