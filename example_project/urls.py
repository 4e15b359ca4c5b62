"""URLs of the example site."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import URLPattern, URLResolver, path, re_path

from example_project import views
from pooled_clients.health import HealthCheckView, pool_checks
from pooled_clients.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("warehouse/", views.warehouse, name="warehouse"),
    path("payments/", views.payments, name="payments"),
    path("async/", views.overview, name="overview"),
    # Django's own database plus every pool whose HEALTH["CRITICAL"] is true; terse (status
    # code, names, OK/unavailable) for anyone but staff.
    path("health/", HealthCheckView.as_view(
        checks=["health_check.checks.Database", *pool_checks()]), name="health"),
    # Prometheus scrapes this; POOLED_CLIENTS_METRICS_ACCESS says who may (default: anyone).
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    # The demo serves the admin's CSS itself; a real deployment lets the web server (or
    # whitenoise) serve the output of collectstatic.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
