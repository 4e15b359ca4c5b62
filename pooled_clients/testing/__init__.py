"""Helpers for testing code that uses pools (see :mod:`pooled_clients.testing.plugin`)."""

from pooled_clients.testing.helpers import break_pool, leaked_leases

__all__ = ["break_pool", "leaked_leases"]
