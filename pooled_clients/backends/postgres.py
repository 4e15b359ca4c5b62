"""PostgreSQL clients: psycopg 3 connections.

``OPTIONS`` takes ``conninfo`` (a URL or ``key=value`` string) plus any keyword of
``psycopg.connect``: libpq parameters (``host``, ``dbname``, ``application_name``, ...) and
psycopg's own (``autocommit``, ``prepare_threshold``, ``row_factory``, ...). Use
``"prepare_threshold": None`` behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import math
import re
import select
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pooled_clients.backends.base import (
    AsyncClientBackend,
    ClientBackend,
    check_number,
    did_you_mean,
    provided_at_creation,
    show,
    time_left,
    unknown_options,
)
from pooled_clients.masking import printable, url_secrets

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncPostgresBackend", "PostgresBackend"]

#: Keywords ``psycopg.connect`` takes itself rather than passing to libpq.
PSYCOPG_KEYWORDS = frozenset({
    "autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context",
})
_SECRET_PARAMS = ("password", "sslpassword")


#: libpq keywords that take an integer (as an int or a string of digits), with the bounds
#: libpq and the kernel accept (Linux refuses TCP_KEEPIDLE 0 or above 32767, for example).
_INTEGER_PARAMS: dict[str, tuple[int, int]] = {
    "connect_timeout": (0, 86400),
    "keepalives": (0, 1),
    "keepalives_idle": (1, 32767),
    "keepalives_interval": (1, 32767),
    "keepalives_count": (1, 127),
    "tcp_user_timeout": (0, 86_400_000),
}
#: libpq keywords that take one of a few words.
_CHOICE_PARAMS: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "min_protocol_version": ("3.0", "3.2", "latest"),
    "max_protocol_version": ("3.0", "3.2", "latest"),
    "ssl_min_protocol_version": ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "replication": ("", "true", "on", "yes", "1", "false", "off", "no", "0", "database"),
}
_AUTH_METHODS = frozenset({"password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none"})
#: Encoding names the server accepts, compared as it does: lower case, letters and digits only.
_ENCODINGS = frozenset({
    "auto", "abc", "alt", "big5", "euccn", "eucjis2004", "eucjp", "euckr", "euctw", "gb18030",
    "gbk", "iso88591", "iso885910", "iso885913", "iso885914", "iso885915", "iso885916",
    "iso88595", "iso88596", "iso88597", "iso88598", "iso88599", "johab", "koi8", "koi8r",
    "koi8u", "latin1", "latin2", "latin3", "latin4", "latin5", "latin6", "latin7", "latin8",
    "latin9", "latin10", "mskanji", "muleinternal", "shiftjis", "shiftjis2004", "sjis",
    "sqlascii", "tcvn", "tcvn5712", "uhc", "unicode", "utf8", "vscii", "win", "win866",
    "win874", "win932", "win936", "win949", "win950", "windows866", "windows874",
    "windows932", "windows936", "windows949", "windows950",
    *(f"win{n}" for n in range(1250, 1259)), *(f"windows{n}" for n in range(1250, 1259)),
})
#: libpq's SCRAM keys: the base64 of a SHA-256-sized key.
_SCRAM_KEYS = ("scram_client_key", "scram_server_key")
_MAX_PREPARE_THRESHOLD = 1_000_000


def _libpq_keywords() -> frozenset[str]:
    """Every connection keyword the installed libpq knows."""
    import psycopg

    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def _conninfo_keywords(conninfo: str) -> list[str]:
    """The keyword names written in a conninfo string (URI query parameters or
    ``key=value`` pairs), found without libpq so that every unknown one is reported."""
    if "://" in conninfo:
        from urllib.parse import parse_qsl, urlsplit

        try:
            query = urlsplit(conninfo).query
        except ValueError:
            return []
        return [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return re.findall(r"(?:^|\s)(\w+)\s*=", conninfo)


def _libpq_reason(exc: Exception, known: frozenset[str]) -> str:
    """libpq's message without its trailing newline, and without quoting a fragment of the
    string that is not a keyword (it may be part of a password)."""
    text = str(exc).strip()
    return re.sub(r'"([^"]*)"', lambda m: m[0] if m[1] in known or m[1] == "=" else '"..."',
                  text)


def _check_postgres_options(options: Mapping[str, Any]) -> list[str]:
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        libpq_known = _libpq_keywords()
    except ImportError:
        return ["psycopg 3 is not installed; install it with 'pip install psycopg[binary]'."]
    problems: list[str] = []
    given = options.get("conninfo", "")
    conninfo = given if isinstance(given, str) else ""
    if not (isinstance(given, str) or given is None or provided_at_creation(given)):
        problems.append(f"'conninfo' is {type(given).__name__}; expected a string such "
                        "as 'postgresql://user@host/dbname'.")
    known = sorted(libpq_known | PSYCOPG_KEYWORDS | {"conninfo"})
    problems += unknown_options(options, known, "'conninfo', a libpq connection keyword or "
                                f"one of psycopg's: {', '.join(sorted(PSYCOPG_KEYWORDS))}")
    unknown_in_conninfo = False
    for name in _conninfo_keywords(conninfo):
        if name not in libpq_known:
            unknown_in_conninfo = True
            problems.append(f"'conninfo' has unknown keyword {show(name)}; expected a libpq "
                            f"connection keyword.{did_you_mean(name, libpq_known)}")
    if "autocommit" in options and not isinstance(options["autocommit"], bool | None):
        problems.append(f"'autocommit' is {show(options['autocommit'])}; expected True or False.")
    problems += check_number(options, "prepare_threshold", 0, _MAX_PREPARE_THRESHOLD,
                             integer=True, seconds=False, allow_none=True)
    for name in ("row_factory", "cursor_factory"):
        if options.get(name) is not None and not callable(options[name]):
            problems.append(f"{name!r} is {show(options[name])}; expected a callable "
                            "(such as psycopg.rows.dict_row) or None.")
    libpq: dict[str, Any] = {}
    for name, value in options.items():
        if name == "conninfo" or name in PSYCOPG_KEYWORDS or name not in libpq_known:
            continue
        if provided_at_creation(value) or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            # The value's text is not shown: this may be the password.
            problems.append(f"{name!r} is of type {type(value).__name__}; expected a string or "
                            "an integer.")
            continue
        if isinstance(value, int) and not -2**63 <= value < 2**63:
            problems.append(f"{name!r} is {show(value)}; expected a string or a 64-bit "
                            "integer.")
            continue
        libpq[name] = value
    try:
        params = conninfo_to_dict(make_conninfo(conninfo, **libpq))
    except Exception as exc:
        reason = _libpq_reason(exc, libpq_known)
        # libpq names only the first unknown keyword: each one is reported above.
        if not (unknown_in_conninfo and reason.startswith(("invalid connection option",
                                                            "invalid URI query parameter"))):
            problems.append(f"psycopg rejects the connection options: {reason}")
        return problems
    return problems + _check_param_values(params)


def _check_param_values(params: Mapping[str, Any]) -> list[str]:
    """Values libpq would refuse only when connecting: ports, integers, enumerations."""
    problems = []
    port = params.get("port")
    if port is not None and not all(not part.strip() or _is_int_text(part, 1, 65535)
                                    for part in str(port).split(",")):
        problems.append(f"'port' is {show(str(port))}; expected an integer from 1 to 65535 "
                        "(or a comma-separated list of them).")
    for name, (low, high) in _INTEGER_PARAMS.items():
        value = str(params.get(name, "0")).strip()
        if name in params and not _is_int_text(value, low, high):
            problems.append(f"{name!r} is {show(value)}; expected an integer from {low} to "
                            f"{high}.")
    for name, choices in _CHOICE_PARAMS.items():
        word = params.get(name)
        if word is not None and word not in choices:
            problems.append(f"{name!r} is {show(word)}; expected one of "
                            f"{', '.join(repr(c) for c in choices)}.")
    methods = params.get("require_auth")
    if methods is not None and not all(
            method.removeprefix("!") in _AUTH_METHODS for method in methods.split(",")):
        problems.append(f"'require_auth' is {show(methods)}; expected a comma-separated list "
                        f"of {', '.join(sorted(_AUTH_METHODS))}, each may start with '!'.")
    encoding = params.get("client_encoding")
    if encoding and re.sub(r"[^a-z0-9]", "", encoding.lower()) not in _ENCODINGS:
        problems.append(f"'client_encoding' is {show(encoding)}; expected a PostgreSQL "
                        "encoding name such as 'UTF8', or 'auto'.")
    for name in _SCRAM_KEYS:
        if name in params and not _is_scram_key(params[name]):
            # Not shown: it is a key.
            problems.append(f"{name!r} is not the base64 of a 32-byte key.")
    return problems


def _is_scram_key(text: str) -> bool:
    import base64
    import binascii

    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _is_int_text(text: str, low: int, high: int) -> bool:
    text = text.strip()
    # ASCII digits only ("²".isdigit() is true), and short: int() of a huge string raises.
    return (text.isascii() and text.isdigit() and len(text) <= 12
            and low <= int(text) <= high)


def _connect_params(options: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split OPTIONS into conninfo, libpq keywords and psycopg keywords."""
    conninfo = options.get("conninfo", "") or ""
    libpq = {k: v for k, v in options.items() if k != "conninfo" and k not in PSYCOPG_KEYWORDS}
    own = {k: v for k, v in options.items() if k in PSYCOPG_KEYWORDS}
    return conninfo, libpq, own


