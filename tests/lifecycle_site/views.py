"""Views answering which process and which server session served the request."""

import os
import time

from django.http import HttpRequest, JsonResponse

from pooled_clients import pools


def pid(request: HttpRequest) -> JsonResponse:
    """``pg_backend_pid()`` of the pooled connection used, after ``?sleep=`` seconds."""
    pool = pools["pg"]
    sleep = float(request.GET.get("sleep", "0"))
    with pool.connection() as conn:
        row = conn.execute("select pg_backend_pid(), pg_sleep(%s)", [sleep]).fetchone()
    assert row is not None
    stats = pool.stats()
    return JsonResponse({
        "worker_pid": os.getpid(),
        "backend_pid": row[0],
        "pool_pid": stats.pid,
        "acquired_total": stats.acquired_total,
        "created_total": stats.created_total,
    })


def grpc_health(request: HttpRequest) -> JsonResponse:
    """A ``Health/Check`` call on the pooled channel of pool ``grpc``, held ``?sleep=`` s."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pool = pools["grpc"]
    with pool.connection() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5)
        time.sleep(float(request.GET.get("sleep", "0")))
    stats = pool.stats()
    return JsonResponse({
        "worker_pid": os.getpid(),
        "pool_pid": stats.pid,
        "status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
        "created_total": stats.created_total,
    })
