"""At the end of a pytest session the plugin closes the pools at once and reports clients that
tests never returned, instead of exit waiting ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT`` for them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Far longer than the run itself: a run that waits for it cannot pass.
SHUTDOWN_TIMEOUT = 30.0

LEAKING = '''
from pooled_clients import pools


def test_forgets_to_release():
    pools["api"].acquire()
'''

RETURNING = '''
from pooled_clients import pools


def test_returns_its_client():
    with pools["api"].connection():
        pass
'''

pytestmark = pytest.mark.timeout(120)


def _run_session(tmp_path: Path, test_code: str) -> tuple[float, str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "session_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\n"
        f"POOLED_CLIENTS_SHUTDOWN_TIMEOUT = {SHUTDOWN_TIMEOUT}\n"
        "POOLED_CLIENTS = {'api': {'BACKEND': 'pooled_clients.backends.http.HTTPBackend',\n"
        "                          'OPTIONS': {'base_url': 'http://127.0.0.1:9/'}}}\n"
    )
    (tmp_path / "test_session.py").write_text(test_code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "--ds", "session_settings",
         str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return elapsed, output


def test_a_leaked_client_neither_delays_exit_nor_goes_unreported(tmp_path: Path) -> None:
    elapsed, output = _run_session(tmp_path, LEAKING)
    assert elapsed < SHUTDOWN_TIMEOUT / 2, f"exit took {elapsed:.1f}s:\n{output}"
    assert "clients never returned" in output, output
    assert "api: held by MainThread" in output and "test_session.py:6" in output, output


def test_a_clean_session_reports_nothing(tmp_path: Path) -> None:
    elapsed, output = _run_session(tmp_path, RETURNING)
    assert elapsed < SHUTDOWN_TIMEOUT / 2, f"exit took {elapsed:.1f}s:\n{output}"
    assert "never returned" not in output, output
