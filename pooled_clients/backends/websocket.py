"""WebSocket clients: one open connection per pooled client (the ``websockets`` library).

Needs websockets (``pip install django-pooled-clients[websocket]``); ``manage.py check``
reports its absence. ``OPTIONS``:

- ``url`` (``ws://`` or ``wss://``), or ``base_url`` with keys as paths: in a keyed pool
  ``acquire(key="/ws/btcusdt")`` connects to the path appended to ``base_url``'s path (an
  absolute ``ws://`` key is used as it is);
- ``headers`` (sent with the opening handshake; values are secrets), ``subprotocols``;
- ``ping_timeout`` (seconds the library's keepalive waits for a pong; default 20);
- ``tls``: ``True`` or a dict of ``cafile``, ``certfile``, ``keyfile``, ``server_hostname``,
  ``verify``, as for :class:`~pooled_clients.backends.tcp.TCPBackend` (``wss://`` only).

``check`` sends a ping and waits for the pong within the check's bound. A socket the server
closed, or one returned with a message nobody read, is discarded. A reply still in flight
when the socket is returned cannot be seen: read what you asked for before releasing.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import ipaddress
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

from pooled_clients.backends.base import (
    AsyncClientBackend,
    ClientBackend,
    describe_key_hash,
    time_left,
    unknown_options,
    without_callables,
)
from pooled_clients.backends.tcp import TLS_OPTION_NAMES, TCPBackend, client_tls_context
from pooled_clients.masking import mask_url

if TYPE_CHECKING:
    import websockets.asyncio.client
    import websockets.sync.client

__all__ = ["AsyncWebSocketBackend", "WebSocketBackend"]

OPTION_NAMES = ("url", "base_url", "headers", "subprotocols", "ping_timeout", "tls")
_INSTALL_HINT = ("websockets is not installed; install it with "
                 "'pip install django-pooled-clients[websocket]'.")
_SCHEMES = ("ws", "wss")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.cache
def _connect_takes_legacy() -> bool:
    """websockets >= 17.1 wants ``legacy=True`` to return an open connection directly."""
    from websockets.sync.client import connect

    return "legacy" in inspect.signature(connect).parameters


def _join(base_url: str, key: str) -> str:
    """``key`` appended to ``base_url``'s path (with or without a leading ``/``)."""
    if urlsplit(key).scheme:
        return key
    base = base_url if urlsplit(base_url).path.endswith("/") else base_url + "/"
    return urljoin(base, key.lstrip("/"))


