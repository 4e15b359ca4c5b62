"""Async HTTP clients: one ``httpx.AsyncClient`` per pooled client, bound to ``base_url``.

Needs httpx (``pip install django-pooled-clients[async]``); ``manage.py check`` reports its
absence. ``OPTIONS`` are those of :class:`~pooled_clients.backends.http.HTTPBackend`
(``base_url``, ``timeout``, ``retries``, ``backoff_factor``, ``status_forcelist``,
``allowed_methods``, ``headers``, ``auth``, ``verify``, ``cert``, ``health_path``) with the
same meaning. Each client keeps one connection: the pool is the concurrency limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from urllib3.util.retry import Retry

from pooled_clients.backends.base import AsyncClientBackend
from pooled_clients.backends.http import HTTPBackend, _RequestStats
from pooled_clients.masking import mask_url

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncHTTPBackend"]

_INSTALL_HINT = ("httpx is not installed; install it with "
                 "'pip install django-pooled-clients[async]'.")


@functools.cache
def _client_class() -> type[httpx.AsyncClient]:
    """``PooledAsyncClient``, defined on first use so that importing this module needs no
    httpx (the system check reports a missing httpx instead of an import error)."""
    import httpx

    class PooledAsyncClient(httpx.AsyncClient):
        """An ``httpx.AsyncClient`` that retries ``status_forcelist`` answers with backoff
        (like urllib3's ``Retry``) and records latency for the pool's stats."""

        pooled_retries = 0
        pooled_backoff = 0.0
        pooled_statuses: frozenset[int] = frozenset()
        pooled_methods: frozenset[str] = frozenset()
        pooled_stats: _RequestStats | None = None
        pooled_defaults: httpx.Headers

        async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            attempt = 0
            while True:
                start = time.monotonic()
                try:
                    response = await super().send(request, **kwargs)
                except Exception:
                    self._record(start, True)
                    raise
                self._record(start, response.status_code >= 500)
                if (attempt >= self.pooled_retries
                        or response.status_code not in self.pooled_statuses
                        or request.method not in self.pooled_methods):
                    return response
                await response.aclose()
                attempt += 1
                # As urllib3: no wait before the first retry, then factor * 2 ** (n - 1),
                # never longer than urllib3's cap (a large factor must not sleep for days).
                if attempt > 1 and self.pooled_backoff:
                    await asyncio.sleep(min(Retry.DEFAULT_BACKOFF_MAX,
                                            self.pooled_backoff * 2 ** (attempt - 1)))

        def _record(self, start: float, error: bool) -> None:
            if self.pooled_stats is not None:
                self.pooled_stats.record(time.monotonic() - start, error)

    return PooledAsyncClient


class AsyncHTTPBackend(AsyncClientBackend["httpx.AsyncClient"]):
    """A pool of ``httpx.AsyncClient`` objects for one HTTP API, for async code only.

    Relative URLs, with or without a leading ``/``, are appended to ``base_url``'s path;
    after the last retry the last response is returned.
    """

    discard_on_error = False
    secret_options = HTTPBackend.secret_options
    shared_attributes = HTTPBackend.shared_attributes

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        import httpx

        self._httpx = httpx
        # The sync backend parses, describes and masks the same OPTIONS (no I/O).
        self._config = HTTPBackend(alias, options)
        retry = self._config.retry
        self.base_url = self._config.base_url
        self.read_timeout = self._config.read_timeout
        self.retries = int(retry.total or 0)
        self.backoff_factor = float(retry.backoff_factor)
        self.statuses = frozenset(retry.status_forcelist or ())
        methods = retry.allowed_methods
        self.methods = frozenset(m.upper() for m in methods) if methods else frozenset()
        self.health_path = self._config.health_path
        self.request_stats = _RequestStats()
        self._ssl = self._ssl_context()

    def _ssl_context(self) -> ssl.SSLContext | bool:
        verify, cert = self._config.verify, self._config.cert
        if verify is True and cert is None:
            return True
        if verify is False and cert is None:
            return False
        context = (ssl.create_default_context(cafile=verify) if isinstance(verify, str)
                   else ssl.create_default_context())
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if isinstance(cert, str):
            context.load_cert_chain(cert)
        elif cert is not None:
            context.load_cert_chain(*cert)
        return context

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """httpx must be installed; the OPTIONS are checked as :class:`HTTPBackend`'s."""
        try:
            import httpx  # noqa: F401
        except ImportError:
            return [_INSTALL_HINT]
        return HTTPBackend.check_options(options)

    async def create(self) -> httpx.AsyncClient:  # type: ignore[override]
        """A new client; no network I/O happens until the first request."""
        httpx = self._httpx
        auth = self._config.auth
        client = _client_class()(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.read_timeout, connect=self._connect_timeout),
            headers=self._config.headers,
            auth=tuple(auth) if isinstance(auth, tuple) else auth,
            verify=self._ssl,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        client.pooled_retries = self.retries  # type: ignore[attr-defined]
        client.pooled_backoff = self.backoff_factor  # type: ignore[attr-defined]
        client.pooled_statuses = self.statuses  # type: ignore[attr-defined]
        client.pooled_methods = self.methods  # type: ignore[attr-defined]
        client.pooled_stats = self.request_stats  # type: ignore[attr-defined]
        client.pooled_defaults = httpx.Headers(client.headers)  # type: ignore[attr-defined]
        return client

    async def close(self, client: httpx.AsyncClient) -> None:  # type: ignore[override]
        """Close the client's connection."""
        await client.aclose()

    def close_nowait(self, client: httpx.AsyncClient) -> None:
        """Shut the sockets down without awaiting (their loop is gone); the transports are
        left to the garbage collector."""
        pool = getattr(getattr(client, "_transport", None), "_pool", None)
        for connection in list(getattr(pool, "connections", None) or ()):
            stream = getattr(getattr(connection, "_connection", None), "_network_stream", None)
            if stream is None:
                continue
            with contextlib.suppress(Exception):
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)

    async def reset(self, client: httpx.AsyncClient) -> bool:  # type: ignore[override]
        """Forget cookies and header changes so nothing leaks to the next caller."""
        return self._forget_changes(client)

    def reset_nowait(self, client: httpx.AsyncClient) -> bool:
        """The reset awaits nothing: forget cookies and header changes (False for a closed
        client, which the awaited reset then discards, and in a subclass with a ``reset``
        of its own, which then always runs)."""
        if type(self).reset is not AsyncHTTPBackend.reset:
            return False
        return self._forget_changes(client)

    def _forget_changes(self, client: httpx.AsyncClient) -> bool:
        """Clear cookies and restore the default headers; False for a closed client."""
        if client.is_closed:
            return False
        if client.cookies:
            client.cookies.clear()
        defaults = client.pooled_defaults  # type: ignore[attr-defined]
        if client.headers != defaults:
            client.headers = defaults
        return True

    async def check(self, client: httpx.AsyncClient) -> None:  # type: ignore[override]
        """GET ``health_path`` (any status below 500 passes); without one, open a TCP
        connection to the base URL's host and port."""
        if self.health_path:
            response = await client.get(self.health_path)
            if response.status_code >= 500:
                raise self._httpx.HTTPStatusError(
                    f"{response.status_code} from {mask_url(str(response.request.url))}",
                    request=response.request, response=response)
            return
        parts = urlsplit(str(client.base_url))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        _, writer = await asyncio.open_connection(parts.hostname or "", port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def describe(self) -> str:
        """The base URL without credentials, query or fragment, on one line."""
        return self._config.describe()

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """The same secrets as :meth:`HTTPBackend.option_secrets`."""
        return HTTPBackend.option_secrets(options)

    def secrets(self) -> list[str]:
        """Header values, the auth password, and the passwords and query values of
        ``base_url`` and ``health_path``."""
        return self._config.secrets() + list(self.provided_secrets())

    def stats(self) -> dict[str, Any]:
        """Request latency percentiles and error rate (shown on the admin page)."""
        return self.request_stats.snapshot()
