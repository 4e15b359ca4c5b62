"""URLs of the example site."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import URLPattern, URLResolver, path, re_path
from health_check.views import HealthCheckView

from example_project import views

try:
    from pooled_clients.health import pool_checks
except ImportError:  # pragma: no cover - older pooled_clients without the health extra
    pool_checks = None


def _health_checks() -> list[Any]:
    checks: list[Any] = ["health_check.checks.Database"]
    if pool_checks is not None:
        checks += pool_checks()
    return checks


urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("warehouse/", views.warehouse, name="warehouse"),
    path("payments/", views.payments, name="payments"),
    path("health/", HealthCheckView.as_view(checks=_health_checks()), name="health"),
    path("admin/", admin.site.urls),
    # The demo serves the admin's CSS itself; a real deployment lets the web server (or
    # whitenoise) serve the output of collectstatic.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
