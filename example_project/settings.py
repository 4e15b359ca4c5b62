"""Settings of the example site.

Django's own database is SQLite; the pools reach services this site does not own: a PostgreSQL
"warehouse" and a "payments" HTTP API. ``example_project.run`` starts both on 127.0.0.1 and passes
their addresses in the environment:

- ``EXAMPLE_WAREHOUSE_URL``: ``postgresql://`` URL of the warehouse database, without the
  password;
- ``EXAMPLE_WAREHOUSE_PASSWORD``: its password (in OPTIONS["password"], which Django's debug
  page masks, unlike a password inside the URL);
- ``EXAMPLE_PAYMENTS_URL``: base URL of the payments API;
- ``EXAMPLE_PAYMENTS_TOKEN``: the API token (sent as a header, never shown anywhere);
- ``EXAMPLE_SQLITE_PATH``: where Django's own database lives;
- ``EXAMPLE_ASGI_URL``: where uvicorn serves the async page.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-project-not-secret")
# DEBUG stays off even in the demo: Django's debug page would print POOLED_CLIENTS, and its
# secret filter does not know that "conninfo" or a header holds a password.
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "health_check",
    "pooled_clients",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "/static/"

WAREHOUSE_URL = os.environ.get("EXAMPLE_WAREHOUSE_URL", "postgresql://app@127.0.0.1:5432/app")
WAREHOUSE_PASSWORD = os.environ.get("EXAMPLE_WAREHOUSE_PASSWORD")
PAYMENTS_URL = os.environ.get("EXAMPLE_PAYMENTS_URL", "http://127.0.0.1:8001/")
PAYMENTS_TOKEN = os.environ.get("EXAMPLE_PAYMENTS_TOKEN", "")
ASGI_URL = os.environ.get("EXAMPLE_ASGI_URL", "http://127.0.0.1:8001/")

# Sizes are per process: with gunicorn.conf.py's 2 workers x 4 threads, at most 2 x 4 = 8
# warehouse connections are open, whatever the load. One client per thread means a request
# never waits for a client unless a view holds one across another checkout.
POOLED_CLIENTS = {
    "warehouse": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {
            "conninfo": WAREHOUSE_URL,
            "password": WAREHOUSE_PASSWORD,
            "autocommit": True,
            "application_name": "example-warehouse",
        },
        "MIN_SIZE": 1,
        "MAX_SIZE": 4,
        "TIMEOUT": 2.0,
        "CONNECT_TIMEOUT": 2.0,
        "LEAK_TIMEOUT": 10.0,
    },
    # The same database for async views: psycopg AsyncConnections, served on the event loop.
    "warehouse_async": {
        "BACKEND": "pooled_clients.backends.postgres.AsyncPostgresBackend",
        "OPTIONS": {
            "conninfo": WAREHOUSE_URL,
            "password": WAREHOUSE_PASSWORD,
            "autocommit": True,
            "application_name": "example-warehouse-async",
        },
        "MAX_SIZE": 4,
        "TIMEOUT": 2.0,
        "CONNECT_TIMEOUT": 2.0,
    },
    "payments": {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {
            "base_url": PAYMENTS_URL,
            "timeout": 5,
            "retries": 2,
            "backoff_factor": 0.2,
            "headers": {"Authorization": f"Bearer {PAYMENTS_TOKEN}"},
            "health_path": "health",
        },
        "MAX_SIZE": 4,
        "TIMEOUT": 2.0,
        "CONNECT_TIMEOUT": 2.0,
    },
}
POOLED_CLIENTS_SHUTDOWN_TIMEOUT = 5.0
# Each gunicorn worker has its own pools: publish every worker's numbers (in Django's own
# database) so the admin's Pool status page shows all of them, whichever worker serves it.
POOLED_CLIENTS_SHARED_STATUS = "database"
# Prometheus metrics at /metrics (the launcher sets PROMETHEUS_MULTIPROC_DIR, so a scrape
# served by any worker reports the pools of all of them).
POOLED_CLIENTS_METRICS = True

# Every line says when, which process, how serious and who: the format of gunicorn's own lines,
# which the launcher and uvicorn use too. Warnings from anywhere (django.request's 404s and
# 500s included) and the pools' INFO lines go to stderr.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "timed": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "timed"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"pooled_clients": {"level": "INFO"}},
}
