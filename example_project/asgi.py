"""ASGI entry point (uvicorn: ``example_project.asgi:application``).

Django's ASGI handler does not speak the lifespan protocol: run uvicorn with ``--lifespan off``.
Pools close at interpreter exit, waiting up to POOLED_CLIENTS_SHUTDOWN_TIMEOUT.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

application = get_asgi_application()
