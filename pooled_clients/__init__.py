"""Pooled, thread-safe, fork-safe clients for the services a Django project talks to.

    from pooled_clients import pools

    with pools["payments"].connection() as http:
        http.get("charges/42").raise_for_status()
"""

from pooled_clients.core import ClientPool
from pooled_clients.exceptions import (
    ClientCreationError,
    PoolClosed,
    PoolDoesNotExist,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from pooled_clients.handler import PoolHandler, pools
from pooled_clients.pool import Pool, PoolSettings
from pooled_clients.stats import Lease, PoolStats

__version__ = "0.1.0"

__all__ = [
    "ClientCreationError",
    "ClientPool",
    "Lease",
    "Pool",
    "PoolClosed",
    "PoolDoesNotExist",
    "PoolError",
    "PoolExhausted",
    "PoolHandler",
    "PoolSettings",
    "PoolStats",
    "PoolTimeout",
    "pools",
]