class _WebSocketConfig:
    """Parsing, validation, description and keys shared by the sync and async backends."""

    options: dict[str, Any]
    provided_secrets: Callable[[], tuple[str, ...]]
    secret_options: ClassVar[tuple[str, ...]] = ("password", "token", "secret", "headers")
    _connect_timeout: float

    def _parse(self, options: Mapping[str, Any]) -> None:
        self.url = str(options.get("url") or options.get("base_url") or "")
        self.headers: dict[str, str] = dict(options.get("headers") or {})
        subprotocols = options.get("subprotocols")
        self.subprotocols: list[str] | None = list(subprotocols) if subprotocols else None
        self.ping_timeout: float | None = options.get("ping_timeout", 20.0)
        tls = options.get("tls", False)
        self.tls_options: dict[str, Any] | None = (
            dict(tls) if isinstance(tls, Mapping) else ({} if tls else None))
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with the WebSocket OPTIONS, without any network or file I/O."""
        if importlib.util.find_spec("websockets") is None:
            return [_INSTALL_HINT]
        problems = unknown_options(options, OPTION_NAMES)
        # A callable is checked by what it returns, at each creation.
        options, provided = without_callables(options)
        url, base_url = options.get("url"), options.get("base_url")
        has_url, has_base = url is not None or "url" in provided, (
            base_url is not None or "base_url" in provided)
        if has_url and has_base:
            problems.append("'url' and 'base_url' are both set; give one.")
        elif not has_url and not has_base:
            problems.append("'url' (or 'base_url' with keys as paths) is required; expected a "
                            "ws:// or wss:// URL.")
        for name, value in (("url", url), ("base_url", base_url)):
            if value is None:
                continue
            parts = urlsplit(value) if isinstance(value, str) else None
            if parts is None or parts.scheme not in _SCHEMES or not parts.hostname:
                shown = mask_url(value) if isinstance(value, str) else value
                problems.append(f"{name!r} is {shown!r}; expected a ws:// or wss:// URL "
                                "with a host.")
        headers = options.get("headers")
        if headers is not None and (not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        )):
            problems.append("'headers' must be a dict of header name -> string value.")
        subprotocols = options.get("subprotocols")
        if subprotocols is not None and (isinstance(subprotocols, str) or not isinstance(
                subprotocols, list | tuple) or not all(isinstance(s, str) for s in subprotocols)):
            problems.append(f"'subprotocols' is {subprotocols!r}; expected a list of strings.")
        ping_timeout = options.get("ping_timeout", 20.0)
        if ping_timeout is not None and (not isinstance(ping_timeout, int | float)
                                         or isinstance(ping_timeout, bool) or ping_timeout <= 0):
            problems.append(f"'ping_timeout' is {ping_timeout!r}; expected a number of "
                            "seconds > 0 or None.")
        tls = options.get("tls", False)
        if isinstance(tls, Mapping):
            problems.extend(TCPBackend._check_tls_options(tls))
        elif not isinstance(tls, bool):
            problems.append(f"'tls' is {tls!r}; expected True, False or a dict of "
                            f"{', '.join(TLS_OPTION_NAMES)}.")
        address = url if isinstance(url, str) else base_url
        if tls and isinstance(address, str) and urlsplit(address).scheme == "ws":
            problems.append("'tls' is set but the URL is ws://; use a wss:// URL.")
        return problems

    def _tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context of ``tls`` (files are read on first use), or None for
        the library's default (``wss://`` verifies against the system's CAs)."""
        if self.tls_options is None:
            return None
        with self._context_lock:
            if self._context is None:
                self._context = client_tls_context(self.tls_options)
            return self._context

    def _connect_kwargs(self, open_timeout: float) -> dict[str, Any]:
        parts = urlsplit(self.url)
        kwargs: dict[str, Any] = {
            "open_timeout": open_timeout,
            "additional_headers": self.headers or None,
            "subprotocols": self.subprotocols,
            "ping_timeout": self.ping_timeout,
            # Closing waits for the server's answer: never longer than a creation may take.
            "close_timeout": self._connect_timeout,
            # Proxy settings from the environment never apply to a loopback server.
            "proxy": None if _is_loopback(parts.hostname) else True,
        }
        if parts.scheme == "wss":
            context = self._tls_context()
            if context is not None:
                kwargs["ssl"] = context
            hostname = (self.tls_options or {}).get("server_hostname")
            if hostname:
                kwargs["server_hostname"] = hostname
        return kwargs

    def describe(self) -> str:
        """The URL without credentials, query or fragment."""
        return mask_url(self.url)

    def secrets(self) -> list[str]:
        """Header values (and their words, such as a bearer token) and any URL password."""
        found = [value for value in self.headers.values() if value]
        for value in self.headers.values():
            found.extend(part for part in value.split() if len(part) >= 6)
        password = urlsplit(self.url).password
        if password:
            found.append(password)
        query = urlsplit(self.url).query
        if query:
            found.append(query)
        return found + list(self.provided_secrets())

    def key_options(self, key: Any) -> dict[str, Any]:
        """A path joined to ``base_url`` (or ``url``), or an absolute ``ws://`` URL."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"{type(self).__name__}: a key is a URL path or a ws:// URL, "
                             f"not {type(key).__name__}.")
        if urlsplit(key).scheme and urlsplit(key).scheme not in _SCHEMES:
            raise ValueError(f"{type(self).__name__}: a key URL must be ws:// or wss://.")
        return {"url": _join(self.url, key), "base_url": None}

    def describe_key(self, key: Any) -> str:
        """The key's URL path (without query, where tokens often travel)."""
        if isinstance(key, str) and key:
            if urlsplit(key).scheme:
                return mask_url(key)
            return urlsplit(key).path or "/"
        return describe_key_hash(key)


