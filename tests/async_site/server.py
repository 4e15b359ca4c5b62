"""Serve tests/async_site with one uvicorn worker, for as long as a ``with`` block runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from devservers.ports import free_port

REPO = Path(__file__).resolve().parent.parent.parent


@contextlib.contextmanager
def serve(environment: dict[str, str], log_path: Path, ready_path: str) -> Iterator[str]:
    """Start uvicorn with ``environment`` added to this process's, wait until ``ready_path``
    answers 200 (30 s at most), yield the base URL; stop it afterwards (bounded)."""
    port = free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.async_site.settings", **environment)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.async_site.asgi:application",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--lifespan", "off", "--no-access-log"],
            cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"uvicorn exited; see {log_path}"
                try:
                    if httpx.get(base + ready_path, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "uvicorn did not answer in 30s"
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
