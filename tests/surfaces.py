"""One assertion over every surface that renders a pool: health check, admin JSON page,
``pool_status``, ``pool_check`` and the metrics scrape."""

from __future__ import annotations

from collections.abc import Iterable
from io import StringIO

from django.core.management import call_command
from django.test import Client

ADMIN_URL = "/admin/pooled_clients/poolstatus/"


def _command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def assert_surfaces_show(alias: str, target: str, secrets: Iterable[str],
                         client: Client, admin_client: Client) -> None:
    """Every surface lists ``alias`` as healthy with its masked ``target``, and none
    renders any of ``secrets``."""
    health = client.get("/health/?format=json")
    assert health.status_code == 200, health.content
    assert health.json()[f"Pool {alias}"] == "OK"

    admin = admin_client.get(ADMIN_URL + "?format=json")
    assert admin.status_code == 200
    (shown,) = [p for p in admin.json()["pools"] if p["alias"] == alias]
    assert shown["target"] == target and shown["healthy"] is True
    html = admin_client.get(ADMIN_URL).content.decode()
    assert alias in html

    status = _command("pool_status", alias)
    assert alias in status and target in status
    check = _command("pool_check", alias)
    assert f"{alias}: OK ({target}," in check

    metrics = client.get("/metrics").content.decode()
    assert f'alias="{alias}"' in metrics

    for text in (health.content.decode(), admin.content.decode(), html, status, check, metrics):
        for secret in secrets:
            assert secret not in text, (secret, text[:2000])
