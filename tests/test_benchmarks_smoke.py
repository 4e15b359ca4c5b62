"""The benchmark suite still runs end to end (a smoke run: nothing about speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_run_measures_every_contestant() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--skip-e2e", "--output", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in ("floor", "psycopg_pool", "SQLAlchemy QueuePool", "generic-connection-pool",
                 "pooled_clients"):
        assert name in result.stdout
    assert "connections opened" in result.stdout
