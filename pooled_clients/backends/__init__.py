"""Client backends: how a pool creates, validates, resets and closes its clients."""

from pooled_clients.backends.base import ClientBackend

__all__ = ["ClientBackend"]
