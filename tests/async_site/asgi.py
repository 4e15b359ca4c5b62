"""ASGI entry point: ``uvicorn tests.async_site.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.async_site.settings")

application = get_asgi_application()

# The site has no database: drop django.db's per-request receivers, which are sync and
# would cost every request two trips through asgiref's thread.
from django.core import signals  # noqa: E402
from django.db import close_old_connections, reset_queries  # noqa: E402

signals.request_started.disconnect(reset_queries)
signals.request_started.disconnect(close_old_connections)
signals.request_finished.disconnect(close_old_connections)
