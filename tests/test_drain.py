"""Fleet-wide drains: ``manage.py pool_drain`` and the admin's Drain button, through a real
shared store (Redis through Django's RedisCache)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from devservers.http import UpstreamServer
from devservers.redis import RedisServer
from pooled_clients import pools, shared_status
from tests.waiting import wait_until

Configure = Callable[[str, dict[str, Any]], None]
URL = "/admin/pooled_clients/poolstatus/"
DRAIN_URL = URL + "drain/"


def _http(upstream: UpstreamServer) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url}}


@pytest.fixture
def redis_store(settings: Any, redis_server: RedisServer) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                   "LOCATION": redis_server.url, "KEY_PREFIX": f"drain-{os.getpid()}"},
    }
    settings.POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "shared"}
    settings.POOLED_CLIENTS_SHARED_STATUS_INTERVAL = 0.2
    settings.POOLED_CLIENTS_SHARED_STATUS_MAX_AGE = 5.0


def test_pool_drain_all_workers_waits_for_each_worker_to_confirm(
        settings: Any, redis_store: None, upstream: UpstreamServer,
        pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("api", _http(upstream))
    pools["api"].check()
    shared_status.start()
    wait_until(lambda: any(w["pid"] == os.getpid() for w in shared_status.read()), timeout=5)
    out = io.StringIO()
    call_command("pool_drain", "api", "--all-workers", "--timeout", "5", stdout=out)
    assert f"confirmed: host {shared_status.host()} pid {os.getpid()}" in out.getvalue()
    assert pools["api"].stats().drains_total == 1  # drained once, not again at publication
    # A worker that never confirms (it died without withdrawing) fails the command.
    from django.core.cache import caches

    caches["shared"].set("pooled_clients:status:gone:4242", {
        "host": "gone", "pid": 4242, "published_at": 9e12, "pools": [{"alias": "api"}]})
    index = dict(caches["shared"].get("pooled_clients:status:index"))
    caches["shared"].set("pooled_clients:status:index", {**index, "gone:4242": 9e12})
    err = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("pool_drain", "api", "--all-workers", "--timeout", "0.5", stdout=out,
                     stderr=err)
    assert caught.value.returncode == 1
    assert "no confirmation: host gone pid 4242" in err.getvalue()
    shared_status.withdraw()


def test_pool_drain_without_shared_status_reaches_only_this_process(
        upstream: UpstreamServer, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("api", _http(upstream))
    with pytest.raises(CommandError, match="only its own process") as caught:
        call_command("pool_drain", "api", "--all-workers")
    assert caught.value.returncode == 1
    assert pools["api"].stats().drains_total == 1
    with pytest.raises(CommandError) as unknown:
        call_command("pool_drain", "nope")
    assert unknown.value.returncode == 2


def _staff(django_user_model: Any, username: str, *codenames: str) -> Any:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.mark.django_db
def test_drain_button_needs_the_permission_and_csrf(
        settings: Any, redis_store: None, upstream: UpstreamServer, django_user_model: Any,
        pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("api", _http(upstream))
    viewer = Client(enforce_csrf_checks=True)
    viewer.force_login(_staff(django_user_model, "viewer", "view_pool_status"))
    page = viewer.get(URL).content.decode()
    assert 'data-alias="api"' in page and "Drain</button>" not in page
    token = viewer.cookies["csrftoken"].value
    assert viewer.post(DRAIN_URL, {"alias": "api", "csrfmiddlewaretoken": token}
                       ).status_code == 403
    assert pools["api"].stats().drains_total == 0

    drainer = Client(enforce_csrf_checks=True)
    drainer.force_login(_staff(django_user_model, "drainer", "view_pool_status", "drain_pool"))
    page = drainer.get(URL).content.decode()
    assert "Drain</button>" in page
    assert drainer.post(DRAIN_URL, {"alias": "api"}).status_code == 403  # no CSRF token
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    response = drainer.post(DRAIN_URL, {"alias": "api", "csrfmiddlewaretoken": token[1]})
    assert response.status_code == 302
    assert pools["api"].stats().drains_total == 1
    # This worker confirms at its next publication and shows when it drained.
    shared_status.start()

    def drained_row() -> bool:
        mine = [w for w in shared_status.read() if w["pid"] == os.getpid()]
        return bool(mine) and bool(mine[0]["drains"].get("api", {}).get("drained_at"))

    wait_until(drained_row, timeout=5)
    assert 'class="pc-drained">' in drainer.get(URL).content.decode()
    assert "s ago" in drainer.get(URL).content.decode().split('class="pc-drained">')[1][:20]
    shared_status.withdraw()


@pytest.mark.django_db
def test_superuser_sees_the_drain_button(admin_client: Client, upstream: UpstreamServer,
                                         pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("api", _http(upstream))
    assert "Drain</button>" in admin_client.get(URL).content.decode()
    response = admin_client.post(DRAIN_URL, {"alias": "api"}, follow=True)
    assert "in this process only" in response.content.decode()
