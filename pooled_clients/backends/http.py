"""HTTP clients: one ``requests.Session`` per pooled client, bound to ``base_url``.

Each session mounts a one-connection adapter: the pool is the concurrency limit, so
urllib3 never blocks without a timeout (``pool_block=True``) nor logs "Connection pool is
full" (``pool_block=False`` overflow).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pooled_clients.backends.base import (
    MAX_SECONDS,
    MIN_SECONDS,
    ClientBackend,
    check_number,
    number_fault,
    provided_at_creation,
    show,
    time_left,
    unknown_options,
)
from pooled_clients.masking import mask_url, secret_strings, secrets_in_options, url_secrets
from pooled_clients.stats import WaitWindow

__all__ = ["HTTPBackend", "PooledSession"]

#: Bounds of the numeric options (``timeout`` is bounded like every duration).
MAX_RETRIES = 100
MAX_BACKOFF_FACTOR = 60.0
# An HTTP token (a header name, a method) and what a header value or a path may not hold.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_BAD_HEADER_VALUE = re.compile(r"^\s|[\r\n\x00]")


def _check_base_url(base_url: Any) -> list[str]:
    """``base_url`` must be an absolute http(s) URL with a host, a valid port, and no query
    or fragment: ``urljoin`` drops them for every relative path."""
    if provided_at_creation(base_url):
        return []
    if not isinstance(base_url, str) or not base_url:
        return ["'base_url' is required; expected an http:// or https:// URL."]
    shown = mask_url(base_url)
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as exc:  # a malformed IPv6 host, a port that is not a number
        return [f"'base_url' {shown!r} is not a valid URL ({exc})."]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"'base_url' {shown!r} is not an http:// or https:// URL with a host."]
    problems = []
    if port == 0:
        problems.append(f"'base_url' {shown!r} has port 0; expected a port from 1 to 65535.")
    if _UNSAFE.search(base_url):
        problems.append(f"'base_url' {shown!r} holds spaces or control characters.")
    if parts.query or parts.fragment or base_url.endswith(("?", "#")):
        problems.append(f"'base_url' {shown!r} has a query string or fragment, which relative "
                        "URLs joined to it would drop; expected none: pass query parameters "
                        "with each request (params=...) or as headers.")
    return problems


def _check_headers(headers: Any) -> list[str]:
    if headers is None or provided_at_creation(headers):
        return []
    if not isinstance(headers, Mapping):
        return [f"'headers' is {type(headers).__name__}; expected a dict of header name -> "
                "string value."]
    problems = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            problems.append(f"'headers' has name {show(name)}; expected a header name such as "
                            "'Authorization'.")
        elif provided_at_creation(value):
            continue
        elif not isinstance(value, str | bytes):
            problems.append(f"'headers'[{name!r}] is of type {type(value).__name__}; expected a "
                            "string.")
        elif _BAD_HEADER_VALUE.search(value if isinstance(value, str) else value.decode("latin-1")):
            # The value is not shown: it may be a token.
            problems.append(f"'headers'[{name!r}] starts with a space or holds a line break or "
                            "NUL; requests refuses such a value.")
    return problems

OPTION_NAMES = (
    "base_url", "timeout", "retries", "backoff_factor", "status_forcelist", "allowed_methods",
    "headers", "auth", "verify", "cert", "health_path",
)


class _RequestStats:
    """Latency and error rate of the requests made through one pool's sessions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency = WaitWindow(1024)
        self.requests = 0
        self.errors = 0
        self.window_requests = 0
        self.window_errors = 0

    def record(self, seconds: float, error: bool) -> None:
        with self.lock:
            self.requests += 1
            self.latency.add(seconds, self.requests)
            if error:
                self.errors += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            p50, p95, p99 = self.latency.percentiles(self.requests)
            requests_total, errors_total = self.requests, self.errors
        return {
            "requests_total": requests_total,
            "request_errors_total": errors_total,
            "error_rate": round(errors_total / requests_total, 4) if requests_total else 0.0,
            "latency_ms_p50": p50,
            "latency_ms_p95": p95,
            "latency_ms_p99": p99,
        }


