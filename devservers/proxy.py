"""A TCP proxy on 127.0.0.1 that can black-hole, delay, reset or refuse traffic on demand."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

from devservers.service import Service


def _close_quietly(sock: socket.socket, *, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:
            # Linger 0 turns close() into an RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # SHUT_RD wakes a pump thread blocked in recv() without sending anything; without it
            # the kernel keeps the socket alive until that recv() returns.
            sock.shutdown(socket.SHUT_RD)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.dead = False
        self.pumps_left = 2

    def kill(self, *, reset: bool) -> None:
        self.dead = True
        _close_quietly(self.client, reset=reset)
        _close_quietly(self.upstream, reset=reset)


class FaultProxy(Service):
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``, with injectable faults.

    - :meth:`pause` keeps accepting and keeps sockets open but forwards nothing (a black hole);
      bytes read meanwhile are delivered after :meth:`resume`.
    - :meth:`delay` sleeps before forwarding each chunk.
    - :meth:`drop` resets (RST) every existing connection on both sides.
    - :meth:`refuse` makes the proxy reset new connections right after accepting them.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.connections_accepted = 0
        self._cond = threading.Condition()
        self._paused = False
        self._delay = 0.0
        self._refusing = False
        self._stopped = True
        self._pairs: set[_Pair] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free port and start forwarding."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        # A short timeout lets the accept loop notice stop(): closing a socket does not wake a
        # thread blocked in accept() on Linux.
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopped = False
        self._spawn(self._accept_loop, f"proxy-accept-{self.port}")

    def stop(self) -> None:
        """Close the listener and every connection; returns promptly."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            pairs = list(self._pairs)
            self._pairs.clear()
            self._cond.notify_all()
        for pair in pairs:
            pair.kill(reset=False)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        for thread in self._threads:
            thread.join(timeout=1)
        self._threads.clear()


    # -- faults ----------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop forwarding in both directions while keeping every socket open."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        """Forward again, including anything read while paused."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def delay(self, seconds: float) -> None:
        """Sleep ``seconds`` before forwarding each chunk (0 turns it off)."""
        self._delay = max(0.0, float(seconds))

    def drop(self) -> None:
        """Reset every existing connection (client and upstream side) with an RST."""
        with self._cond:
            pairs = list(self._pairs)
            self._pairs.clear()
            self._cond.notify_all()
        for pair in pairs:
            pair.kill(reset=True)

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are reset as soon as they are accepted."""
        self._refusing = on

    def reset_faults(self) -> None:
        """Resume, no delay, stop refusing."""
        self.refuse(False)
        self.delay(0)
        self.resume()

    @property
    def active_connections(self) -> int:
        """Proxied connections currently open."""
        with self._cond:
            return len(self._pairs)

    def __repr__(self) -> str:
        return f"<FaultProxy 127.0.0.1:{self.port} -> {self.target_host}:{self.target_port}>"

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., object], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        # Keep the list from growing without bound on long runs.
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopped:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.connections_accepted += 1
            if self._refusing or self._stopped:
                _close_quietly(client, reset=True)
                continue
            self._spawn(self._connect, f"proxy-conn-{self.port}", client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
        except OSError:
            _close_quietly(client, reset=True)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream)
        with self._cond:
            if self._stopped:
                pair.kill(reset=False)
                return
            self._pairs.add(pair)
        self._spawn(self._pump, f"proxy-c2u-{self.port}", pair, client, upstream)
        self._spawn(self._pump, f"proxy-u2c-{self.port}", pair, upstream, client)

    def _wait_until_forwarding(self, pair: _Pair) -> bool:
        """Block while paused; False when the pair was dropped or the proxy stopped."""
        with self._cond:
            while self._paused and not pair.dead and not self._stopped:
                self._cond.wait(0.5)
            return not pair.dead and not self._stopped

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not self._wait_until_forwarding(pair):
                    return
                if not data:
                    # Propagate the half-close so protocols that rely on EOF still work.
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if self._delay:
                    time.sleep(self._delay)
                    if pair.dead or self._stopped:
                        return
                dst.sendall(data)
        except OSError:
            if not pair.dead:
                # One side failed: reset the other so the failure is visible end to end.
                with self._cond:
                    self._pairs.discard(pair)
                pair.kill(reset=True)
        finally:
            with self._cond:
                pair.pumps_left -= 1
                finished = pair.pumps_left == 0
                if finished:
                    self._pairs.discard(pair)
            if finished and not pair.dead:
                pair.kill(reset=False)
