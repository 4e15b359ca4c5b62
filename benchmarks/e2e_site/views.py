"""One query (or one upstream call) per request, each view a different way."""

from __future__ import annotations

import psycopg
import requests
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse

SQL = "SELECT 1"


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def db_pooled_clients(request: HttpRequest) -> HttpResponse:
    from pooled_clients import pools

    with pools["db"].connection() as conn:
        row = conn.execute(SQL).fetchone()
    return HttpResponse(str(row[0] if row else ""))


def db_django(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(SQL)
        row = cursor.fetchone()
    return HttpResponse(str(row[0] if row else ""))


def db_connect(request: HttpRequest) -> HttpResponse:
    with psycopg.connect(
        settings.CONNINFO, autocommit=True, application_name="bench_e2e_connect"
    ) as conn:
        row = conn.execute(SQL).fetchone()
    return HttpResponse(str(row[0] if row else ""))


def http_pooled_clients(request: HttpRequest) -> HttpResponse:
    from pooled_clients import pools

    with pools["upstream"].connection() as http:
        response = http.get("json/x")
        body = response.content
    return HttpResponse(body, status=response.status_code, content_type="application/json")


def http_requests(request: HttpRequest) -> HttpResponse:
    response = requests.get(settings.UPSTREAM_URL.rstrip("/") + "/json/x", timeout=10)
    return HttpResponse(
        response.content, status=response.status_code, content_type="application/json"
    )
