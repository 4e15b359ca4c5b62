"""Private Redis servers for tests, the docs and benchmarks.

Each :class:`RedisServer` runs Debian's ``redis-server`` on 127.0.0.1 on its own port, with no
persistence (``--save '' --appendonly no``) and, when given, a password (``--requirepass``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import quote

from devservers.ports import free_port
from devservers.service import Service

_BOOTSTRAP_HINT = "run scripts/bootstrap (it apt-installs redis-server)"

_live: weakref.WeakSet[RedisServer] = weakref.WeakSet()


def _stop_leftovers() -> None:
    # A forked child (a gunicorn worker in a test) runs atexit too: only the owner stops.
    for server in list(_live):
        if server._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                server.destroy()


atexit.register(_stop_leftovers)


def find_redis_server() -> str:
    """The ``redis-server`` binary, or RuntimeError naming the fix."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        raise RuntimeError(f"redis-server not found: {_BOOTSTRAP_HINT}")
    return found


class RedisServer(Service):
    """A disposable ``redis-server`` on 127.0.0.1 (restartable on the same port)."""

    host = "127.0.0.1"

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        self.password = password
        self.port: int = port if port is not None else free_port()
        self.binary = find_redis_server()
        self.basedir = Path(tempfile.mkdtemp(prefix="devservers-redis-", dir="/tmp"))
        self.logfile = self.basedir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        _live.add(self)

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        with self._lock:
            if self.is_running():
                return
            cmd = [self.binary, "--port", str(self.port), "--bind", self.host,
                   "--save", "", "--appendonly", "no", "--dir", str(self.basedir),
                   "--logfile", str(self.logfile), "--daemonize", "no"]
            if self.password:
                cmd += ["--requirepass", self.password]
            self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            self.wait_ready()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); clients see their connections close."""
        with self._lock:
            process, self._process = self._process, None
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def restart(self) -> None:
        """Stop then start again on the same port (all data is lost: no persistence)."""
        with self._lock:
            self.stop()
            self.start()

    def close(self) -> None:
        """Leaving ``with``: stop and remove the files."""
        self.destroy()

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        with self._lock:
            self.stop()
            shutil.rmtree(self.basedir, ignore_errors=True)
            _live.discard(self)

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command over a fresh socket (RESP), authenticating first when needed;
        return the raw reply. Independent of redis-py, so tests can use it as a witness."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            if self.password:
                sock.sendall(_encode("AUTH", self.password))
                reader.readline()
            sock.sendall(_encode(*args))
            line = reader.readline()
            if line.startswith(b"$") and int(line[1:]) >= 0:
                return reader.read(int(line[1:]) + 2)[:-2]
            return line.rstrip(b"\r\n")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until the server answers PING, or raise RuntimeError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING", timeout=1.0) == b"+PONG":
                    return
            except OSError:
                pass
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited:\n"
                                   f"{self.read_log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} not ready after "
                                   f"{timeout}s:\n{self.read_log()[-2000:]}")
            time.sleep(0.05)

    def read_log(self) -> str:
        """The server log so far ('' when there is none yet)."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<RedisServer {self.host}:{self.port} auth={self.password is not None}>"


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
