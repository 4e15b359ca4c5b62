"""Redis clients: one redis-py client bound to one connection per pooled client.

Needs redis-py (``pip install django-pooled-clients[redis]``); ``manage.py check`` reports its
absence. ``OPTIONS``: ``url`` (``redis://``, ``rediss://`` or ``unix://``) or ``host`` /
``port`` / ``db``, ``username``, ``password``, ``ssl``, and any other keyword of
``redis.Redis`` (``socket_timeout``, ``decode_responses``, ``ssl_ca_certs``, ...).

Each client owns a redis-py ``ConnectionPool`` capped at one connection, so its commands,
pipelines, locks and pub/sub all share that connection: the pool is the concurrency limit.
redis-py's own retries are off unless ``retry`` is given: the pool replaces a broken client,
and a retried ``INCR`` after a lost reply could count twice.

The connection notes the commands that change its session and counts the replies still due.
A client returned inside ``MULTI`` or ``WATCH``, subscribed (pub/sub, ``MONITOR``), switched
to another database, or owing a reply nobody read (arrived or still in flight) is discarded,
so the next caller's command is never queued in someone else's transaction nor answered by a
stale reply. (``RESET`` would end those states, but it also logs the connection out of its
user.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pooled_clients.backends.base import (
    AsyncClientBackend,
    ClientBackend,
    describe_key_hash,
    time_left,
    without_callables,
)
from pooled_clients.masking import mask_url

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisBackend", "RedisBackend"]

_INSTALL_HINT = ("redis-py is not installed; install it with "
                 "'pip install django-pooled-clients[redis]'.")
_SCHEMES = ("redis", "rediss", "unix")
#: Options that give the address ``url`` gives; a URL key sets them to None.
_ADDRESS_OPTIONS = ("host", "port", "unix_socket_path")
#: redis.Redis keywords the pool sets itself.
_MANAGED = ("connection_pool", "single_connection_client", "max_connections")
#: Commands after which a connection is never handed to another caller.
_SESSION_COMMANDS = frozenset({
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SELECT", "AUTH", "HELLO", "RESET",
    "SWAPDB", "READONLY", "READWRITE",
})
_SESSION_CLIENT_SUBCOMMANDS = frozenset({"REPLY", "TRACKING", "CACHING", "NO-EVICT", "NO-TOUCH"})


def _word(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1").upper()
    return str(value).upper()


class _SessionState:
    """What one connection's session holds beyond the commands' results (redis-py side)."""

    #: Why the connection may not be reused (a subscription, a SELECT, ...), or None.
    pooled_tainted: str | None = None
    pooled_multi = False
    pooled_watch = False
    #: Replies due for the commands sent (the handshake's excepted).
    pooled_pending = 0
    _pooled_handshake = False

    def _pooled_note(self, args: Sequence[Any]) -> None:
        if self._pooled_handshake or not args:
            return
        self.pooled_pending += 1
        first, _, rest = _word(args[0]).partition(" ")
        if first == "MULTI":
            self.pooled_multi = True
        elif first in ("EXEC", "DISCARD"):
            self.pooled_multi = self.pooled_watch = False
        elif first == "WATCH":
            self.pooled_watch = True
        elif first == "UNWATCH":
            self.pooled_watch = False
        elif first in _SESSION_COMMANDS:
            self.pooled_tainted = first
        elif first == "CLIENT":
            sub = rest or (_word(args[1]) if len(args) > 1 else "")
            if sub.split(" ", 1)[0] in _SESSION_CLIENT_SUBCOMMANDS:
                self.pooled_tainted = f"CLIENT {sub}"

    def _pooled_replied(self) -> None:
        if not self._pooled_handshake:
            self.pooled_pending -= 1

    def _pooled_fresh_session(self) -> None:
        self.pooled_tainted = None
        self.pooled_multi = self.pooled_watch = False
        self.pooled_pending = 0

    def pooled_dirty(self) -> str | None:
        """Why this connection must not go to the next caller, or None."""
        if self.pooled_tainted:
            return f"{self.pooled_tainted} was sent"
        if self.pooled_multi:
            return "returned inside MULTI"
        if self.pooled_watch:
            return "returned with WATCHed keys"
        if self.pooled_pending:
            return "returned before reading every reply"
        return None


@functools.cache
def _tracked(base: type[Any]) -> type[Any]:
    """``base`` (a redis-py connection class) noting the commands that change its session
    and counting the replies due; its handshake (AUTH, SELECT, CLIENT SETINFO) is bounded
    by the connect timeout."""
    import redis.asyncio.connection

    if issubclass(base, redis.asyncio.connection.AbstractConnection):

        class AsyncTracked(_SessionState, base):  # type: ignore[misc]
            def pack_command(self, *args: Any) -> Any:
                self._pooled_note(args)
                return super().pack_command(*args)

            async def read_response(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await super().read_response(*args, **kwargs)
                finally:
                    self._pooled_replied()

            async def on_connect_check_health(self, check_health: bool = True) -> None:
                self._pooled_handshake = True
                try:
                    await super().on_connect_check_health(check_health)
                finally:
                    self._pooled_handshake = False
                    self._pooled_fresh_session()

        AsyncTracked.__name__ = AsyncTracked.__qualname__ = f"Pooled{base.__name__}"
        return AsyncTracked

    class Tracked(_SessionState, base):  # type: ignore[misc]
        def send_command(self, *args: Any, **kwargs: Any) -> None:
            self._pooled_note(args)
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Any) -> Any:
            commands = [tuple(command) for command in commands]
            for command in commands:
                self._pooled_note(command)
            return super().pack_commands(commands)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            finally:
                self._pooled_replied()

        def on_connect_check_health(self, check_health: bool = True) -> None:
            sock = self._get_socket()
            if sock is not None and self.socket_connect_timeout is not None:
                limit = self.socket_connect_timeout
                if self.socket_timeout is not None:
                    limit = min(limit, self.socket_timeout)
                sock.settimeout(limit)
            self._pooled_handshake = True
            try:
                super().on_connect_check_health(check_health)
            finally:
                self._pooled_handshake = False
                self._pooled_fresh_session()
                if sock is not None and sock is self._get_socket():
                    sock.settimeout(self.socket_timeout)

    Tracked.__name__ = Tracked.__qualname__ = f"Pooled{base.__name__}"
    return Tracked


@functools.cache
def _redis_keywords() -> frozenset[str]:
    import redis

    return frozenset(inspect.signature(redis.Redis.__init__).parameters) - {"self", "kwargs"}


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


class _RedisConfig:
    """Parsing, validation, description and keys shared by the sync and async backends."""

    options: dict[str, Any]
    provided_secrets: Callable[[], tuple[str, ...]]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with the Redis OPTIONS, without any network I/O."""
        try:
            import redis  # noqa: F401
        except ImportError:
            return [_INSTALL_HINT]
        keywords = _redis_keywords()
        # The full list of redis.Redis keywords is too long to be read in a message.
        problems = [
            f"unknown option {name!r}; expected 'url' or a keyword of redis.Redis (host, port, "
            "db, username, password, ssl, socket_timeout, ...)."
            for name in options if name != "url" and name not in keywords
        ]
        problems.extend(f"{name!r} is set by the pool (one connection per client); remove it."
                        for name in _MANAGED if name in options)
        # A callable is checked by what it returns, at each creation.
        options, _ = without_callables(options)
        url = options.get("url")
        if url is not None:
            if not isinstance(url, str) or urlsplit(url).scheme not in _SCHEMES:
                shown = mask_url(url) if isinstance(url, str) else url
                problems.append(f"'url' is {shown!r}; expected a redis://, rediss:// or "
                                "unix:// URL.")
            for name in _ADDRESS_OPTIONS:
                if options.get(name) is not None:
                    problems.append(f"{name!r} and 'url' are both set; give the address once.")
        host = options.get("host")
        if host is not None and (not isinstance(host, str) or not host):
            problems.append(f"'host' is {host!r}; expected a host name or IP address.")
        port = options.get("port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                                 or not 0 < port < 65536):
            problems.append(f"'port' is {port!r}; expected an integer from 1 to 65535.")
        db = options.get("db")
        if db is not None and (not isinstance(db, int) or isinstance(db, bool) or db < 0):
            problems.append(f"'db' is {db!r}; expected an integer >= 0.")
        for name in ("username", "password"):
            value = options.get(name)
            if value is not None and not isinstance(value, str):
                problems.append(f"{name!r} must be a string.")
        for name in ("ssl", "decode_responses"):
            if name in options and not isinstance(options[name], bool):
                problems.append(f"{name!r} is {options[name]!r}; expected True or False.")
        for name in ("socket_timeout", "socket_connect_timeout"):
            value = options.get(name)
            if value is not None and not _is_seconds(value):
                problems.append(f"{name!r} is {value!r}; expected a number of seconds > 0 "
                                "or None.")
        return problems

    def _url(self) -> str | None:
        """``url`` with ``db``, when both are given, as its database (a key's ``db`` wins)."""
        url: str | None = self.options.get("url")
        db = self.options.get("db")
        if url and db is not None and urlsplit(url).scheme != "unix":
            url = urlunsplit(urlsplit(url)._replace(path=f"/{db}"))
        return url

    def _client_kwargs(self, connect_timeout: float) -> tuple[str | None, dict[str, Any]]:
        url = self._url()
        # A URL key leaves the pool's address options as None: the URL gives the address.
        kwargs = {k: v for k, v in self.options.items()
                  if k != "url" and not (v is None and k in _ADDRESS_OPTIONS)}
        if url:
            kwargs.pop("db", None)
        configured = kwargs.get("socket_connect_timeout")
        kwargs["socket_connect_timeout"] = (
            min(connect_timeout, configured) if configured else connect_timeout)
        kwargs["max_connections"] = 1
        return url, kwargs

    def describe(self) -> str:
        """``redis://[user@]host:port/db`` (``rediss://`` with TLS); never a password."""
        url = self._url()
        if url:
            return mask_url(url)
        if self.options.get("unix_socket_path"):
            return f"unix://{self.options['unix_socket_path']}"
        scheme = "rediss" if self.options.get("ssl") else "redis"
        host = str(self.options.get("host") or "localhost")
        if ":" in host:
            host = f"[{host}]"
        user = self.options.get("username")
        netloc = f"{user}@{host}" if user else host
        return (f"{scheme}://{netloc}:{self.options.get('port') or 6379}/"
                f"{self.options.get('db') or 0}")

    def secrets(self) -> list[str]:
        """The password (also one written in ``url``) and any other secret option."""
        found = [value for key, value in self.options.items()
                 if isinstance(value, str) and any(w in key.lower()
                                                   for w in ("password", "token", "secret"))]
        url = self.options.get("url")
        if isinstance(url, str):
            password = urlsplit(url).password
            if password:
                found.append(password)
        return found + list(self.provided_secrets())

    def key_options(self, key: Any) -> dict[str, Any]:
        """A database number selects ``db`` (also over the database of ``url``); a
        ``redis://`` URL replaces the address."""
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            return {"db": key}
        if isinstance(key, str) and urlsplit(key).scheme in _SCHEMES:
            return {"url": key, **dict.fromkeys(_ADDRESS_OPTIONS)}
        raise ValueError(f"{type(self).__name__}: a key is a database number or a redis:// "
                         f"URL, not a {type(key).__name__}.")

    def describe_key(self, key: Any) -> str:
        """``db 3``, or the key's URL without its password."""
        if isinstance(key, int) and not isinstance(key, bool):
            return f"db {key}"
        if isinstance(key, str) and urlsplit(key).scheme in _SCHEMES:
            return mask_url(key)
        return describe_key_hash(key)


def _session_of(client: Any) -> Any:
    return client._pooled_connection


def _no_retry() -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _build(factory: Callable[..., Any], from_url: Callable[..., Any], url: str | None,
           kwargs: dict[str, Any]) -> Any:
    kwargs.setdefault("retry", _no_retry())
    client = from_url(url, **kwargs) if url else factory(**kwargs)
    pool = client.connection_pool
    pool.connection_class = _tracked(pool.connection_class)
    return client


class RedisBackend(_RedisConfig, ClientBackend["redis.Redis"]):
    """A pool of ``redis.Redis`` clients, each bound to one connection.

    ``check`` is a PING bounded by the time left; a client returned in a transaction,
    subscribed, or with unread replies is discarded on release.
    """

    #: The reset decides: a command error (a WRONGTYPE reply, a lost lock) leaves the
    #: connection usable; a lost connection is discarded.
    discard_on_error = False

    def create(self) -> redis.Redis:
        """Connect (and authenticate, select the database) within ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        import redis

        url, kwargs = self._client_kwargs(timeout)
        client = _build(redis.Redis, redis.Redis.from_url, url, kwargs)
        pool = client.connection_pool
        try:
            connection = pool.get_connection()
            pool.release(connection)
        except BaseException:
            client.close()
            raise
        client._pooled_connection = connection
        return client  # type: ignore[no-any-return]

    def close(self, client: redis.Redis) -> None:
        """Close the client's connection."""
        client.close()

    def is_broken(self, client: redis.Redis) -> bool:
        """True when the connection was lost (not when it was merely left in a state)."""
        session = _session_of(client)
        return not session.is_connected and session.pooled_dirty() is None

    def reset(self, client: redis.Redis) -> bool:
        """False (discard) when the session is in a transaction, subscribed, switched, lost,
        or holds a reply nobody read."""
        session = _session_of(client)
        if not session.is_connected or session.pooled_dirty() is not None:
            return False
        try:
            return not session.can_read()
        except Exception:
            return False

    def check(self, client: redis.Redis) -> None:
        """A PING round trip bounded by the time left (never a hang)."""
        import redis

        session = _session_of(client)
        problem = session.pooled_dirty()
        if problem:
            raise redis.ConnectionError(f"the connection was {problem}")
        timeout = max(0.05, time_left(self._connect_timeout))
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command("PING", check_health=False)  # type: ignore[no-untyped-call]
            reply = connection.read_response(timeout=timeout)
        finally:
            pool.release(connection)
        if reply not in (b"PONG", "PONG", True):
            raise redis.ConnectionError(f"PING was answered with {reply!r}")


class AsyncRedisBackend(_RedisConfig, AsyncClientBackend["redis.asyncio.Redis"]):
    """A pool of ``redis.asyncio.Redis`` clients, each bound to one connection, for async
    code only. Same options, check and reset as :class:`RedisBackend`."""

    discard_on_error = False

    async def create(self) -> redis.asyncio.Redis:  # type: ignore[override]
        """Connect on the running loop within ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        import asyncio

        import redis.asyncio

        url, kwargs = self._client_kwargs(timeout)
        client = _build(redis.asyncio.Redis, redis.asyncio.Redis.from_url, url, kwargs)
        pool = client.connection_pool
        try:
            async with asyncio.timeout(timeout):
                connection = await pool.get_connection()
                await pool.release(connection)
        except BaseException:
            await client.aclose()
            raise
        client._pooled_connection = connection
        return client  # type: ignore[no-any-return]

    async def close(self, client: redis.asyncio.Redis) -> None:  # type: ignore[override]
        """Close the client's connection."""
        await client.aclose()

    def is_broken(self, client: redis.asyncio.Redis) -> bool:
        """True when the connection was lost (not when it was merely left in a state)."""
        session = _session_of(client)
        return not session.is_connected and session.pooled_dirty() is None

    async def reset(self, client: redis.asyncio.Redis) -> bool:  # type: ignore[override]
        """False (discard) when the session is in a transaction, subscribed, switched, lost,
        or holds a reply nobody read."""
        session = _session_of(client)
        if not session.is_connected or session.pooled_dirty() is not None:
            return False
        try:
            return not await session.can_read()
        except Exception:
            return False

    async def check(self, client: redis.asyncio.Redis) -> None:  # type: ignore[override]
        """A PING round trip bounded by the time left (never a hang)."""
        import asyncio

        import redis

        session = _session_of(client)
        problem = session.pooled_dirty()
        if problem:
            raise redis.ConnectionError(f"the connection was {problem}")
        async with asyncio.timeout(max(0.05, time_left(self._connect_timeout))):
            reply = await client.ping()
        if reply is not True:
            raise redis.ConnectionError(f"PING was answered with {reply!r}")
