"""Run the observability site under real gunicorn workers for a test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from devservers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ADMIN_USER, ADMIN_PASSWORD = "observer", "observer-pw"


@dataclass
class Site:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    def login(self) -> requests.Session:
        """A session logged in to the admin as a superuser."""
        session = requests.Session()
        page = session.get(f"{self.url}/admin/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        response = session.post(f"{self.url}/admin/login/?next=/admin/", timeout=10, data={
            "csrfmiddlewaretoken": token.group(1), "username": ADMIN_USER,
            "password": ADMIN_PASSWORD, "next": "/admin/",
        }, headers={"Referer": f"{self.url}/admin/login/"})
        assert response.ok and "Log out" in response.text, response.text[:500]
        return session

    def worker_pids(self) -> set[int]:
        """The pids of the gunicorn workers (children of the master)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}


def _django(env: Mapping[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "django", *args], cwd=REPO, env=dict(env),
                   check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def serve(workers: int, pools: Mapping[str, Any], **extra_env: str) -> Iterator[Site]:
    """Migrate a fresh sqlite database, create a superuser and start gunicorn."""
    with tempfile.TemporaryDirectory(prefix="pooled-obs-") as tmp:
        port = free_port()
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.observability_site.settings",
                   PYTHONPATH=str(REPO), OBS_DB=f"{tmp}/db.sqlite3",
                   OBS_POOLED_CLIENTS=json.dumps(dict(pools)), **extra_env)
        _django(env, "migrate", "--noinput")
        _django(env, "shell", "-c",
                "from django.contrib.auth.models import User; "
                f"User.objects.create_superuser({ADMIN_USER!r}, '', {ADMIN_PASSWORD!r})")
        log = Path(tmp) / "gunicorn.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "tests.observability_site.wsgi",
                 "-c", "tests/observability_site/gunicorn_conf.py",
                 "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                 "--graceful-timeout", "3", "--timeout", "30"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        site = Site(f"http://127.0.0.1:{port}", process, env, log)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(requests.ConnectionError):
                    requests.get(f"{site.url}/admin/login/", timeout=5)
                    if len(site.worker_pids()) == workers:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield site
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
