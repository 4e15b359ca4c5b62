"""A tiny ASGI site served by a real uvicorn worker in the async tests.

Configured from the environment by the test that starts it: ``ASYNC_SITE_CONNINFO``
(PostgreSQL), ``ASYNC_SITE_APP_NAME`` (application_name of its sessions) and
``ASYNC_SITE_MAX_SIZE``; with ``ASYNC_SITE_WS_URL`` also a WebSocket pool ``ws`` of
``ASYNC_SITE_WS_MAX_SIZE`` (4) clients.
"""

import os

SECRET_KEY = "async-site-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["pooled_clients"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.async_site.urls"
DATABASES: dict[str, dict[str, str]] = {}
POOLED_CLIENTS = {
    "db": {
        "BACKEND": "pooled_clients.backends.postgres.AsyncPostgresBackend",
        "OPTIONS": {
            "conninfo": os.environ.get("ASYNC_SITE_CONNINFO", ""),
            "application_name": os.environ.get("ASYNC_SITE_APP_NAME", "async-site"),
            "autocommit": True,
        },
        "MAX_SIZE": int(os.environ.get("ASYNC_SITE_MAX_SIZE", "10")),
        "TIMEOUT": 30.0,
    },
}

if os.environ.get("ASYNC_SITE_WS_URL"):
    POOLED_CLIENTS["ws"] = {
        "BACKEND": "pooled_clients.backends.websocket.AsyncWebSocketBackend",
        "OPTIONS": {"url": os.environ["ASYNC_SITE_WS_URL"]},
        "MAX_SIZE": int(os.environ.get("ASYNC_SITE_WS_MAX_SIZE", "4")),
        "TIMEOUT": 30.0,
    }