def _is_lost(client: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when the connection was lost (not when it was merely returned mid-query)."""
    return bool(client.broken or client.closed)


def _can_roll_back(client: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
                   status: int, rollback_status: tuple[int, ...]) -> bool:
    """For a connection released outside IDLE: True when a rollback can make it reusable;
    False when it must be discarded (lost, mid-query or in an unknown state)."""
    return not _is_lost(client) and status in rollback_status


def _require_idle(client: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Raise unless the connection is open and outside any transaction (before a check)."""
    import psycopg

    if _is_lost(client):
        raise psycopg.OperationalError("the connection is closed")
    status = client.pgconn.transaction_status
    if status != psycopg.pq.TransactionStatus.IDLE:
        state = psycopg.pq.TransactionStatus(status).name
        raise psycopg.OperationalError(f"the connection is not idle ({state})")


class _PostgresKeys:
    """What a key means to both PostgreSQL backends (keyed pools)."""

    def key_options(self, key: Any) -> dict[str, Any]:
        """A key is a conninfo (``"dbname=tenant_7"``, a ``postgresql://`` URL) or the items
        of a dict of connect keywords (``frozenset({"dbname": "t7"}.items())``: a dict is not
        hashable), merged over the pool's OPTIONS."""
        return _postgres_key_options(key)

    def describe_key(self, key: Any) -> str:
        """``user@host:port/dbname`` of the key, never its password."""
        return _describe_postgres_key(key)


class PostgresBackend(_PostgresKeys, ClientBackend["psycopg.Connection[Any]"]):
    """A pool of ``psycopg.Connection`` objects.

    Returned inside a transaction: rolled back. Broken, closed or returned mid-query:
    discarded. ``check`` is a round trip bounded by the time left.
    """

    #: The reset decides: an exception in the block leaves a transaction to roll back.
    discard_on_error = False
    #: Factories psycopg calls itself: never called by the pool for a value.
    never_called = PSYCOPG_KEYWORDS

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self._psycopg = psycopg
        conninfo, libpq, own = _connect_params(options)
        self._conninfo = make_conninfo(conninfo, **libpq)
        self._params = conninfo_to_dict(self._conninfo)
        self._own = own
        self._idle_status = psycopg.pq.TransactionStatus.IDLE
        self._rollback_status = (psycopg.pq.TransactionStatus.INTRANS,
                                 psycopg.pq.TransactionStatus.INERROR)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Reject what ``psycopg.connect`` or libpq would reject, each bad option on its own,
        without connecting."""
        return _check_postgres_options(options)

    # ------------------------------------------------------------------ lifecycle

    def create(self) -> psycopg.Connection[Any]:
        """Connect, honouring CONNECT_TIMEOUT (libpq's minimum is 2 seconds)."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        return self._psycopg.connect(
            self._conninfo, connect_timeout=max(1, math.ceil(timeout)), **self._own
        )

    def close(self, client: psycopg.Connection[Any]) -> None:
        """Close the connection (a no-op when it is already closed)."""
        client.close()

    def is_broken(self, client: psycopg.Connection[Any]) -> bool:
        """True when the connection was lost (not when it was merely returned mid-query)."""
        return _is_lost(client)

    def reset(self, client: psycopg.Connection[Any]) -> bool:
        """Roll back an open or failed transaction; False discards the connection."""
        status = client.pgconn.transaction_status
        if status == self._idle_status:
            return True  # libpq reports IDLE only on a good connection
        if not _can_roll_back(client, status, self._rollback_status):
            return False
        try:
            self._round_trip(client, b"ROLLBACK", time_left(self._connect_timeout))
        except Exception:
            return False
        return client.pgconn.transaction_status == self._idle_status

    def reset_nowait(self, client: psycopg.Connection[Any]) -> bool:
        """Whether the connection is idle outside a transaction: nothing to roll back
        (False in a subclass with a ``reset`` of its own, which then always runs)."""
        if type(self).reset is not PostgresBackend.reset:
            return False
        return bool(client.pgconn.transaction_status == self._idle_status)

    def check(self, client: psycopg.Connection[Any]) -> None:
        """A ``SELECT 1`` round trip, bounded by the time left (never a hang)."""
        _require_idle(client)
        self._round_trip(client, b"SELECT 1", time_left(self._connect_timeout))

    def _round_trip(self, client: psycopg.Connection[Any], query: bytes, timeout: float) -> None:
        """Run ``query`` on the raw libpq connection, waiting at most ``timeout`` seconds."""
        pq = self._psycopg.pq
        pgconn = client.pgconn
        deadline = time.monotonic() + max(timeout, 0.0)
        with client.lock:
            pgconn.send_query(query)
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN | select.POLLOUT)
            while pgconn.flush():
                self._poll(poller, deadline)
            poller.modify(pgconn.socket, select.POLLIN)
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    break
                self._poll(poller, deadline)
            error: str | None = None
            while (result := pgconn.get_result()) is not None:
                if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK,
                                         pq.ExecStatus.EMPTY_QUERY):
                    message = result.error_message.decode("utf-8", "replace").strip()
                    error = message or pq.ExecStatus(result.status).name
        if error is not None:
            raise self._psycopg.OperationalError(error)

    @staticmethod
    def _poll(poller: select.poll, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000.0):
            raise TimeoutError("the server did not answer in time")

    # ------------------------------------------------------------------ presentation

    def describe(self) -> str:
        """``postgresql://user@host:port/dbname`` without the password, on one line."""
        if self.provided("conninfo"):
            return "(conninfo provided by a callable)"
        params = self._params
        host = params.get("host") or params.get("hostaddr") or "local socket"
        port = params.get("port")
        user = str(params.get("user") or "")
        dbname = params.get("dbname")
        target = f"postgresql://{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
        return printable(f"{target}/{dbname}" if dbname else target)

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """The password(s) in ``conninfo`` (URL or keywords, parsed or not) and every
        secret-named option (``password``, ``sslpassword``, ...)."""
        return conninfo_secrets(options.get("conninfo")) + super().option_secrets(options)

    def secrets(self) -> list[str]:
        """The password(s) in conninfo or OPTIONS."""
        found = [str(self._params[key]) for key in _SECRET_PARAMS if self._params.get(key)]
        return found + super().secrets()


