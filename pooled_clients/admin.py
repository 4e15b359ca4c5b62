"""The admin "Pool status" page: every pool of this process (and of every worker when
shared status is on), refreshed in place every few seconds."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from pooled_clients import conf, shared_status, status_data
from pooled_clients.models import PoolStatus

PERMISSION = "pooled_clients.view_pool_status"
DRAIN_PERMISSION = "pooled_clients.drain_pool"
#: Milliseconds between two refreshes of the page.
REFRESH_MS = 3000


@admin.register(PoolStatus)
class PoolStatusAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A page, not a list of rows: the changelist renders the pools' stats."""

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and user.has_perm(PERMISSION))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_drain_permission(self, request: HttpRequest) -> bool:
        """Staff with ``pooled_clients.drain_pool`` (superusers have it) see the Drain
        buttons and may use them."""
        return self.has_view_permission(request) and bool(
            request.user.has_perm(DRAIN_PERMISSION))

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.changelist_view),
                 name="{}_{}_changelist".format(*info)),
            path("drain/", self.admin_site.admin_view(require_POST(self.drain_view)),
                 name="{}_{}_drain".format(*info)),
        ]

    def drain_view(self, request: HttpRequest) -> HttpResponse:
        """POST ``alias``: drain that pool here and, with shared status on, on every worker
        (each drains at its next publication and shows when on the all-workers table)."""
        if not self.has_drain_permission(request):
            raise PermissionDenied
        alias = request.POST.get("alias", "")
        changelist = reverse(f"{self.admin_site.name}:pooled_clients_poolstatus_changelist")
        if alias not in conf.pool_definitions():
            messages.error(request, f"No pool {alias!r} to drain.")
            return HttpResponseRedirect(changelist)
        from pooled_clients.handler import pools

        if shared_status.enabled():
            shared_status.request_drain(alias)
            interval = conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL")
            messages.success(request, f"Drain of pool {alias!r} requested: every worker drains "
                                      f"within {interval:g}s and shows when it did below.")
        else:
            pools.drain(alias)
            messages.warning(request, f"Drained pool {alias!r} in this process only: "
                                      "POOLED_CLIENTS_SHARED_STATUS is off, so no other worker "
                                      "can be reached.")
        return HttpResponseRedirect(changelist)

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Overriding the changelist skips ModelAdmin's own permission check.
        if not self.has_view_permission(request):
            raise PermissionDenied
        data = status_data.status_data()
        response_format = request.GET.get("format")
        if response_format == "json":
            return JsonResponse(data, encoder=DjangoJSONEncoder)
        context = {
            **self.admin_site.each_context(request),
            "title": "Pool status",
            "opts": self.opts,
            "status": status_data.decorate(data),
            "refresh_ms": REFRESH_MS,
            "can_drain": self.has_drain_permission(request),
            "drain_url": reverse(f"{self.admin_site.name}:pooled_clients_poolstatus_drain"),
            **(extra_context or {}),
        }
        if response_format == "fragment":
            # What the page's script swaps in: the same template, so one renderer.
            return TemplateResponse(request, "pooled_clients/_status.html", context)
        return TemplateResponse(request, "pooled_clients/pool_status.html", context)
