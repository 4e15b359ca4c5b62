"""A tiny site served by real gunicorn workers in the observability tests.

Configured from the environment by the test that starts it: ``OBS_DB`` (sqlite file),
``OBS_POOLED_CLIENTS`` and ``OBS_SHARED_STATUS`` (JSON), ``OBS_REDIS`` (the URL of a Redis
server for the ``"shared"`` cache).
"""

import json
import os

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.observability_site.urls"
MIDDLEWARE = [*MIDDLEWARE, "pooled_clients.middleware.PoolAttributionMiddleware"]  # noqa: F405
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("OBS_DB", "/tmp/pooled-clients-obs.sqlite3"),
                         "OPTIONS": {"timeout": 10, "transaction_mode": "IMMEDIATE"}}}
POOLED_CLIENTS = json.loads(os.environ.get("OBS_POOLED_CLIENTS", "{}"))
if os.environ.get("OBS_REDIS"):  # a cache every "host" of a fleet test shares
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": os.environ["OBS_REDIS"]}}
POOLED_CLIENTS_SHARED_STATUS = json.loads(os.environ.get("OBS_SHARED_STATUS", "null"))
POOLED_CLIENTS_SHARED_STATUS_INTERVAL = float(os.environ.get("OBS_SHARED_INTERVAL", "0.5"))
POOLED_CLIENTS_SHARED_STATUS_MAX_AGE = float(os.environ.get("OBS_SHARED_MAX_AGE", "3"))
POOLED_CLIENTS_METRICS = os.environ.get("OBS_METRICS") == "1"
POOLED_CLIENTS_METRICS_INTERVAL = 0.2
