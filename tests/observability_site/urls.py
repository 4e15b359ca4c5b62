import os
import time

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.http import HttpRequest, JsonResponse
from django.urls import path

from pooled_clients import pools
from pooled_clients.metrics import metrics_view
from tests.urls import health


def work(request: HttpRequest) -> JsonResponse:
    """Use one client of every pool, holding it ``?hold=`` seconds."""
    hold = float(request.GET.get("hold", "0"))
    for alias in pools:
        with pools[alias].connection() as client:
            if hasattr(client, "execute"):
                client.execute("select 1")
            time.sleep(hold)
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health),
    path("work/", work, name="work"),
    path("slow/", work, name="slow"),
    path("metrics", metrics_view),
    # gunicorn serves no static files: the pages are styled as in production.
    path("static/<path:path>", serve_static, {"insecure": True}),
]
