"""Cost of ``django.setup()`` with 50 pools configured versus none, in fresh interpreters."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SetupResults:
    pools: int
    samples: int
    setup_ms: dict[int, list[float]] = field(default_factory=dict)
    cpu_ms: dict[int, list[float]] = field(default_factory=dict)
    connections: dict[int, list[int]] = field(default_factory=dict)
    aliases: dict[int, int] = field(default_factory=dict)
    error: str | None = None

    def median_ms(self, n: int) -> float | None:
        values = self.setup_ms.get(n)
        return statistics.median(values) if values else None

    def min_ms(self, n: int) -> float | None:
        values = self.setup_ms.get(n)
        return min(values) if values else None

    def median_cpu_ms(self, n: int) -> float | None:
        values = self.cpu_ms.get(n)
        return statistics.median(values) if values else None

    @property
    def added_ms(self) -> float | None:
        """Wall time added, fastest against fastest: load elsewhere only ever adds time."""
        with_pools, without = self.min_ms(self.pools), self.min_ms(0)
        if with_pools is None or without is None:
            return None
        return with_pools - without

    @property
    def added_cpu_ms(self) -> float | None:
        """Median over the samples of the CPU time with pools minus the run just before it."""
        pairs = [
            b - a
            for a, b in zip(self.cpu_ms.get(0, []), self.cpu_ms.get(self.pools, []), strict=False)
        ]
        return statistics.median(pairs) if pairs else None

    @property
    def max_connections(self) -> int | None:
        values = self.connections.get(self.pools)
        return max(values) if values else None


def _probe(n: int, conninfo: str, settle: float) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.setup_probe",
            "--pools",
            str(n),
            "--conninfo",
            conninfo,
            "--settle",
            str(settle),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(" | ".join(tail) or f"exit {proc.returncode}")
    data: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def run_setup(
    conninfo: str, pools: int, samples: int, settle: float, log: Callable[[str], None]
) -> SetupResults:
    results = SetupResults(pools=pools, samples=samples)
    try:
        for _ in range(samples):
            for n in (0, pools):  # alternate so drift hits both alike
                data = _probe(n, conninfo, settle)
                results.setup_ms.setdefault(n, []).append(float(data["setup_ms"]))
                results.cpu_ms.setdefault(n, []).append(float(data["cpu_ms"]))
                results.connections.setdefault(n, []).append(int(data["connections"]))
                results.aliases[n] = int(data["aliases"])
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        results.error = str(exc)
        log(f"  django.setup() probe failed: {exc}")
    return results