class PooledSession(requests.Session):
    """A ``requests.Session`` that resolves relative URLs against ``base_url`` and applies
    the pool's default timeout."""

    base_url: str
    default_timeout: float | tuple[float, float] | None

    def __init__(self, base_url: str, default_timeout: float | tuple[float, float] | None,
                 request_stats: _RequestStats | None = None) -> None:
        super().__init__()
        self.base_url = base_url
        self.default_timeout = default_timeout
        self._request_stats = request_stats

    def url_for(self, url: str | bytes) -> str:
        """``url`` joined to ``base_url``: relative paths, with or without a leading ``/``,
        are appended to its path; absolute URLs are used as they are."""
        text = url.decode() if isinstance(url, bytes) else str(url)
        if urlsplit(text).scheme:
            return text
        return urljoin(self.base_url, text.lstrip("/"))

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        """Send a request; relative URLs are joined to ``base_url``."""
        if "timeout" not in kwargs and len(args) < 8:
            kwargs["timeout"] = self.default_timeout
        stats = self._request_stats
        if stats is None:
            return super().request(method, self.url_for(url), *args, **kwargs)
        start = time.monotonic()
        try:
            response = super().request(method, self.url_for(url), *args, **kwargs)
        except Exception:
            stats.record(time.monotonic() - start, True)
            raise
        stats.record(time.monotonic() - start, response.status_code >= 500)
        return response


