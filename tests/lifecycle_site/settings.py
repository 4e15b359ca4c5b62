"""Settings for the lifecycle test site; every knob comes from the environment."""

import os

SECRET_KEY = "lifecycle-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["pooled_clients"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.lifecycle_site.urls"
DATABASES: dict[str, dict[str, str]] = {}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_APP_NAME = os.environ.get("LIFECYCLE_APP_NAME", "lifecycle")


def _app_name_with_pid() -> str:
    """Called for each session: the worker that opens it shows in pg_stat_activity."""
    return f"{_APP_NAME}-{os.getpid()}"


POOLED_CLIENTS = {
    "pg": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {
            "conninfo": os.environ.get("LIFECYCLE_PG_CONNINFO", ""),
            "application_name": (_app_name_with_pid if os.environ.get("LIFECYCLE_APP_PER_PID")
                                 else _APP_NAME),
            "autocommit": True,
        },
        "MIN_SIZE": int(os.environ.get("LIFECYCLE_MIN_SIZE", "0")),
        "MAX_SIZE": 4,
        "TIMEOUT": 10.0,
    },
}
if os.environ.get("LIFECYCLE_GRPC_TARGET"):
    POOLED_CLIENTS["grpc"] = {
        "BACKEND": "pooled_clients.backends.grpc.GRPCChannelBackend",
        "OPTIONS": {"target": os.environ["LIFECYCLE_GRPC_TARGET"], "health_service": ""},
        "MAX_SIZE": 2,
        "TIMEOUT": 10.0,
    }
POOLED_CLIENTS_SHUTDOWN_TIMEOUT = float(os.environ.get("LIFECYCLE_SHUTDOWN_TIMEOUT", "2.0"))
POOLED_CLIENTS_WARM_UP = os.environ.get("LIFECYCLE_WARM_UP") == "1"
if os.environ.get("LIFECYCLE_REDIS_URL"):
    # Every master and worker shares status (and drain requests) through one Redis.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": os.environ["LIFECYCLE_REDIS_URL"],
                         "KEY_PREFIX": os.environ.get("LIFECYCLE_CACHE_PREFIX", "")}}
    POOLED_CLIENTS_SHARED_STATUS = {"CACHE": "shared"}
    POOLED_CLIENTS_SHARED_STATUS_INTERVAL = float(os.environ.get("LIFECYCLE_INTERVAL", "1.0"))
    POOLED_CLIENTS_SHARED_STATUS_MAX_AGE = 10.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pooled_clients": {"handlers": ["console"], "level": "DEBUG"}},
}
