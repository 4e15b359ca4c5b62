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

from pooled_clients.aio import AsyncClientBackend
from pooled_clients.backends.base import ClientBackend, time_left
from pooled_clients.masking import printable, url_secrets

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncPostgresBackend", "PostgresBackend"]

#: Keywords ``psycopg.connect`` takes itself rather than passing to libpq.
PSYCOPG_KEYWORDS = frozenset({
    "autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context",
})
_SECRET_PARAMS = ("password", "sslpassword")


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


class PostgresBackend(ClientBackend["psycopg.Connection[Any]"]):
    """A pool of ``psycopg.Connection`` objects.

    Returned inside a transaction: rolled back. Broken, closed or returned mid-query:
    discarded. ``check`` is a round trip bounded by the time left.
    """

    #: The reset decides: an exception in the block leaves a transaction to roll back.
    discard_on_error = False

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
        """Reject what ``psycopg.connect`` would reject, without connecting."""
        try:
            from psycopg.conninfo import make_conninfo
        except ImportError:
            return ["psycopg 3 is not installed; install it with 'pip install psycopg[binary]'."]
        problems = []
        conninfo = options.get("conninfo", "")
        if not isinstance(conninfo, str):
            problems.append(f"'conninfo' is {type(conninfo).__name__}; expected a string such "
                            "as 'postgresql://user@host/dbname'.")
            conninfo = ""
        if "autocommit" in options and not isinstance(options["autocommit"], bool):
            problems.append(f"'autocommit' is {options['autocommit']!r}; expected True or False.")
        threshold = options.get("prepare_threshold", 5)
        if threshold is not None and (
            not isinstance(threshold, int) or isinstance(threshold, bool)
        ):
            problems.append(f"'prepare_threshold' is {threshold!r}; expected an integer or None.")
        _, libpq, _ = _connect_params(options)
        try:
            make_conninfo(conninfo, **libpq)
        except Exception as exc:
            from pooled_clients.masking import mask_text

            problems.append(mask_text(f"psycopg rejects the connection options: {exc}"))
        return problems

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


class AsyncPostgresBackend(AsyncClientBackend["psycopg.AsyncConnection[Any]"]):
    """A pool of ``psycopg.AsyncConnection`` objects, for async code only.

    The same ``OPTIONS`` and behaviour as :class:`PostgresBackend`: returned inside a
    transaction, rolled back; broken, closed or returned mid-query, discarded.
    """

    discard_on_error = False

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
        return self._parsed.secrets()
