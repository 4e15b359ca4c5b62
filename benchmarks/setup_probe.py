"""Child process: time ``django.setup()`` with N pools configured, then count their connections.

``python -m benchmarks.setup_probe --pools 50 --conninfo URL`` prints one JSON line. Each run is a
fresh interpreter because ``django.setup()`` only does its work once per process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

APPLICATION_NAME = "bench_setup_probe"


def pool_settings(n: int, conninfo: str) -> dict[str, dict[str, Any]]:
    return {
        f"pool{i:04d}": {
            "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
            "OPTIONS": {
                "conninfo": conninfo,
                "autocommit": True,
                "application_name": APPLICATION_NAME,
            },
            "MIN_SIZE": 2,
            "MAX_SIZE": 10,
        }
        for i in range(n)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, required=True)
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--settle", type=float, default=0.5)
    args = parser.parse_args(argv)

    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        SECRET_KEY="benchmarks",
        INSTALLED_APPS=["pooled_clients"],
        DATABASES={},
        POOLED_CLIENTS=pool_settings(args.pools, args.conninfo),
    )
    c0, t0 = time.process_time(), time.perf_counter()
    django.setup()
    setup_ms = (time.perf_counter() - t0) * 1000.0
    cpu_ms = (time.process_time() - c0) * 1000.0

    from pooled_clients import pools

    aliases = len(list(pools))
    imported = sorted(m for m in ("psycopg", "requests") if m in sys.modules)
    # Give any background filling a chance to (wrongly) open connections before counting.
    time.sleep(args.settle)

    import psycopg

    with psycopg.connect(args.conninfo, autocommit=True, application_name="bench_observer") as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
    opened = int(row[0]) if row else -1
    result = {
        "pools": args.pools,
        "aliases": aliases,
        "setup_ms": setup_ms,
        "cpu_ms": cpu_ms,
        "connections": opened,
        "imported": imported,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