# A password keyword and everything after it: when libpq cannot parse a conninfo it may
# quote any piece of it, and an unquoted password with spaces is several pieces.
_PASSWORD_TAIL_RE = re.compile(r"(?:ssl)?password\s*=\s*(?P<rest>.*)", re.IGNORECASE | re.DOTALL)


def conninfo_secrets(conninfo: object) -> list[str]:
    """Passwords in a conninfo string: parsed when libpq accepts it, else the text after
    each ``password=`` (whole, and word by word up to the next ``name=``)."""
    if not isinstance(conninfo, str) or not conninfo:
        return []
    # A URL's query holds libpq parameters: only its password ones are secrets (below).
    found = url_secrets(conninfo.split("?", 1)[0]) if "://" in conninfo else []
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(conninfo)
    except Exception:
        params = {}
        for match in _PASSWORD_TAIL_RE.finditer(conninfo):
            rest = match["rest"].strip()
            found.append(rest)
            for word in rest.split():
                if "=" in word:
                    break
                found.append(word.strip("'\""))
    return found + [str(params[key]) for key in _SECRET_PARAMS if params.get(key)]


class AsyncPostgresBackend(_PostgresKeys, AsyncClientBackend["psycopg.AsyncConnection[Any]"]):
    """A pool of ``psycopg.AsyncConnection`` objects, for async code only.

    The same ``OPTIONS`` and behaviour as :class:`PostgresBackend`: returned inside a
    transaction, rolled back; broken, closed or returned mid-query, discarded.
    """

    discard_on_error = False
    never_called = PSYCOPG_KEYWORDS

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        import psycopg

        self._psycopg = psycopg
        # The sync backend parses and describes the options; it never connects here.
        self._parsed = PostgresBackend(alias, options)
        self._idle_status = psycopg.pq.TransactionStatus.IDLE
        self._rollback_status = (psycopg.pq.TransactionStatus.INTRANS,
                                 psycopg.pq.TransactionStatus.INERROR)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """The same checks as :meth:`PostgresBackend.check_options`."""
        return PostgresBackend.check_options(options)

    async def create(self) -> psycopg.AsyncConnection[Any]:  # type: ignore[override]
        """Connect on the running loop, honouring CONNECT_TIMEOUT."""
        return await self._psycopg.AsyncConnection.connect(
            self._parsed._conninfo, connect_timeout=max(1, math.ceil(self._connect_timeout)),
            **self._parsed._own,
        )

    async def close(self, client: psycopg.AsyncConnection[Any]) -> None:  # type: ignore[override]
        """Close the connection (a no-op when it is already closed)."""
        await client.close()

    def close_nowait(self, client: psycopg.AsyncConnection[Any]) -> None:
        """Close without awaiting (the loop it belongs to is gone); libpq closes synchronously."""
        client.pgconn.finish()

    def is_broken(self, client: psycopg.AsyncConnection[Any]) -> bool:
        """True when the connection was lost."""
        return _is_lost(client)

    async def reset(self, client: psycopg.AsyncConnection[Any]) -> bool:  # type: ignore[override]
        """Roll back an open or failed transaction; False discards the connection."""
        status = client.pgconn.transaction_status
        if status == self._idle_status:
            return True  # libpq reports IDLE only on a good connection
        if not _can_roll_back(client, status, self._rollback_status):
            return False
        try:
            await client.rollback()
        except Exception:
            return False
        return bool(client.pgconn.transaction_status == self._idle_status)

    def reset_nowait(self, client: psycopg.AsyncConnection[Any]) -> bool:
        """Whether the connection is idle outside a transaction: nothing to roll back
        (False in a subclass with a ``reset`` of its own, which then always runs)."""
        if type(self).reset is not AsyncPostgresBackend.reset:
            return False
        return bool(client.pgconn.transaction_status == self._idle_status)

    async def check(self, client: psycopg.AsyncConnection[Any]) -> None:  # type: ignore[override]
        """A ``SELECT 1`` round trip (the pool bounds it by the time left)."""
        _require_idle(client)
        await client.execute("SELECT 1")
        if client.pgconn.transaction_status != self._idle_status:
            await client.rollback()  # not autocommit: end the transaction the check began

    def describe(self) -> str:
        """``postgresql://user@host:port/dbname`` without the password."""
        return self._parsed.describe()

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """The same secrets as :meth:`PostgresBackend.option_secrets`."""
        return PostgresBackend.option_secrets(options)

    def secrets(self) -> list[str]:
        """The password(s) in conninfo or OPTIONS."""
        return self._parsed.secrets() + list(self.provided_secrets())


def _postgres_key_options(key: Any) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    if isinstance(key, str) and key:
        try:
            return dict(conninfo_to_dict(key))
        except Exception as exc:
            raise ValueError(f"the key is not a valid conninfo ({type(exc).__name__})") from None
    if isinstance(key, frozenset | tuple) and all(
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            for item in key):
        return dict(key)
    raise ValueError("a PostgreSQL key is a conninfo string or the items of a dict of connect "
                     "keywords")


def _describe_postgres_key(key: Any) -> str:
    from pooled_clients.backends.base import describe_key_hash

    try:
        params = _postgres_key_options(key)
    except ValueError:
        return describe_key_hash(key)
    user, host, port = params.get("user"), params.get("host"), params.get("port")
    where = f"{host}{':' + str(port) if port else ''}" if host else ""
    text = f"{user + '@' if user else ''}{where}/{params.get('dbname') or ''}"
    return text if text != "/" else describe_key_hash(key)
