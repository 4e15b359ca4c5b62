"""Raw TCP and TLS clients: one connected socket per pooled client.

``OPTIONS``: ``host``, ``port``, ``tls`` (``False``, ``True`` or a dict of ``cafile``,
``certfile``, ``keyfile``, ``server_hostname``, ``verify``), ``keepalive`` (``SO_KEEPALIVE``,
default ``True``) and ``timeout`` (seconds each ``send``/``recv`` may block once connected;
default ``None``, blocking).

The check finds a peer that closed the connection without blocking and without reading
the caller's data: it polls the raw socket and, only when it is readable, reads what is
there. For TLS that read goes through the TLS layer (``SSLSocket.recv`` rejects
``MSG_PEEK``), so records that carry no application data, such as TLS 1.3 session
tickets, are consumed and the socket passes; an end of stream, or bytes nobody read,
fail it.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from pooled_clients.backends.base import (
    MAX_SECONDS,
    MIN_SECONDS,
    ClientBackend,
    check_number,
    did_you_mean,
    number_fault,
    provided_at_creation,
    show,
    unknown_options,
)
from pooled_clients.masking import printable

__all__ = ["TCPBackend"]

OPTION_NAMES = ("host", "port", "tls", "keepalive", "timeout")
TLS_OPTION_NAMES = ("cafile", "certfile", "keyfile", "keyfile_password", "server_hostname",
                    "verify")


class PeerClosedError(ConnectionError):
    """The peer closed the connection, or it holds bytes no caller read."""


class TCPBackend(ClientBackend[socket.socket]):
    """A pool of connected ``socket.socket`` objects (``ssl.SSLSocket`` with ``tls``).

    Clients are plain sockets: use ``sendall``/``recv`` (or ``makefile``). A socket
    returned with unread bytes, or closed by its user, is discarded rather than handed
    to the next caller.
    """

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        # Absent when a callable provides them at each creation.
        self.host = str(options.get("host", ""))
        self.port = int(options.get("port", 0))
        self.keepalive = bool(options.get("keepalive", True))
        self.timeout: float | None = (
            float(options["timeout"]) if options.get("timeout") is not None else None
        )
        tls = options.get("tls", False)
        self.tls_options: dict[str, Any] | None = (
            dict(tls) if isinstance(tls, Mapping) else ({} if tls else None)
        )
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()

    # ------------------------------------------------------------------ options

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with the TCP OPTIONS, without any network or file I/O. A callable
        value is accepted as it is: it is called for each client creation."""
        problems = unknown_options(options, OPTION_NAMES)
        host = options.get("host")
        if host is None:
            problems.append("'host' is required; expected a host name or IP address.")
        elif not provided_at_creation(host) and not (
                isinstance(host, str) and host and not any(c.isspace() for c in host)):
            problems.append(f"'host' is {show(host)}; expected a host name or IP address.")
        port = options.get("port")
        if not provided_at_creation(port) and number_fault(port, 1, 65535, integer=True):
            problems.append(f"'port' is {show(port)}; expected an integer from 1 to 65535.")
        keepalive = options.get("keepalive", True)
        if not isinstance(keepalive, bool) and not provided_at_creation(keepalive):
            problems.append(f"'keepalive' is {show(keepalive)}; expected True or False.")
        problems += check_number(options, "timeout", MIN_SECONDS, MAX_SECONDS, allow_none=True)
        tls = options.get("tls", False)
        if isinstance(tls, Mapping):
            problems.extend(cls._check_tls_options(tls))
        elif not isinstance(tls, bool) and not provided_at_creation(tls):
            problems.append(f"'tls' is {show(tls)}; expected True, False or a dict of "
                            f"{', '.join(TLS_OPTION_NAMES)}.")
        return problems

    @staticmethod
    def _check_tls_options(tls: Mapping[str, Any]) -> list[str]:
        problems = []
        for name in tls:
            if name not in TLS_OPTION_NAMES:
                problems.append(f"'tls' has unknown key {show(name)}; expected one of "
                                f"{', '.join(TLS_OPTION_NAMES)}."
                                f"{did_you_mean(name, TLS_OPTION_NAMES)}")
        for name in ("cafile", "certfile", "keyfile", "keyfile_password", "server_hostname"):
            value = tls.get(name)
            if value is not None and not provided_at_creation(value) and (
                    not isinstance(value, str) or not value):
                problems.append(f"'tls'[{name!r}] is {show(value)}; expected a non-empty string.")
        if "verify" in tls and not isinstance(tls["verify"], bool):
            problems.append(f"'tls'['verify'] is {show(tls['verify'])}; expected True or False.")
        if tls.get("keyfile") and not tls.get("certfile"):
            problems.append("'tls' has 'keyfile' without 'certfile'; expected both (or a "
                            "certfile holding the key too).")
        return problems

    # ------------------------------------------------------------------ lifecycle

    def tls_context(self) -> ssl.SSLContext:
        """The client-side TLS context, built on first use (files are read then)."""
        with self._context_lock:
            if self._context is None:
                self._context = client_tls_context(self.tls_options or {})
            return self._context

    def create(self) -> socket.socket:
        """Connect (and handshake) within ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.tls_options is not None:
                hostname = self.tls_options.get("server_hostname") or self.host
                # The socket's timeout (what is left of connect_timeout) bounds the handshake.
                sock.settimeout(max(0.001, self.connect_timeout))
                sock = self.tls_context().wrap_socket(sock, server_hostname=hostname)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        return sock

    def close(self, client: socket.socket) -> None:
        """Close the socket; no TLS close_notify is sent, so this never blocks."""
        client.close()

    def is_broken(self, client: socket.socket) -> bool:
        """True when the caller closed the socket."""
        return client.fileno() == -1

    def reset(self, client: socket.socket) -> bool:
        """Restore the timeout; False (discard) when the socket holds unread bytes or
        the peer is gone, so the next caller never reads someone else's reply."""
        if client.fileno() == -1:
            return False
        try:
            self._probe(client)
            client.settimeout(self.timeout)
        except OSError:
            return False
        return True

    def check(self, client: socket.socket) -> None:
        """Raise when the peer closed the connection or unread bytes are waiting."""
        if client.fileno() == -1:
            raise PeerClosedError("the socket was closed")
        self._probe(client)

    def _probe(self, client: socket.socket) -> None:
        if isinstance(client, ssl.SSLSocket) and client.pending():
            raise PeerClosedError("unread TLS application data is buffered on the socket")
        # poll, not select: select() refuses file descriptors >= 1024, which a busy
        # worker has.
        poller = select.poll()
        poller.register(client, select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return
        previous = client.gettimeout()
        client.setblocking(False)
        try:
            if isinstance(client, ssl.SSLSocket):
                self._read_tls_records(client)
            else:
                data = client.recv(1, socket.MSG_PEEK)
                if not data:
                    raise PeerClosedError("the peer closed the connection")
                raise PeerClosedError("unread data is waiting on the socket")
        finally:
            if client.fileno() != -1:
                client.settimeout(previous)

    @staticmethod
    def _read_tls_records(client: ssl.SSLSocket) -> None:
        """Consume pending TLS records: fine when none carried application data."""
        try:
            data = client.recv(1)
        except ssl.SSLWantReadError:
            return  # only handshake messages (session tickets, key updates) were pending
        except ssl.SSLZeroReturnError as exc:
            raise PeerClosedError("the peer closed the TLS session") from exc
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            raise
        if not data:
            raise PeerClosedError("the peer closed the connection")
        raise PeerClosedError("unread TLS application data was waiting on the socket")

    # ------------------------------------------------------------------ keys

    @classmethod
    def keyed_placeholders(cls) -> dict[str, Any]:
        """A key supplies the host and port."""
        return {"host": "localhost", "port": 1}

    def key_options(self, key: Any) -> dict[str, Any]:
        """A key is ``(host, port)`` or ``"host:port"`` (``"[::1]:5432"`` for IPv6)."""
        host, port = _address(key)
        return {"host": host, "port": port}

    def describe_key(self, key: Any) -> str:
        """``host:port``: an address is no secret."""
        try:
            host, port = _address(key)
        except ValueError:
            return super().describe_key(key)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ------------------------------------------------------------------ presentation

    def describe(self) -> str:
        """``tcp://host:port`` or ``tls://host:port``, on one line."""
        scheme = "tcp" if self.tls_options is None else "tls"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.provided("host"):
            host = "(host provided by a callable)"
        port = "(port provided by a callable)" if self.provided("port") else self.port
        return printable(f"{scheme}://{host}:{port}")


def _address(key: Any) -> tuple[str, int]:
    """``(host, port)`` from a key of a keyed TCP pool; ``ValueError`` when it is neither
    a ``(host, port)`` pair nor a ``"host:port"`` string."""
    if isinstance(key, tuple) and len(key) == 2:
        host, port = key
    elif isinstance(key, str) and ":" in key:
        host, _, port = key.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    else:
        raise ValueError("a TCP key is (host, port) or 'host:port'")
    if not isinstance(host, str) or not host:
        raise ValueError("a TCP key's host must be a non-empty string")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ValueError("a TCP key's port must be a number") from None
    if isinstance(port, bool) or not 1 <= number <= 65535:
        raise ValueError("a TCP key's port must be from 1 to 65535")
    return host, number


def client_tls_context(tls: Mapping[str, Any]) -> ssl.SSLContext:
    """A client TLS context from a ``tls`` dict (``cafile``, ``certfile``, ``keyfile``,
    ``keyfile_password``, ``verify``); shared by every backend that speaks TLS itself.

    An encrypted private key without ``keyfile_password`` is refused with an error saying
    so: OpenSSL would otherwise ask for the pass phrase on the terminal, and a creation
    thread inside ``runserver`` would wait for an answer forever."""
    context = ssl.create_default_context(cafile=tls.get("cafile"))
    if not tls.get("verify", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.get("certfile"):
        password = tls.get("keyfile_password")
        context.load_cert_chain(tls["certfile"], tls.get("keyfile"),
                                password=password if password is not None else _no_pass_phrase)
    return context


def _no_pass_phrase() -> str:
    raise ssl.SSLError("the TLS private key is encrypted and no tls['keyfile_password'] was "
                       "given")
