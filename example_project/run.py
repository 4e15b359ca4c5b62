"""Run the example site with everything it needs, on 127.0.0.1, until Ctrl-C or SIGTERM.

``./scripts/run-example`` calls ``python -m example_project.run``. It starts a private PostgreSQL
cluster (the "warehouse") and a local HTTP API (the "payments" service), migrates the site's
SQLite database, creates an admin login, prints it with the URLs, and serves the site with
gunicorn (``example_project/gunicorn.conf.py``) and, for the async page, uvicorn. On Ctrl-C
or SIGTERM it stops the servers, the cluster and the API and removes their files: nothing is
left running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
ADMIN_USER = "admin"

PRODUCTS = [
    ("A-100", "Espresso beans, 1 kg", 42),
    ("A-200", "Filter paper, 100 pcs", 310),
    ("B-110", "Hand grinder", 7),
    ("C-300", "Milk jug, 600 ml", 0),
]


class Stop(Exception):
    """Raised by the signal handler while the launcher is still starting things."""


logger = logging.getLogger("run-example")


def configure_logging(workdir: Path) -> Path:
    """Log in the site's format (``LOGGING`` in settings.py); return a uvicorn log config
    file that does the same for uvicorn's lines."""
    from example_project.settings import LOGGING

    timed = LOGGING["formatters"]["timed"]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(timed["format"], timed["datefmt"]))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    console = {"class": "logging.StreamHandler", "formatter": "timed"}
    uvicorn_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"timed": timed},
        "handlers": {"console": console},
        "loggers": {
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
    path = workdir / "uvicorn-logging.json"
    path.write_text(json.dumps(uvicorn_config))
    return path


def log(message: str, level: int = logging.INFO) -> None:
    logger.log(level, message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./scripts/run-example",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("EXAMPLE_PORT", "8000")),
                        help="port of the site on 127.0.0.1 (default 8000)")
    parser.add_argument("--asgi-port", type=int, default=None,
                        help="port of the ASGI server (uvicorn) for the async page "
                             "(default: --port + 1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    return parser.parse_args(argv)


def seed_warehouse(conninfo: str) -> None:
    """Create and fill the table the warehouse page reads."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("create table if not exists products "
                     "(sku text primary key, name text not null, stock integer not null)")
        with conn.cursor() as cur:
            cur.executemany("insert into products values (%s, %s, %s) on conflict do nothing",
                            PRODUCTS)


def prepare_django(env: dict[str, str]) -> str:
    """Migrate the SQLite database and (re)create the admin login; return its password."""
    password = secrets.token_urlsafe(12)
    # A child process keeps Django (and the pools it builds) out of this launcher.
    script = (
        "import sys, django; django.setup()\n"
        "from django.core.management import call_command\n"
        "from django.contrib.auth import get_user_model\n"
        "call_command('migrate', interactive=False, verbosity=0)\n"
        "User = get_user_model()\n"
        f"user, _ = User.objects.get_or_create(username={ADMIN_USER!r})\n"
        "user.is_staff = user.is_superuser = True\n"
        "user.set_password(sys.stdin.read())\n"
        "user.save()\n"
    )
    subprocess.run([sys.executable, "-c", script], input=password, text=True, env=env,
                   cwd=ROOT, check=True, timeout=120)
    return password


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until ``url`` answers (any status), or raise if the server died or is too slow."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g}s") from None
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], name: str, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {timeout:g}s; killing it", logging.WARNING)
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def stop_signals(stop: threading.Event) -> Iterator[None]:
    """Until the body is done, SIGINT/SIGTERM abort start-up; afterwards they request a stop."""
    started = False

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not started:
            raise Stop

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        started = True
    finally:
        if not started:
            for sig, old in previous.items():
                signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    """Start everything, serve until asked to stop, then stop everything."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from devservers.http import UpstreamServer
    from devservers.postgres import PostgresCluster

    stop = threading.Event()
    workdir = Path(tempfile.mkdtemp(prefix="pooled-clients-example-"))
    uvicorn_logging = configure_logging(workdir)
    cluster: PostgresCluster | None = None
    upstream: UpstreamServer | None = None
    servers: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        with stop_signals(stop):
            log("starting PostgreSQL")
            cluster = PostgresCluster("example")
            cluster.start()
            warehouse_url = cluster.conninfo("app")
            seed_warehouse(warehouse_url)
            upstream = UpstreamServer()
            upstream.start()

            asgi_port = args.asgi_port or args.port + 1
            asgi_site = f"http://127.0.0.1:{asgi_port}/"
            env = dict(os.environ)
            env.update({
                "DJANGO_SETTINGS_MODULE": "example_project.settings",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            env.get("PYTHONPATH")])),
                "EXAMPLE_WAREHOUSE_URL": cluster.conninfo("app", password=False),
                "EXAMPLE_WAREHOUSE_PASSWORD": cluster.password,
                "EXAMPLE_PAYMENTS_URL": upstream.url + "json/v1/",
                "EXAMPLE_PAYMENTS_TOKEN": env.get("EXAMPLE_PAYMENTS_TOKEN")
                or secrets.token_urlsafe(16),
                "EXAMPLE_SQLITE_PATH": str(workdir / "db.sqlite3"),
                "EXAMPLE_SECRET_KEY": secrets.token_urlsafe(32),
                "EXAMPLE_BIND": f"127.0.0.1:{args.port}",
                "EXAMPLE_WORKERS": str(args.workers),
                "EXAMPLE_ASGI_URL": asgi_site,
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
            })
            (workdir / "prometheus").mkdir()
            log("migrating and creating the admin login")
            password = prepare_django(env)

            log("starting gunicorn")
            site = f"http://127.0.0.1:{args.port}/"
            gunicorn = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c",
                 str(ROOT / "example_project" / "gunicorn.conf.py"), "example_project.wsgi"],
                env=env, cwd=ROOT,
            )
            servers.append(("gunicorn", gunicorn))
            # Django's ASGI handler rejects the lifespan protocol: turn it off rather than
            # have uvicorn log that it is unsupported.
            uvicorn = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "example_project.asgi:application",
                 "--host", "127.0.0.1", "--port", str(asgi_port), "--lifespan", "off",
                 "--log-config", str(uvicorn_logging)],
                env=env, cwd=ROOT,
            )
            servers.append(("uvicorn", uvicorn))
            wait_http(site, gunicorn, timeout=45)
            wait_http(asgi_site, uvicorn, timeout=45)

        print(
            "\n"
            "django-pooled-clients example is running\n"
            f"  site:        {site}\n"
            f"  warehouse:   {site}warehouse/   (PostgreSQL pool)\n"
            f"  payments:    {site}payments/    (HTTP API pool)\n"
            f"  async:       {asgi_site}async/   (async view under uvicorn)\n"
            f"  health:      {site}health/\n"
            f"  metrics:     {site}metrics\n"
            f"  pool status: {site}admin/pooled_clients/poolstatus/\n"
            f"  admin:       {site}admin/   user: {ADMIN_USER}   password: {password}\n"
            f"  PostgreSQL:  127.0.0.1:{cluster.port} (data in {cluster.datadir})\n"
            f"  payments API: {upstream.url}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop.is_set():
            for name, proc in servers:
                if proc.poll() is not None:
                    log(f"{name} exited with code {proc.returncode}; stopping", logging.ERROR)
                    return 1
            stop.wait(0.5)
        return 0
    except Stop:
        return 130
    finally:
        # Once stopping, further signals must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: log("stopping, please wait"))
        log("stopping")
        for name, proc in reversed(servers):
            stop_process(proc, name)
        if upstream is not None:
            upstream.stop()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
        log("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
