"""Errors raised by pooled_clients.

Every message is built from masked values only: no password, token or header value
ever appears in ``str()`` of these exceptions.
"""

from __future__ import annotations

__all__ = [
    "ClientCreationError",
    "PoolClosed",
    "PoolDoesNotExist",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
]


class PoolError(Exception):
    """Base class of every error raised by a pool."""


class PoolTimeout(PoolError, TimeoutError):
    """No client came free within the acquire timeout."""


class PoolExhausted(PoolError):
    """Too many callers are already waiting (``MAX_WAITING``)."""


class PoolClosed(PoolError):
    """The pool was closed or retired and hands out nothing."""


class ClientCreationError(PoolError):
    """The service could not be reached; the last failure is chained as ``__cause__``."""


class PoolDoesNotExist(PoolError, KeyError):
    """No pool (or endpoint) of that name is configured."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a readable sentence is more useful here.
        return str(self.args[0]) if self.args else ""
