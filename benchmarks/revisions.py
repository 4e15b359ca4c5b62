"""Two revisions of pooled_clients against psycopg_pool, in one run.

Every cell (threads x with or without ``SELECT 1``) runs both revisions in turn, each in a
fresh subprocess that measures pooled_clients and psycopg_pool back to back on the same
PostgreSQL cluster; the report gives each revision's ratio to psycopg_pool (median over the
rounds), so machine load affects both revisions alike::

    git worktree add /tmp/old <revision>
    python -m benchmarks.revisions --old /tmp/old [--rounds 5] [--duration 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from devservers.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
sys.path[:0] = [{tree!r}]
import pooled_clients, benchmarks.contestants as c, benchmarks.micro as m
assert pooled_clients.__file__.startswith({tree!r}), pooled_clients.__file__
result = {{}}
for spec in c.SPECS:
    if spec.key in ("pooled_clients", "psycopg_pool"):
        contestant = spec.build({conninfo!r}, "rev-" + spec.key)
        try:
            m.measure(contestant, {query!r}, {threads!r}, 0.1)  # warm up
            result[spec.key] = m.measure(contestant, {query!r}, {threads!r}, {duration!r})
        finally:
            contestant.close()
print(json.dumps(result))
"""


def _cell(tree: Path, conninfo: str, threads: int, query: bool, duration: float) -> float:
    code = _CHILD.format(tree=str(tree), conninfo=conninfo, threads=threads, query=query,
                         duration=duration)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=tree, env={**os.environ, "PYTHONHASHSEED": "0"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["pooled_clients"]) / float(result["psycopg_pool"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="a checkout of the other revision")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--threads", default="1,4,16,64")
    args = parser.parse_args(argv)
    trees = {"old": args.old.resolve(), "new": ROOT}
    threads = [int(t) for t in args.threads.split(",")]
    with PostgresCluster("revisions") as cluster:
        conninfo = cluster.conninfo("app")
        ratios: dict[tuple[str, int, bool], list[float]] = {}
        for number in range(args.rounds):
            for query in (False, True):
                for count in threads:
                    order = ["old", "new"] if number % 2 == 0 else ["new", "old"]
                    for name in order:
                        ratio = _cell(trees[name], conninfo, count, query, args.duration)
                        ratios.setdefault((name, count, query), []).append(ratio)
    print("ratio to psycopg_pool (median of rounds), old -> new")
    for query in (False, True):
        cells = []
        for count in threads:
            old = statistics.median(ratios[("old", count, query)])
            new = statistics.median(ratios[("new", count, query)])
            cells.append(f"{count}t {old:.2f} -> {new:.2f}")
        print(f"{'SELECT 1' if query else 'no query':9s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
