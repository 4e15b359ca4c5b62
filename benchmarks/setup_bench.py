"""Cost of ``django.setup()`` with 1, 50 and 1,000 pools configured versus none, in fresh
interpreters."""

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
    counts: list[int]
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

    def added_ms(self, n: int) -> float | None:
        """Wall time added, fastest against fastest: load elsewhere only ever adds time."""
        with_pools, without = self.min_ms(n), self.min_ms(0)
        if with_pools is None or without is None:
            return None
        return with_pools - without

    def added_cpu_ms(self, n: int) -> float | None:
        """Median over the samples of the CPU time with ``n`` pools minus the run without."""
        pairs = [
            b - a for a, b in zip(self.cpu_ms.get(0, []), self.cpu_ms.get(n, []), strict=False)
        ]
        return statistics.median(pairs) if pairs else None

    def max_connections(self, n: int) -> int | None:
        values = self.connections.get(n)
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
    conninfo: str, counts: list[int], samples: int, settle: float, log: Callable[[str], None]
) -> SetupResults:
    results = SetupResults(counts=counts, samples=samples)
    try:
        for _ in range(samples):
            for n in (0, *counts):  # alternate so drift hits all alike
                data = _probe(n, conninfo, settle)
                results.setup_ms.setdefault(n, []).append(float(data["setup_ms"]))
                results.cpu_ms.setdefault(n, []).append(float(data["cpu_ms"]))
                results.connections.setdefault(n, []).append(int(data["connections"]))
                results.aliases[n] = int(data["aliases"])
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        results.error = str(exc)
        log(f"  django.setup() probe failed: {exc}")
    return results


@dataclass
class ScaleResults:
    pools: int
    seconds: float
    maintenance_cpu: float | None = None
    memory_bare: dict[str, float] = field(default_factory=dict)
    memory_session: dict[str, float] = field(default_factory=dict)
    keyed: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


def run_scale(
    pools: int, seconds: float, keys: list[int], log: Callable[[str], None]
) -> ScaleResults:
    """The maintenance thread's CPU with ``pools`` idle pools, and memory per idle client."""
    results = ScaleResults(pools, seconds)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_probe", "--pools", str(pools),
         "--seconds", str(seconds), "--keys", ",".join(map(str, keys))],
        cwd=ROOT, capture_output=True, text=True, timeout=600 + seconds, check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        results.error = " | ".join(tail) or f"exit {proc.returncode}"
        log(f"  scale probe failed: {results.error}")
        return results
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    results.maintenance_cpu = float(data["maintenance"]["cpu_per_second"])
    results.memory_bare = data["memory_bare"]
    results.memory_session = data["memory_session"]
    results.keyed = data.get("keyed", [])
    return results
