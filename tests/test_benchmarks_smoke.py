"""The benchmark suite still runs end to end (a smoke run: nothing about speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_run_measures_every_part() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--skip-e2e", "--output", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    for name in ("floor", "psycopg_pool", "SQLAlchemy QueuePool", "generic-connection-pool",
                 "pooled_clients"):
        assert name in out
    assert "connections opened" in out
    # Tail latency: a p50 / p99 / p99.9 / max cell for every contestant and thread count.
    assert "### Tail latency: checkout + return, no query" in out
    tail_rows = [line for line in out.splitlines()
                 if line.startswith("| **pooled_clients** |") and line.count(" / ") >= 12]
    assert tail_rows, "no tail-latency row for pooled_clients"
    # The async path: every contestant measured, none failed.
    assert "## The async path" in out
    for name in ("pooled_clients AsyncPool", "psycopg_pool AsyncConnectionPool",
                 "pooled_clients sync Pool (async with)", "one shared httpx.AsyncClient",
                 "pooled_clients AsyncPool + AsyncHTTPBackend"):
        assert f"| {name} |" in out or f"| **{name}** |" in out, name
    # Scale: django.setup() with 1,000 pools, the idle maintenance thread, keyed pools.
    assert "| 1,000 pools |" in out
    assert "maintenance thread CPU, idle" in out
    assert "### Keyed pools" in out


def test_the_contention_probe_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.contention", "--threads", "4", "--rounds", "1",
         "--duration", "0.1", "--work", "10"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 4 |")]
    assert row.count("|") == 5 and row.endswith("x |"), row
