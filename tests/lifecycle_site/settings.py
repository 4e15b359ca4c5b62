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

POOLED_CLIENTS = {
    "pg": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {
            "conninfo": os.environ.get("LIFECYCLE_PG_CONNINFO", ""),
            "application_name": os.environ.get("LIFECYCLE_APP_NAME", "lifecycle"),
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pooled_clients": {"handlers": ["console"], "level": "DEBUG"}},
}
