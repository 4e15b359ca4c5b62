"""A WebSocket echo server in a thread (the ``websockets`` library's sync server).

Every text or binary message comes back as it was, except two questions a test may ask:
``"whoami"`` (answered with the request path) and ``"header:NAME"`` (answered with that
request header's value, or ``""``).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from typing import Any

from devservers.service import Service


class WebSocketEchoServer(Service):
    """An echo server on 127.0.0.1 (``wss://`` when given a server TLS context)."""

    host = "127.0.0.1"

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.port = 0
        self.connections_seen = 0
        self.messages_seen = 0
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:port/`` (``wss://localhost:port/`` with TLS, matching the
        test certificate's names)."""
        if self.tls is not None:
            return f"wss://localhost:{self.port}/"
        return f"ws://{self.host}:{self.port}/"

    def start(self) -> None:
        """Listen on a free port and serve in a daemon thread."""
        from websockets.sync.server import serve

        if self._server is not None:
            return
        self._server = serve(self._handle, self.host, 0, ssl=self.tls, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"ws-echo-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        self.close_all_connections()
        server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def close_all_connections(self) -> None:
        """Close every open connection from the server side (a normal closing handshake)."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._open)

    def _handle(self, connection: Any) -> None:
        with self._lock:
            self.connections_seen += 1
            self._open.add(connection)
        try:
            for message in connection:
                if message == "whoami":
                    connection.send(connection.request.path)
                elif isinstance(message, str) and message.startswith("header:"):
                    connection.send(connection.request.headers.get(message[7:], ""))
                else:
                    connection.send(message)
                # Counted once answered: a test that saw the count knows the reply is sent.
                with self._lock:
                    self.messages_seen += 1
        except Exception:
            pass  # a client that vanished ends its handler
        finally:
            with self._lock:
                self._open.discard(connection)

    def __repr__(self) -> str:
        return f"<WebSocketEchoServer {self.url}>"
