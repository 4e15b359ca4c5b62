"""A small Django site that uses django-pooled-clients: run it with ``./scripts/run-example``."""
