"""PgBouncer in front of a :class:`~devservers.postgres.PostgresCluster`."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devservers.ports import free_port
from devservers.postgres import (
    PostgresCluster,
    chown_to_service_user,
    make_service_dir,
    pid_alive,
    run_as_service_user,
)
from devservers.service import Service

PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    """Path of the pgbouncer binary, or None when it is not installed."""
    for path in PGBOUNCER_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("pgbouncer")


_live: weakref.WeakSet[PgBouncer] = weakref.WeakSet()


def _stop_leftovers() -> None:
    # Same rule as the clusters: a forked child must not stop its parent's servers.
    for bouncer in list(_live):
        if bouncer._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                bouncer.stop()


atexit.register(_stop_leftovers)


class PgBouncer(Service):
    """A private PgBouncer on 127.0.0.1 routing every database to ``cluster``.

    Clients authenticate with scram-sha-256 against a userlist holding role ``app``; ``app`` is
    also an admin user, so ``SHOW POOLS`` works on the ``pgbouncer`` database. Remember
    ``prepare_threshold=None`` in psycopg when ``pool_mode`` is ``transaction``.
    """

    host = "127.0.0.1"

    def __init__(self, cluster: PostgresCluster, pool_mode: str = "transaction") -> None:
        if pool_mode not in ("session", "transaction", "statement"):
            raise ValueError(f"unknown pool_mode {pool_mode!r}")
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError(
                "pgbouncer is not installed: run scripts/bootstrap (it apt-installs pgbouncer)"
            )
        self.binary = binary
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.port = free_port()
        self.user = cluster.app_user
        self.password = cluster.password
        self.basedir: Path | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        _live.add(self)

    @property
    def logfile(self) -> Path | None:
        """PgBouncer's log file (None before start)."""
        return self.basedir / "pgbouncer.log" if self.basedir else None

    def read_log(self) -> str:
        """PgBouncer's log so far."""
        try:
            return self.logfile.read_text(errors="replace") if self.logfile else ""
        except OSError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start the daemon and wait until it accepts connections."""
        with self._lock:
            if self.is_running():
                return
            basedir = self.basedir = make_service_dir("pgbouncer")
            ini = basedir / "pgbouncer.ini"
            userlist = basedir / "userlist.txt"
            pidfile = basedir / "pgbouncer.pid"
            userlist.write_text(f'"{self.user}" "{self.password}"\n')
            ini.write_text(
                "\n".join(
                    [
                        "[databases]",
                        f"* = host={self.cluster.host} port={self.cluster.port}",
                        "",
                        "[pgbouncer]",
                        f"listen_addr = {self.host}",
                        f"listen_port = {self.port}",
                        f"unix_socket_dir = {basedir}",
                        "auth_type = scram-sha-256",
                        f"auth_file = {userlist}",
                        f"admin_users = {self.user}",
                        f"stats_users = {self.user}",
                        f"pool_mode = {self.pool_mode}",
                        "max_client_conn = 500",
                        "default_pool_size = 20",
                        # Drivers send these at startup; PgBouncer would reject the client.
                        "ignore_startup_parameters = extra_float_digits,options",
                        f"logfile = {basedir / 'pgbouncer.log'}",
                        f"pidfile = {pidfile}",
                        "",
                    ]
                )
            )
            for path in (ini, userlist):
                path.chmod(0o600)
                chown_to_service_user(path)
            # -d daemonizes after the config is loaded, so configuration errors surface here.
            run_as_service_user([self.binary, "-d", "-q", str(ini)], cwd=basedir, timeout=30)
            self._wait_listening(pidfile)

    def stop(self) -> None:
        """Terminate PgBouncer (immediate shutdown) and remove its directory."""
        with self._lock:
            pid, self._pid = self._pid, None
            if pid is not None and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if self.basedir is not None:
                shutil.rmtree(self.basedir, ignore_errors=True)
                self.basedir = None
            _live.discard(self)

    def is_running(self) -> bool:
        """True while the daemon we started is alive."""
        return self._pid is not None and pid_alive(self._pid)


    # -- connecting ------------------------------------------------------------------------

    def conninfo(self, dbname: str = "app", user: str = "app") -> str:
        """A ``postgresql://`` URL through PgBouncer (with the password for ``app``)."""
        auth = quote(user, safe="")
        if user == self.user:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def kwargs(self, dbname: str = "app", user: str = "app") -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` through PgBouncer."""
        result: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname,
            "user": user,
        }
        if user == self.user:
            result["password"] = self.password
        return result

    def __repr__(self) -> str:
        return (
            f"<PgBouncer {self.host}:{self.port} -> {self.cluster.host}:{self.cluster.port} "
            f"{self.pool_mode}>"
        )

    # -- internals -------------------------------------------------------------------------

    def _wait_listening(self, pidfile: Path, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid is None:
                with contextlib.suppress(OSError, ValueError):
                    self._pid = int(pidfile.read_text().strip())
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    if self._pid is not None:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"pgbouncer did not start listening on port {self.port}:\n{self.read_log()[-2000:]}"
        )
