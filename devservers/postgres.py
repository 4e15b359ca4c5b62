"""Private PostgreSQL clusters for tests, the example project and benchmarks.

Each :class:`PostgresCluster` owns a data directory under /tmp, listens on 127.0.0.1 on its own
port and is fully disposable. When running as root the server tools run as the ``postgres`` OS
user (``initdb`` and ``postgres`` refuse root).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devservers.ports import free_port
from devservers.service import Service

SERVICE_USER = "postgres"
APP_USER = "app"
APP_PASSWORD = "app-s3cret-pw"
APP_DATABASE = "app"

_BOOTSTRAP_HINT = "run scripts/bootstrap (it apt-installs postgresql)"


# --- helpers shared with devservers.pgbouncer ---------------------------------------------


def running_as_root() -> bool:
    """PostgreSQL and PgBouncer refuse to run as root; callers switch user when this is true."""
    return os.geteuid() == 0


def as_service_user(cmd: Sequence[str]) -> list[str]:
    """Prefix ``cmd`` so that it runs as the ``postgres`` user when we are root."""
    if running_as_root():
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", SERVICE_USER, "--", *cmd]
    return list(cmd)


def make_service_dir(prefix: str) -> Path:
    """Create a fresh directory in /tmp (mode 0755) owned by the service user.

    pytest's ``tmp_path`` is mode 0700 and owned by root, so the ``postgres`` user could not
    reach anything below it.
    """
    path = Path(tempfile.mkdtemp(prefix=f"devservers-{prefix}-", dir="/tmp"))
    path.chmod(0o755)
    chown_to_service_user(path)
    return path


def chown_to_service_user(path: Path) -> None:
    """Give a file or directory we created as root to the service user."""
    if running_as_root():
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def run_as_service_user(
    cmd: Sequence[str], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a command as the service user; raise RuntimeError with its output when it fails."""
    try:
        # cwd must be enterable by the service user, or the tools complain about /root.
        result = subprocess.run(
            as_service_user(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (we are root or its owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live: the newest /usr/lib/postgresql/*/bin, else PATH."""

    def version_key(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    candidates = [
        p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{p}/initdb")
    ]
    if candidates:
        return Path(max(candidates, key=version_key))
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {_BOOTSTRAP_HINT}")


# --- the cluster ----------------------------------------------------------------------------

_live: weakref.WeakSet[PostgresCluster] = weakref.WeakSet()
_owner_pid = os.getpid()


def _stop_leftovers() -> None:
    # Only the process that started the clusters may stop them: a forked child (a gunicorn
    # worker in a test) also runs atexit handlers and must leave the parent's servers alone.
    for cluster in list(_live):
        if cluster._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                cluster.destroy()


atexit.register(_stop_leftovers)


class PostgresCluster(Service):
    """A disposable PostgreSQL cluster on 127.0.0.1.

    The superuser (``postgres``) is trusted on 127.0.0.1 and the unix socket; role ``app``
    (LOGIN, CREATEDB, password :data:`APP_PASSWORD`, scram-sha-256) owns database ``app``.
    """

    host = "127.0.0.1"
    superuser = SERVICE_USER

    def __init__(
        self,
        name: str = "pc",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port: int = port if port is not None else free_port()
        self.settings: dict[str, str] = dict(settings or {})
        self.password = APP_PASSWORD
        self.app_user = APP_USER
        self.bindir = find_bindir()
        self.basedir = make_service_dir(f"pg-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}")
        self.datadir = self.basedir / "data"
        self.socketdir = self.basedir
        self.logfile = self.basedir / "postgres.log"
        self._initialized = False
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        _live.add(self)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise the cluster on first use, start it and wait until it accepts queries."""
        with self._lock:
            if not self._initialized:
                self._initdb()
            if not self.is_running():
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.logfile), timeout=90)
            self.wait_ready()
            if not self._initialized:
                self._create_app_role()
                self._initialized = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``); a no-op when not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        with self._lock:
            if self.is_running():
                self._pg_ctl("stop", "-m", mode, "-w", "-t", "60", timeout=90)

    def restart(self, mode: str = "fast") -> None:
        """Stop then start again on the same port and data directory."""
        with self._lock:
            self.stop(mode)
            self.start()

    def close(self) -> None:
        """Leaving ``with``: stop and remove the cluster."""
        self.destroy()

    def destroy(self) -> None:
        """Stop the server (immediately if a fast stop fails) and remove all its files."""
        with self._lock:
            try:
                self.stop("fast")
            except RuntimeError:
                with contextlib.suppress(RuntimeError):
                    self.stop("immediate")
            shutil.rmtree(self.basedir, ignore_errors=True)
            self._initialized = False
            _live.discard(self)

    def is_running(self) -> bool:
        """True while the postmaster listed in ``postmaster.pid`` is alive."""
        try:
            first_line = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return pid_alive(int(first_line))
        except (OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        """Block until the server answers a query, or raise RuntimeError after ``timeout``."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(**self._superuser_kwargs(), connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL on port {self.port} not ready after {timeout}s: {exc}\n"
                        f"{self.read_log()[-2000:]}"
                    ) from exc
                time.sleep(0.1)

    # -- connecting ------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", user: str = "app", password: bool = True) -> str:
        """A ``postgresql://`` URL for 127.0.0.1:port (with app's password when asked and known)."""
        auth = quote(user, safe="")
        if password and user == self.app_user:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def kwargs(self, dbname: str = "postgres", user: str = "app") -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (host, port, dbname, user, password)."""
        result: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname,
            "user": user,
        }
        if user == self.app_user:
            result["password"] = self.password
        return result

    def execute(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser in autocommit mode; return its rows (or [])."""
        import psycopg

        with psycopg.connect(
            **self._superuser_kwargs(dbname), autocommit=True, connect_timeout=5
        ) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def read_log(self) -> str:
        """The server log so far ('' when there is none yet)."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<PostgresCluster {self.name!r} {self.host}:{self.port} datadir={self.datadir}>"

    # -- internals -------------------------------------------------------------------------

    def _superuser_kwargs(self, dbname: str = "postgres") -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "dbname": dbname, "user": self.superuser}

    def _pg_ctl(self, *args: str, timeout: float) -> None:
        try:
            run_as_service_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
                cwd=self.basedir,
                timeout=timeout,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{self.read_log()[-3000:]}") from exc

    def _initdb(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        run_as_service_user(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster does not need durable files
            ],
            cwd=self.basedir,
            timeout=120,
        )
        conf: dict[str, str] = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socketdir),
            "max_connections": "200",
            "shared_buffers": "16MB",
            # Speed over durability: the data is disposable.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # pg_ctl -l captures stderr, which keeps the log in one predictable file.
            "logging_collector": "off",
            "log_connections": "on",
            "log_disconnections": "on",
            "log_line_prefix": "%m [%p] app=%a user=%u ",
            "log_min_messages": "info",
            "password_encryption": "scram-sha-256",
        }
        conf.update(self.settings)
        lines = ["", "# devservers"]
        lines += [f"{key} = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in conf.items()]
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        # The superuser is trusted (tests administer the cluster freely); everyone else must
        # present a password, so tests can tell a real login from a trusted one.
        hba = "\n".join(
            [
                "local   all          all                       trust",
                f"host    all          {self.superuser}  127.0.0.1/32   trust",
                "host    all          all        127.0.0.1/32   scram-sha-256",
                "local   replication  all                       trust",
                "host    replication  all        127.0.0.1/32   trust",
                "",
            ]
        )
        (self.datadir / "pg_hba.conf").write_text(hba)

    def _create_app_role(self) -> None:
        exists = self.execute("select 1 from pg_roles where rolname = %s", [self.app_user])
        if not exists:
            self.execute(f"create role {self.app_user} login createdb password '{self.password}'")
        if not self.execute("select 1 from pg_database where datname = %s", [APP_DATABASE]):
            self.execute(f"create database {APP_DATABASE} owner {self.app_user}")
