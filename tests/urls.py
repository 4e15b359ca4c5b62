from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path
from health_check.views import HealthCheckView

from pooled_clients import health as pooled_health
from pooled_clients.health import pool_checks
from pooled_clients.metrics import metrics_view


async def health(request: HttpRequest) -> HttpResponse:
    # Checks are listed per request: tests change POOLED_CLIENTS with override_settings.
    response: HttpResponse = await HealthCheckView.as_view(checks=pool_checks())(request)
    return response


async def terse_health(request: HttpRequest) -> HttpResponse:
    """The project's own view: terse unless the caller is staff."""
    response: HttpResponse = await pooled_health.HealthCheckView.as_view(
        checks=["health_check.checks.Database", *pool_checks()])(request)
    return response


urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health),
    path("pooled-health/", terse_health),
    path("metrics", metrics_view),
]
