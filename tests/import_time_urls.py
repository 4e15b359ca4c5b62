"""The documented URLconf: the health checks are listed once, when it is imported."""

from django.contrib import admin
from django.urls import path
from health_check.views import HealthCheckView

from pooled_clients.health import pool_checks

CHECKS = pool_checks()

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", HealthCheckView.as_view(checks=CHECKS)),
]
