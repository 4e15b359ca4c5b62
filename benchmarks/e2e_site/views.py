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


def redis_pooled_clients(request: HttpRequest) -> HttpResponse:
    from pooled_clients import pools

    with pools["redis"].connection() as r:
        value = r.get("bench")
    return HttpResponse(value or b"")


def redis_connect(request: HttpRequest) -> HttpResponse:
    import redis

    r = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
    try:
        value = r.get("bench")
    finally:
        r.close()
    return HttpResponse(value or b"")


def ws_pooled_clients(request: HttpRequest) -> HttpResponse:
    from pooled_clients import pools

    with pools["ws"].connection() as ws:
        ws.send("ping")
        reply = ws.recv(timeout=10)
    return HttpResponse(reply)


def ws_connect(request: HttpRequest) -> HttpResponse:
    from websockets.sync.client import connect

    with connect(settings.WS_URL, open_timeout=10, compression=None) as ws:
        ws.send("ping")
        reply = ws.recv(timeout=10)
    return HttpResponse(reply)


def _health_check(channel: object) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status)


def grpc_pooled_clients(request: HttpRequest) -> HttpResponse:
    from pooled_clients import pools

    with pools["grpc"].connection() as channel:
        status = _health_check(channel)
    return HttpResponse(str(status))


def grpc_connect(request: HttpRequest) -> HttpResponse:
    import grpc

    with grpc.insecure_channel(settings.GRPC_TARGET) as channel:
        status = _health_check(channel)
    return HttpResponse(str(status))
