"""A server that answers every client with hostile error text echoing what it was sent.

Two protocols, enough for the client libraries to turn the answer into their own error:

- ``"postgres"``: declines TLS, asks for a cleartext password, then fails the login with a
  FATAL error whose message repeats the startup parameters and the password it received,
  followed by a line break and a forged log line.
- ``"http"``: answers every request with a malformed status line repeating the request
  (request line with its query string, and every header), so that http.client raises
  ``BadStatusLine`` carrying it.

Secrets the client sent thus come back inside the library's exception text: whatever the
project renders of that exception must still mask them.
"""

from __future__ import annotations

import socket
import struct
import threading

from devservers.service import Service

__all__ = ["HostileServer"]

FORGED = "\nWARNING pooled_clients: forged line"
_SSL_REQUEST = 80877103


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    return data


class HostileServer(Service):
    """A threaded server on 127.0.0.1 speaking just enough of ``protocol`` to be hostile."""

    def __init__(self, protocol: str) -> None:
        if protocol not in ("postgres", "http"):
            raise ValueError(f"protocol {protocol!r}; expected 'postgres' or 'http'")
        self.protocol = protocol
        self.port = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Listen on a free port and serve in a daemon thread."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"hostile-{self.protocol}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.protocol == "postgres":
                self._answer_postgres(conn)
            else:
                self._answer_http(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer_postgres(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!I", _recv_exactly(conn, 4))
            body = _recv_exactly(conn, length - 4)
            if struct.unpack("!I", body[:4])[0] == _SSL_REQUEST:
                conn.sendall(b"N")
                continue
            break
        fields = body[4:].split(b"\0")
        params = " ".join(f"{k.decode()}={v.decode()}" for k, v in zip(fields[::2], fields[1::2],
                                                                       strict=False) if k)
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _recv_exactly(conn, 1)
        (length,) = struct.unpack("!I", _recv_exactly(conn, 4))
        password = _recv_exactly(conn, length - 4).rstrip(b"\0").decode("utf-8", "replace")
        assert kind == b"p"
        message = (f"password authentication failed; you sent {params} "
                   f"password={password} (that is {password!r}){FORGED}")
        payload = b"".join(code + text.encode() + b"\0" for code, text in (
            (b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28P01"), (b"M", message))) + b"\0"
        conn.sendall(b"E" + struct.pack("!I", len(payload) + 4) + payload)

    def _answer_http(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        head = request.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b" | ")
        conn.sendall(b"HTTP/1.1 hostile " + head + FORGED.encode() + b"\r\n\r\n")
