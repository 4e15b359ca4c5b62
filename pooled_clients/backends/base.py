"""The extension point: subclass :class:`ClientBackend` to pool any client."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pooled_clients.masking import secrets_in_options

T = TypeVar("T")

__all__ = ["ClientBackend", "describe_key_hash", "time_left", "unknown_options"]

_deadline = threading.local()


def time_left(default: float) -> float:
    """Seconds left before the current acquire's deadline, at most ``default``.

    The engine sets a per-thread deadline around ``create()`` and ``check()`` so that a
    backend honouring :attr:`ClientBackend.connect_timeout` also honours the caller's
    remaining acquire budget.
    """
    deadline: float | None = getattr(_deadline, "value", None)
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))


def unknown_options(options: Mapping[str, Any], known: tuple[str, ...]) -> list[str]:
    """One problem per option name not in ``known`` (for ``check_options``)."""
    return [f"unknown option {name!r}; expected one of {', '.join(known)}."
            for name in options if name not in known]


def describe_key_hash(key: Any) -> str:
    """``"key#1a2b3c4d"``: a short hash of ``repr(key)``, stable across processes."""
    digest = hashlib.blake2b(repr(key).encode("utf-8", "backslashreplace"), digest_size=4)
    return f"key#{digest.hexdigest()}"


class _DeadlineScope:
    __slots__ = ("_previous", "_value")

    def __init__(self, deadline: float | None) -> None:
        self._value = deadline
        self._previous: float | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_deadline, "value", None)
        _deadline.value = self._value

    def __exit__(self, *exc: object) -> None:
        _deadline.value = self._previous


def deadline_scope(deadline: float | None) -> _DeadlineScope:
    """Bound every :func:`time_left` call in this thread by ``deadline`` (monotonic)."""
    return _DeadlineScope(deadline)


class ClientBackend(Generic[T]):
    """Creates, validates, resets and closes one kind of client.

    One instance serves one pool (one per endpoint when ``ENDPOINTS`` is used) and is
    built as ``Backend(alias, options)`` where ``options`` is the pool's ``OPTIONS``.
    Methods are called from many threads; keep per-client state on the client.

    The engine never hands a backend a client inherited across ``fork()``: it abandons
    those itself, without I/O.
    """

    #: True for backends whose clients must be used from async code only.
    is_async: ClassVar[bool] = False
    #: Option names whose values are secrets (masked wherever they are shown), besides
    #: every name holding a secret word anywhere (``access_token``, ``client_secret``,
    #: ``x-api-key``; see :data:`pooled_clients.masking.SECRET_WORDS`), at any depth.
    secret_options: ClassVar[tuple[str, ...]] = ("password", "token", "secret")

    #: Seconds one creation attempt may take; set by the pool from ``CONNECT_TIMEOUT``.
    _connect_timeout: float = 5.0

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        self.alias = alias
        self.options: dict[str, Any] = dict(options)

    @property
    def connect_timeout(self) -> float:
        """Seconds the current creation attempt may take (``CONNECT_TIMEOUT``, or less
        when the caller's acquire timeout runs out first)."""
        return time_left(self._connect_timeout)

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._connect_timeout = float(value)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with ``options``, each a sentence; reported as system-check errors."""
        return []

    def create(self) -> T:
        """Open and return a new client. Must not take longer than ``connect_timeout``."""
        raise NotImplementedError(f"{type(self).__name__} must implement create()")

    def close(self, client: T) -> None:
        """Close ``client``. Must not raise for a client that is already broken."""

    def check(self, client: T) -> None:
        """Raise when ``client`` is unusable. Called on checkout per ``CHECK`` policy."""

    def reset(self, client: T) -> bool:
        """Make ``client`` ready for the next caller on release; False discards it."""
        return True

    def describe(self) -> str:
        """The target people see: host, port, database, user; never a secret."""
        return type(self).__name__

    def key_options(self, key: Any) -> dict[str, Any]:
        """Options for the clients of ``key`` in a keyed pool, merged over the pool's.

        Called once when a key is first used. The default raises: a backend opts into keyed
        pools by saying what a key means for it (a host, a URL path, a database name).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support KEYS: it must implement key_options(key)")

    def describe_key(self, key: Any) -> str:
        """What people see for ``key``: a short stable hash by default, since a key may be
        a secret (an API key). Override to show a key that is safe to show (a host name)."""
        return describe_key_hash(key)

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """Literal secret values in ``options``, found without building a backend (the
        system checks mask their messages with them): every string, number or bytes value
        inside an option, or a nested key, whose name is secret."""
        return secrets_in_options(options, cls.secret_options)

    def secrets(self) -> list[str]:
        """Literal secret values to mask in any text the project renders."""
        return type(self).option_secrets(self.options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} target={self.describe()!r}>"
