"""cProfile of one contestant's single-thread hot path.

Used by ``python -m benchmarks`` (the profile section of the report) and on its own::

    python -m benchmarks.hotpath [--contestant pooled_clients] [--seconds 3] [--query]

which starts its own PostgreSQL and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.contestants import Contestant
from benchmarks.micro import SQL

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ProfileEntry:
    function: str
    calls: int
    tottime_s: float
    cumtime_s: float
    per_call_us: float


@dataclass
class ProfileResult:
    contestant: str
    query: bool
    ops: int
    seconds: float
    entries: list[ProfileEntry]
    text: str


def _name(func: tuple[str, int, str]) -> str:
    """``path:line(function)`` with the path relative to the project, site-packages or stdlib."""
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    try:
        short = path.relative_to(ROOT).as_posix()
    except ValueError:
        parts = path.parts
        anchor = next(
            (i for i in range(len(parts) - 1, -1, -1) if parts[i] == "site-packages"), None
        )
        if anchor is None:
            anchor = next(
                (i for i in range(len(parts) - 1, -1, -1) if parts[i].startswith("python3")),
                len(parts) - 2,
            )
        short = "/".join(parts[anchor + 1 :])
    return f"{short}:{line}({name})"


def _fixed_loop(contestant: Contestant, n: int, query: bool) -> None:
    if contestant.connection is not None:
        connection = contestant.connection
        if query:
            for _ in range(n):
                with connection() as conn:
                    conn.execute(SQL).fetchone()
        else:
            for _ in range(n):
                with connection():
                    pass
    else:
        acquire, release = contestant.acquire, contestant.release
        if query:
            for _ in range(n):
                conn = acquire()
                conn.execute(SQL).fetchone()
                release(conn)
        else:
            for _ in range(n):
                conn = acquire()
                release(conn)


def profile_hot_path(
    contestant: Contestant, seconds: float, query: bool = False, top: int = 15
) -> ProfileResult:
    """Profile single-thread checkout+return for about ``seconds`` (batches of 1000)."""
    batch = 1000
    profiler = cProfile.Profile()
    ops = 0
    deadline = time.perf_counter() + seconds
    profiler.enable()
    while time.perf_counter() < deadline:
        _fixed_loop(contestant, batch, query)
        ops += batch
    profiler.disable()
    return profile_result(profiler, contestant.label, query, ops, seconds, top)


def profile_result(profiler: cProfile.Profile, label: str, query: bool, ops: int,
                   seconds: float, top: int) -> ProfileResult:
    """The ``top`` functions of a finished profile by own time, with its text report."""
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    raw = stats.stats  # type: ignore[attr-defined]
    ordered = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    entries = [
        ProfileEntry(
            _name(func), int(nc), float(tt), float(ct), float(tt) / nc * 1e6 if nc else 0.0
        )
        for func, (_cc, nc, tt, ct, _callers) in ordered[:top]
    ]
    return ProfileResult(label, query, ops, seconds, entries, stream.getvalue())


def main(argv: list[str] | None = None) -> int:
    from benchmarks.contestants import SPECS, close_ours

    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath")
    parser.add_argument("--contestant", default="pooled_clients", choices=[s.key for s in SPECS])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--query", action="store_true", help="run SELECT 1 inside the checkout")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    from devservers.postgres import PostgresCluster

    spec = next(s for s in SPECS if s.key == args.contestant)
    with PostgresCluster(name="bench") as cluster:
        conninfo = cluster.conninfo()
        contestant = spec.build(conninfo, "bench_profile")
        try:
            result = profile_hot_path(contestant, args.seconds, args.query, args.top)
        finally:
            contestant.close()
            close_ours()
    print(f"{result.contestant}: {result.ops} checkouts in {result.seconds:.1f} s under cProfile")
    print(result.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
