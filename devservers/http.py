"""A small HTTP/1.1 upstream with keep-alive, scripted statuses and request counters.

Routes (any method unless noted):

- ``GET /health`` -> 200 ``{"ok": true}``
- ``/echo...`` -> 200 ``{"method", "path", "query", "headers", "body"}``; ``query`` maps each
  parameter to its last value, ``headers`` each header name to its value, ``body`` is text.
- ``/status/<code>`` -> that status
- ``/slow/<seconds>`` -> sleeps, then 200
- ``/script/<name>`` -> the next status from :meth:`UpstreamServer.script` (200 once exhausted)
- ``/json/<anything>`` -> 200 with a small JSON document
- anything else -> 404

Run it in the foreground with ``python -m devservers.http --port 8001``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devservers.service import Service

_NO_BODY_STATUSES = frozenset({204, 304})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the process alive
    allow_reuse_address = True
    owner: UpstreamServer

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        self.owner._connection_opened(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        self.owner._connection_closed(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, a kept-alive connection
    # waits for the client's delayed ACK (about 40 ms) before the body leaves.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: tests would drown in it."""

    # Every method goes through the same router.
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        parts = urlsplit(self.path)
        path = parts.path
        owner._count(path)

        if path == "/health" and self.command in ("GET", "HEAD"):
            self._send(200, {"ok": True})
        elif path.startswith("/echo"):
            self._send(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": dict(parse_qsl(parts.query, keep_blank_values=True)),
                    "headers": dict(self.headers.items()),
                    "body": body.decode("utf-8", errors="replace"),
                },
            )
        elif path.startswith("/status/"):
            try:
                code = int(path.split("/")[2])
            except ValueError:
                self._send(400, {"error": "bad status"})
            else:
                self._send(code, {"status": code})
        elif path.startswith("/slow/"):
            try:
                seconds = float(path.split("/")[2])
            except ValueError:
                self._send(400, {"error": "bad delay"})
            else:
                time.sleep(seconds)
                self._send(200, {"slept": seconds})
        elif path.startswith("/script/"):
            name = path.split("/")[2]
            code = owner._next_scripted(name)
            self._send(code, {"script": name, "status": code})
        elif path.startswith("/json/"):
            self._send(200, {"path": path, "items": [1, 2, 3], "ok": True})
        else:
            self._send(404, {"error": "not found", "path": path})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = b"" if code in _NO_BODY_STATUSES else json.dumps(payload).encode()
        self.send_response(code)
        if code not in _NO_BODY_STATUSES:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        if self.server.owner.close_after_each_response:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)


class UpstreamServer(Service):
    """A threaded HTTP/1.1 server on 127.0.0.1 for exercising HTTP clients against a real socket."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.close_after_each_response = False
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._scripts: dict[str, collections.deque[int]] = {}
        self._connections_opened = 0
        self._open_sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def url(self) -> str:
        """Base URL with a trailing slash, e.g. ``http://127.0.0.1:8001/``."""
        return f"http://{self.host}:{self.port}/"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return
        server = _Server((self.host, self._requested_port), _Handler)
        server.owner = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every open client connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise stay open in their handler threads.
        with self._lock:
            sockets = list(self._open_sockets)
            self._open_sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (for ``python -m devservers.http``)."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()


    # -- behaviour and counters ------------------------------------------------------------

    def script(self, name: str, statuses: Iterable[int]) -> None:
        """Queue statuses for ``/script/<name>``; each request pops one, then 200."""
        with self._lock:
            self._scripts[name] = collections.deque(int(s) for s in statuses)

    def requests_seen(self, path_prefix: str | None = None) -> int:
        """Requests received so far, optionally only those whose path starts with the prefix."""
        with self._lock:
            if path_prefix is None:
                return sum(self._counts.values())
            return sum(n for path, n in self._counts.items() if path.startswith(path_prefix))

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive reuse keeps this low)."""
        with self._lock:
            return self._connections_opened

    @property
    def open_connections(self) -> int:
        """TCP connections currently open."""
        with self._lock:
            return len(self._open_sockets)

    def reset(self) -> None:
        """Forget counters and scripts and turn ``close_after_each_response`` off."""
        with self._lock:
            self._counts.clear()
            self._scripts.clear()
            self._connections_opened = 0
            self.close_after_each_response = False

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def _next_scripted(self, name: str) -> int:
        with self._lock:
            queue = self._scripts.get(name)
            return queue.popleft() if queue else 200

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections_opened += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)

    def __repr__(self) -> str:
        return f"<UpstreamServer {self.url}>"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Run the devservers HTTP upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    server = UpstreamServer(args.host, args.port)
    server.start()
    print(f"devservers.http listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
