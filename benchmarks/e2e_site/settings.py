"""Settings for the end-to-end benchmark site.

Read from the environment, set by ``benchmarks.e2e``:

- ``BENCH_PG_CONNINFO``: postgresql:// URL of the benchmark database;
- ``BENCH_UPSTREAM_URL``: base URL of the local HTTP upstream;
- ``BENCH_POOL_SIZE``: connections per worker for both pools (the worker's thread count);
- ``BENCH_WITH_POOLED_CLIENTS``: "1" to install pooled_clients;
- ``BENCH_REDIS_URL``, ``BENCH_WS_URL``, ``BENCH_GRPC_TARGET``: the local Redis, WebSocket echo
  and gRPC health servers (a pool is configured for each one given).
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

CONNINFO = os.environ.get("BENCH_PG_CONNINFO", "postgresql://app@127.0.0.1:5432/postgres")
UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8001/")
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "4"))
WITH_POOLED_CLIENTS = os.environ.get("BENCH_WITH_POOLED_CLIENTS", "1") == "1"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
WS_URL = os.environ.get("BENCH_WS_URL", "")
GRPC_TARGET = os.environ.get("BENCH_GRPC_TARGET", "")

_pg: dict[str, Any] = conninfo_to_dict(CONNINFO)

DEBUG = False
SECRET_KEY = "benchmarks-e2e-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.e2e_site.urls"
WSGI_APPLICATION = "benchmarks.e2e_site.wsgi.application"
MIDDLEWARE: list[str] = []
INSTALLED_APPS = ["pooled_clients"] if WITH_POOLED_CLIENTS else []
LOGGING_CONFIG = None

# Django's own pool (Django >= 5.1 with psycopg_pool): same size as ours.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.get("dbname", "postgres"),
        "USER": _pg.get("user", ""),
        "PASSWORD": _pg.get("password", ""),
        "HOST": _pg.get("host", ""),
        "PORT": str(_pg.get("port", "")),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "pool": {"min_size": POOL_SIZE, "max_size": POOL_SIZE},
            "application_name": "bench_e2e_django",
        },
    }
}

POOLED_CLIENTS = {
    "db": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {
            "conninfo": CONNINFO,
            "autocommit": True,
            "application_name": "bench_e2e_pooled_clients",
        },
        "MIN_SIZE": POOL_SIZE,
        "MAX_SIZE": POOL_SIZE,
    },
    "upstream": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": UPSTREAM_URL.rstrip("/") + "/", "timeout": 10},
        "MAX_SIZE": POOL_SIZE,
    },
}

if REDIS_URL:
    POOLED_CLIENTS["redis"] = {
        "BACKEND": "pooled_clients.backends.redis.RedisBackend",
        "OPTIONS": {"url": REDIS_URL, "socket_timeout": 10},
        "MAX_SIZE": POOL_SIZE,
    }
if WS_URL:
    POOLED_CLIENTS["ws"] = {
        "BACKEND": "pooled_clients.backends.websocket.WebSocketBackend",
        "OPTIONS": {"url": WS_URL},
        "MAX_SIZE": POOL_SIZE,
    }
if GRPC_TARGET:
    POOLED_CLIENTS["grpc"] = {
        "BACKEND": "pooled_clients.backends.grpc.GRPCChannelBackend",
        "OPTIONS": {"target": GRPC_TARGET},
        "MAX_SIZE": POOL_SIZE,
    }
