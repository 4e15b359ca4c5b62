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
        _connect_observability()


def _connect_observability() -> None:
    """Shared status, metrics and warm-up start in a serving process (server hooks, or its
    first request; never here: ready() also runs for migrate, check and in a --preload
    master). Off: nothing."""
    from django.core.signals import request_started

    from pooled_clients import conf

    if conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS") is not None:
        from pooled_clients import shared_status

        request_started.connect(shared_status.on_request_started,
                                dispatch_uid="pooled_clients_shared_status")
    if conf.get_process_setting("POOLED_CLIENTS_WARM_UP") is True:
        from pooled_clients import lifecycle

        # Servers without a hook of ours (runserver's serving child, uvicorn, daphne).
        request_started.connect(lifecycle.warm_up, dispatch_uid="pooled_clients_warm_up")
    if conf.get_process_setting("POOLED_CLIENTS_METRICS") is True:
        from pooled_clients import metrics

        request_started.connect(metrics.on_request_started,
                                dispatch_uid="pooled_clients_metrics")
    if conf.get_process_setting("POOLED_CLIENTS_OPENTELEMETRY") is True:
        try:
            from pooled_clients import otel
        except ImportError:
            return  # pooled_clients.E023 says what is missing
        otel.install()  # instruments only: the provider may be set later, by the app
        request_started.connect(otel.on_request_started, dispatch_uid="pooled_clients_otel")
