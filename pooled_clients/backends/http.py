"""HTTP clients: one ``requests.Session`` per pooled client, bound to ``base_url``.

Each session mounts a one-connection adapter: the pool is the concurrency limit, so
urllib3 never blocks without a timeout (``pool_block=True``) nor logs "Connection pool is
full" (``pool_block=False`` overflow).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pooled_clients.backends.base import ClientBackend, time_left, unknown_options
from pooled_clients.masking import mask_url, secret_strings, secrets_in_options, url_secrets
from pooled_clients.stats import WaitWindow

__all__ = ["HTTPBackend", "PooledSession"]

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

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        parts = urlsplit(str(options["base_url"]))
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
        """Every problem with the HTTP OPTIONS, without any network I/O."""
        problems = unknown_options(options, OPTION_NAMES)
        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            problems.append("'base_url' is required; expected an http:// or https:// URL.")
        else:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"'base_url' {mask_url(base_url)!r} is not an http:// or "
                                "https:// URL with a host.")
        timeout = options.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float)
                                    or isinstance(timeout, bool) or timeout <= 0):
            problems.append(f"'timeout' is {timeout!r}; expected a number of seconds > 0 or None.")
        for name in ("retries",):
            value = options.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name!r} is {value!r}; expected an integer >= 0.")
        factor = options.get("backoff_factor", 0)
        if not isinstance(factor, int | float) or isinstance(factor, bool) or factor < 0:
            problems.append(f"'backoff_factor' is {factor!r}; expected a number >= 0.")
        forcelist = options.get("status_forcelist", (502, 503, 504))
        if not isinstance(forcelist, list | tuple | set | frozenset) or not all(
            isinstance(code, int) and 100 <= code <= 599 for code in forcelist
        ):
            problems.append(f"'status_forcelist' is {forcelist!r}; expected a list of HTTP "
                            "status codes.")
        methods = options.get("allowed_methods")
        if methods is not None and (isinstance(methods, str) or not all(
            isinstance(m, str) for m in methods
        )):
            problems.append(f"'allowed_methods' is {methods!r}; expected a list of method names.")
        headers = options.get("headers")
        if headers is not None and (not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        )):
            problems.append("'headers' must be a dict of header name -> string value.")
        auth = options.get("auth")
        if auth is not None and not (
            (isinstance(auth, list | tuple) and len(auth) == 2
             and all(isinstance(p, str) for p in auth))
            or isinstance(auth, requests.auth.AuthBase)
        ):
            problems.append("'auth' must be a (username, password) pair or a requests AuthBase.")
        verify = options.get("verify", True)
        if not isinstance(verify, bool | str):
            problems.append(f"'verify' is {verify!r}; expected True, False or a CA bundle path.")
        cert = options.get("cert")
        if cert is not None and not (isinstance(cert, str) or (
            isinstance(cert, list | tuple) and len(cert) == 2
        )):
            problems.append("'cert' must be a path or a (certfile, keyfile) pair.")
        health = options.get("health_path")
        if health is not None and not isinstance(health, str):
            problems.append(f"'health_path' is {health!r}; expected a path string.")
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
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            pass

    def describe(self) -> str:
        """The base URL without credentials, query or fragment, on one line."""
        return mask_url(self.base_url)

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