class HTTPBackend(ClientBackend[PooledSession]):
    """A pool of :class:`PooledSession` objects for one HTTP API."""

    #: A failed request leaves the session usable: urllib3 drops broken connections.
    discard_on_error = False
    secret_options = ("password", "token", "secret", "auth", "headers")
    #: Every session of the pool adds to the same request statistics.
    shared_attributes = ("request_stats",)

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        # Absent when a callable provides it at each creation.
        parts = urlsplit(str(options.get("base_url", "")))
        # A base path always ends with "/" so that relative URLs are appended to it.
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.base_url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.read_timeout: float | None = options.get("timeout")
        self.retry = Retry(
            total=int(options.get("retries", 0)),
            # A read timeout is raised as requests.Timeout, never retried: the request may
            # have had effects, and a slow upstream should not be hit again at once.
            read=False,
            backoff_factor=float(options.get("backoff_factor", 0)),
            status_forcelist=tuple(options.get("status_forcelist", (502, 503, 504))),
            allowed_methods=(frozenset(m.upper() for m in options["allowed_methods"])
                             if options.get("allowed_methods") is not None
                             else Retry.DEFAULT_ALLOWED_METHODS),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        self.headers: dict[str, str] = dict(options.get("headers") or {})
        auth = options.get("auth")
        self.auth: Any = tuple(auth) if isinstance(auth, list) else auth
        self.verify: bool | str = options.get("verify", True)
        self.cert: str | tuple[str, str] | None = (
            tuple(options["cert"]) if isinstance(options.get("cert"), list)
            else options.get("cert")
        )
        self.health_path: str | None = options.get("health_path")
        self.request_stats = _RequestStats()

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with the HTTP OPTIONS, without any network I/O. A callable value
        is accepted as it is: it is called for each client creation."""
        problems = unknown_options(options, OPTION_NAMES)
        problems += _check_base_url(options.get("base_url"))
        problems += check_number(options, "timeout", MIN_SECONDS, MAX_SECONDS, allow_none=True)
        problems += check_number(options, "retries", 0, MAX_RETRIES, integer=True)
        problems += check_number(options, "backoff_factor", 0, MAX_BACKOFF_FACTOR,
                                 seconds=False)
        if not provided_at_creation(forcelist := options.get("status_forcelist", ())) and (
            not isinstance(forcelist, list | tuple | set | frozenset) or not all(
                number_fault(code, 100, 599, integer=True) is None for code in forcelist)
        ):
            problems.append(f"'status_forcelist' is {show(forcelist)}; expected a list of HTTP "
                            "status codes (integers from 100 to 599).")
        methods = options.get("allowed_methods")
        if methods is not None and not provided_at_creation(methods) and (
            not isinstance(methods, list | tuple | set | frozenset) or not methods
            or not all(isinstance(m, str) and _TOKEN.fullmatch(m) for m in methods)
        ):
            # An empty list would mean "every method" to urllib3 (deprecated there).
            problems.append(f"'allowed_methods' is {show(methods)}; expected a non-empty list "
                            "of method names such as ['GET', 'PUT'], or None (urllib3's "
                            "idempotent methods).")
        problems += _check_headers(options.get("headers"))
        auth = options.get("auth")
        if auth is not None and not provided_at_creation(auth) and not (
            isinstance(auth, list | tuple) and len(auth) == 2
            and all(isinstance(p, str) for p in auth)
        ):
            # Not shown: it holds a password.
            problems.append("'auth' must be a (username, password) pair of strings, a requests "
                            "AuthBase or a callable.")
        verify = options.get("verify", True)
        if not provided_at_creation(verify) and not (
                isinstance(verify, bool) or (isinstance(verify, str) and verify)):
            problems.append(f"'verify' is {show(verify)}; expected True, False or a CA bundle "
                            "path.")
        cert = options.get("cert")
        if cert is not None and not provided_at_creation(cert) and not (
            (isinstance(cert, str) and cert) or (
                isinstance(cert, list | tuple) and len(cert) == 2
                and all(isinstance(p, str) and p for p in cert))
        ):
            problems.append(f"'cert' is {show(cert)}; expected a path or a (certfile, keyfile) "
                            "pair of paths.")
        health = options.get("health_path")
        if health is not None and not provided_at_creation(health) and not (
                isinstance(health, str) and health and not _UNSAFE.search(health)):
            problems.append(f"'health_path' is {show(health)}; expected a path such as "
                            "'health/' (no spaces or control characters), or None.")
        return problems

    def create(self) -> PooledSession:
        """A new session; no network I/O happens until the first request."""
        session = PooledSession(self.base_url, (self._connect_timeout, self.read_timeout)
                                if self.read_timeout is not None else
                                (self._connect_timeout, None),  # type: ignore[arg-type]
                                self.request_stats)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=self.retry,
                              pool_block=False)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(self.headers)
        session.auth = self.auth
        session.verify = self.verify
        session.cert = self.cert
        session._pooled_defaults = dict(session.headers)  # type: ignore[attr-defined]
        return session

    def close(self, client: PooledSession) -> None:
        """Close the session's keep-alive connection."""
        client.close()

    def reset(self, client: PooledSession) -> bool:
        """Forget cookies and header changes so nothing leaks to the next caller."""
        if client.cookies:
            client.cookies.clear()
        defaults: dict[str, str] = client._pooled_defaults  # type: ignore[attr-defined]
        if client.headers != defaults:
            client.headers.clear()
            client.headers.update(defaults)
        return True

    def reset_nowait(self, client: PooledSession) -> bool:
        """The reset does no I/O: it may run on the event loop (not a subclass's own
        ``reset``, which runs as usual)."""
        if type(self).reset is not HTTPBackend.reset:
            return False
        return self.reset(client)

    def check(self, client: PooledSession) -> None:
        """GET ``health_path`` (any status below 500 passes); without one, open a TCP
        connection to the base URL's host and port."""
        timeout = max(0.05, time_left(self._connect_timeout))
        if self.health_path:
            response = client.get(self.health_path, timeout=timeout)
            if response.status_code >= 500:
                raise requests.HTTPError(
                    f"{response.status_code} from {mask_url(client.url_for(self.health_path))}"
                )
            return
        parts = urlsplit(client.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            pass

    def describe(self) -> str:
        """The base URL without credentials, query or fragment, on one line."""
        if self.provided("base_url"):
            return "(base_url provided by a callable)"
        return mask_url(self.base_url)

    @classmethod
    def keyed_placeholders(cls) -> dict[str, Any]:
        """A key may be an absolute URL: ``base_url`` may then be left out."""
        return {"base_url": "http://localhost/"}

    def key_options(self, key: Any) -> dict[str, Any]:
        """A key is an absolute URL, or a path appended to ``base_url``'s path."""
        if not isinstance(key, str) or not key:
            raise ValueError("an HTTP key is a URL or a path")
        parts = urlsplit(key)
        if parts.scheme:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("an HTTP key URL must be http:// or https:// with a host")
            return {"base_url": key}
        if "base_url" not in self.options:
            raise ValueError("a path key needs base_url in OPTIONS")
        return {"base_url": urljoin(self.base_url, key.lstrip("/"))}

    def describe_key(self, key: Any) -> str:
        """The key's URL without credentials or query (where tokens travel)."""
        try:
            return mask_url(self.key_options(key)["base_url"])
        except ValueError:
            return super().describe_key(key)

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """Header values (and their words), the auth password, the password and query
        values of ``base_url`` and ``health_path``, and every secret-named option."""
        found = secrets_in_options({k: v for k, v in options.items() if k != "auth"},
                                   cls.secret_options)
        headers = options.get("headers")
        if isinstance(headers, Mapping):
            for value in headers.values():
                if isinstance(value, str):
                    found.extend(part for part in value.split() if len(part) >= 6)
        auth = options.get("auth")
        if isinstance(auth, list | tuple):
            found += secret_strings(list(auth)[1:])  # the user name is no secret
        elif auth is not None:
            found += secret_strings(getattr(auth, "password", None))
        found += url_secrets(options.get("base_url"))
        found += url_secrets(options.get("health_path"))
        return found

    def stats(self) -> dict[str, Any]:
        """Request latency percentiles and error rate (shown on the admin page)."""
        return self.request_stats.snapshot()