class WebSocketBackend(_WebSocketConfig, ClientBackend["websockets.sync.client.ClientConnection"]):
    """A pool of open ``websockets.sync.client.ClientConnection`` objects.

    Use ``send`` and ``recv`` on a client; each runs a background thread of the library's
    that answers pings and notices when the server closes the connection.
    """

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        self._parse(options)

    def create(self) -> websockets.sync.client.ClientConnection:
        """Open the connection (TCP, TLS and the WebSocket handshake) within
        ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        from websockets.sync.client import connect

        kwargs = self._connect_kwargs(timeout)
        if _connect_takes_legacy():
            # The connection outlives this call: it is the pool's, not a ``with`` block's.
            kwargs["legacy"] = True
        connection: websockets.sync.client.ClientConnection = connect(self.url, **kwargs)
        return connection

    def close(self, client: websockets.sync.client.ClientConnection) -> None:
        """Close the connection (closing handshake bounded by ``CONNECT_TIMEOUT``)."""
        client.close()

    def is_broken(self, client: websockets.sync.client.ClientConnection) -> bool:
        """True when the connection is closing or closed."""
        from websockets.protocol import State

        return client.state is not State.OPEN

    def reset(self, client: websockets.sync.client.ClientConnection) -> bool:
        """False (discard) when the connection is no longer open or a message is waiting
        that nobody read."""
        from websockets.protocol import State

        if client.state is not State.OPEN:
            return False
        try:
            client.recv(timeout=0)
        except TimeoutError:
            return True  # nothing waiting
        except Exception:
            return False
        return False

    def check(self, client: websockets.sync.client.ClientConnection) -> None:
        """A ping answered by a pong within the time left (never a hang)."""
        from websockets.protocol import State

        if client.state is not State.OPEN:
            raise ConnectionError(f"the WebSocket is {client.state.name.lower()}")
        timeout = max(0.05, time_left(self._connect_timeout))
        if not client.ping().wait(timeout):
            raise TimeoutError(f"no pong within {timeout:.2f}s")


class AsyncWebSocketBackend(
        _WebSocketConfig, AsyncClientBackend["websockets.asyncio.client.ClientConnection"]):
    """A pool of open ``websockets.asyncio.client.ClientConnection`` objects, for async code
    only; each belongs to the event loop that opened it. Same options, check and reset as
    :class:`WebSocketBackend`."""

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        self._parse(options)

    async def create(  # type: ignore[override]
            self) -> websockets.asyncio.client.ClientConnection:
        """Open the connection on the running loop within ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        from websockets.asyncio.client import connect

        return await connect(self.url, **self._connect_kwargs(timeout))

    async def close(  # type: ignore[override]
            self, client: websockets.asyncio.client.ClientConnection) -> None:
        """Close the connection (closing handshake bounded by ``CONNECT_TIMEOUT``)."""
        await client.close()

    def close_nowait(self, client: websockets.asyncio.client.ClientConnection) -> None:
        """Drop the TCP connection without a closing handshake: its loop is gone."""
        transport = client.transport
        if transport is not None:
            transport.abort()

    def is_broken(self, client: websockets.asyncio.client.ClientConnection) -> bool:
        """True when the connection is closing or closed."""
        from websockets.protocol import State

        return client.state is not State.OPEN

    async def reset(  # type: ignore[override]
            self, client: websockets.asyncio.client.ClientConnection) -> bool:
        """False (discard) when the connection is no longer open or a message is waiting
        that nobody read."""
        import asyncio

        from websockets.protocol import State

        if client.state is not State.OPEN:
            return False
        try:
            # A deadline already past lets recv() return a message that is already there,
            # and cancels it (safely: recv is cancellation-safe) before it waits for one.
            async with asyncio.timeout(0):
                await client.recv()
        except TimeoutError:
            return True
        except Exception:
            return False
        return False

    async def check(  # type: ignore[override]
            self, client: websockets.asyncio.client.ClientConnection) -> None:
        """A ping answered by a pong within the time left (never a hang)."""
        import asyncio

        from websockets.protocol import State

        if client.state is not State.OPEN:
            raise ConnectionError(f"the WebSocket is {client.state.name.lower()}")
        timeout = max(0.05, time_left(self._connect_timeout))
        async with asyncio.timeout(timeout):
            pong = await client.ping()
            await pong
