"""``python -m benchmarks``: run everything and write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import contestants as cs
from benchmarks.aio_bench import AsyncResults, profile_async, run_async
from benchmarks.e2e import E2EResults, _disable_nagle_upstream, run_e2e
from benchmarks.hotpath import ProfileResult, profile_hot_path
from benchmarks.instructions import measure as count_instructions
from benchmarks.machine import git_revision, load_average, machine_info, usable_cpus, versions
from benchmarks.micro import MicroResults, run_micro
from benchmarks.report import Run, render
from benchmarks.setup_bench import ScaleResults, SetupResults, run_scale, run_setup

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark pooled_clients against the floor and its peers.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few seconds (1 round, 0.1 s per cell)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 8; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per cell (default 0.5; quick 0.1)")
    p.add_argument("--threads", default="1,4,16,64", help="thread counts (default 1,4,16,64)")
    p.add_argument("--contestants", help="comma-separated keys (default: all)")
    p.add_argument("--skip-e2e", action="store_true", help="skip the gunicorn + wrk part")
    p.add_argument("--e2e-duration", type=int, help="seconds per wrk run (default 3; quick 1)")
    p.add_argument("--e2e-rounds", type=int, help="end-to-end rounds (default 3; quick 1)")
    p.add_argument("--workers", type=int, help="gunicorn workers (default: usable CPUs)")
    p.add_argument("--worker-threads", type=int, default=4, help="threads per worker (4)")
    p.add_argument("--setup-samples", type=int, help="django.setup() samples (default 8; quick 1)")
    p.add_argument(
        "--setup-pools", default="1,50,1000", help="pool counts for django.setup() (1,50,1000)"
    )
    p.add_argument("--tasks", default="1,10,100,1000", help="async task counts (1,10,100,1000)")
    p.add_argument("--async-rounds", type=int, help="async rounds (default 3; quick 1)")
    p.add_argument("--skip-async", action="store_true", help="skip the async part")
    p.add_argument("--scale-pools", type=int, default=1000, help="idle pools for the "
                   "maintenance thread's CPU (1000)")
    p.add_argument("--scale-seconds", type=float, help="idle seconds measured (default 10; "
                   "quick 1)")
    p.add_argument("--keys", help="live keys of a keyed pool (default 1,100,10000; quick 1,100)")
    p.add_argument("--instructions", type=int, help="callgrind iterations per case (default "
                   "2000; quick 0 = skip; needs valgrind)")
    p.add_argument(
        "--profile-seconds",
        type=float,
        help="cProfile of the 1-thread hot path (default 2; quick 0 = skip)",
    )
    p.add_argument(
        "--output",
        help="Markdown file, or - for standard output "
        "(default docs/benchmarks.md; with --quick: standard output)",
    )
    p.add_argument("--json", help="also write the raw samples as JSON to this file")
    args = p.parse_args(argv)
    quick = args.quick
    if args.rounds is None:
        args.rounds = 1 if quick else 8
    if args.duration is None:
        args.duration = 0.1 if quick else 0.5
    if args.e2e_duration is None:
        args.e2e_duration = 1 if quick else 3
    if args.e2e_rounds is None:
        args.e2e_rounds = 1 if quick else 3
    if args.setup_samples is None:
        args.setup_samples = 1 if quick else 5
    if args.async_rounds is None:
        args.async_rounds = 1 if quick else 3
    if args.scale_seconds is None:
        args.scale_seconds = 1.0 if quick else 10.0
    if args.instructions is None:
        args.instructions = 0 if quick else 2000
    if args.keys is None:
        args.keys = "1,100" if quick else "1,100,10000"
    args.key_counts = [int(k) for k in args.keys.split(",") if k.strip()]
    args.setup_counts = [int(t) for t in args.setup_pools.split(",") if t.strip()]
    args.task_counts = [int(t) for t in args.tasks.split(",") if t.strip()]
    if args.profile_seconds is None:
        args.profile_seconds = 0.0 if quick else 2.0
    if args.workers is None:
        args.workers = max(1, usable_cpus())
    if args.output is None:
        args.output = "-" if quick else str(DEFAULT_OUTPUT)
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    keys = [s.key for s in cs.SPECS]
    if args.contestants:
        wanted = [k.strip() for k in args.contestants.split(",") if k.strip()]
        unknown = sorted(set(wanted) - set(keys))
        if unknown:
            p.error(f"unknown contestants {unknown}; choose from {keys}")
        if "floor" not in wanted:
            wanted.insert(0, "floor")  # every ratio is against it
        args.contestant_keys = [k for k in keys if k in wanted]
    else:
        args.contestant_keys = keys
    if args.rounds < 1 or args.duration <= 0 or not args.thread_counts:
        p.error("--rounds, --duration and --threads must be positive")
    return args


def _server_version(conninfo: str) -> str:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True, application_name="bench_observer") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split(" ")[0] if row else "unknown"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {
            ("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): _jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return obj


def _run_async(
    conninfo: str, args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[AsyncResults, ProfileResult | None]:
    from devservers.http import UpstreamServer

    cells = 5 * len(args.task_counts) * args.async_rounds + 2 * len(args.task_counts) * (
        args.async_rounds
    )
    log(f"async: ~{cells} cells x {args.duration:g} s")
    _disable_nagle_upstream()
    upstream = UpstreamServer()
    upstream.start()
    try:
        aio = run_async(
            conninfo, str(upstream.url).rstrip("/") + "/", args.task_counts, args.async_rounds,
            args.duration, log,
        )
    finally:
        upstream.stop()
    profile = None
    if args.profile_seconds > 0:
        log("profiling AsyncPool, 1 task, no query")
        profile = profile_async(conninfo, args.profile_seconds)
    return aio, profile


#: The sync pool, the async pool, and the sync pool driven from async code.
INSTRUCTION_CASES = ("sync_acquire", "asyncpool_acquire", "async_acquire")


def _count_instructions(
    n: int, notes: list[str], log: Callable[[str], None]
) -> dict[str, float]:
    if shutil.which("valgrind") is None:
        notes.append("valgrind is not installed: no instruction counts.")
        return {}
    counts: dict[str, float] = {}
    for case in INSTRUCTION_CASES:
        log(f"instructions: {case}")
        try:
            counts[case] = count_instructions(case, n)
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            notes.append(f"callgrind failed for {case}: {exc}")
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = load_average()
    command = "python -m benchmarks" + (
        " " + shlex.join(sys.argv[1:] if argv is None else argv)
        if (sys.argv[1:] if argv is None else argv)
        else ""
    )
    notes: list[str] = []
    failed = False

    from devservers.postgres import PostgresCluster

    log("starting PostgreSQL")
    cluster = PostgresCluster(name="bench", settings={"max_connections": "200"})
    micro: MicroResults | None = None
    setup: SetupResults | None = None
    scale: ScaleResults | None = None
    aio: AsyncResults | None = None
    aio_profile: ProfileResult | None = None
    instruction_counts: dict[str, float] = {}
    e2e: E2EResults | None = None
    profile: ProfileResult | None = None
    connections: dict[str, tuple[int | None, int | None]] = {}
    specs = [s for s in cs.SPECS if s.key in args.contestant_keys]
    try:
        cluster.start()
        conninfo = cluster.conninfo()
        server = _server_version(conninfo)
        ours_installed = importlib.util.find_spec("pooled_clients.backends.postgres") is not None

        if ours_installed:
            log(f"django.setup() with 0 and {args.setup_pools} pools")
            setup = run_setup(
                conninfo, args.setup_counts, args.setup_samples, 0.2 if args.quick else 0.3, log
            )
            failed |= setup.error is not None
            log(f"idle cost: {args.scale_pools} pools for {args.scale_seconds:g} s, memory")
            scale = run_scale(args.scale_pools, args.scale_seconds, args.key_counts, log)
            failed |= scale.error is not None
        else:
            notes.append(
                "pooled_clients.backends.postgres is not importable: the "
                "django.setup() probe, the pooled_clients contestants and views were "
                "skipped."
            )
            failed = True

        built: list[cs.Contestant] = []
        for spec in specs:
            app = "bench_" + (cs.OURS if spec.key.startswith(cs.OURS) else spec.key)
            log(f"opening {spec.label}")
            try:
                built.append(spec.build(conninfo, app))
            except Exception as exc:
                notes.append(f"{spec.label} could not be built: {type(exc).__name__}: {exc}")
                log(f"  {spec.label} failed: {exc}")
                failed = True
        for c in built:
            n = cs.wait_for_connections(conninfo, c.application_name, cs.POOL_SIZE, 10.0)
            connections[c.key] = (n, None)
            if n != cs.POOL_SIZE:
                notes.append(f"{c.label} held {n} connections, not {cs.POOL_SIZE}, at the start.")

        if built:
            cells = len(built) * 2 * len(args.thread_counts) * args.rounds
            log(f"micro: {cells} cells x {args.duration:g} s (~{cells * args.duration:.0f} s)")
            micro = run_micro(
                built,
                args.thread_counts,
                args.rounds,
                args.duration,
                0.05 if args.quick else 0.3,
                log,
            )
            failed |= bool(micro.errors)
            counts = cs.count_connections(conninfo, "bench_")
            for c in built:
                connections[c.key] = (connections[c.key][0], counts.get(c.application_name, 0))

        ours = next((c for c in built if c.key == cs.OURS), None)
        if ours is not None and args.profile_seconds > 0:
            log("profiling pooled_clients, 1 thread, no query")
            profile = profile_hot_path(ours, args.profile_seconds)

        for c in built:
            try:
                c.close()
            except Exception as exc:
                notes.append(f"closing {c.label} failed: {type(exc).__name__}: {exc}")
        try:
            cs.close_ours()
        except Exception as exc:
            notes.append(f"closing pooled_clients pools failed: {type(exc).__name__}: {exc}")

        if ours_installed and not args.skip_async:
            aio, aio_profile = _run_async(conninfo, args, log)
            failed |= bool(aio.errors)
        if ours_installed and args.instructions > 0:
            instruction_counts = _count_instructions(args.instructions, notes, log)

        if not args.skip_e2e:
            log("end to end: gunicorn + wrk")
            e2e = run_e2e(
                conninfo,
                workers=args.workers,
                threads=args.worker_threads,
                duration=args.e2e_duration,
                rounds=args.e2e_rounds,
                warmup=0 if args.quick else 1,
                with_ours=ours_installed,
                log=log,
            )
            failed |= e2e.error is not None or bool(e2e.skipped)
    finally:
        cluster.destroy()

    vers = versions()
    vers["PostgreSQL"] = server
    if e2e is not None and e2e.wrk_version:
        vers["wrk"] = e2e.wrk_version
    run = Run(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        revision=git_revision(),
        wall_seconds=time.perf_counter() - started,
        machine={
            **machine_info(),
            "load average (1/5/15 min), start": load_at_start,
            "load average (1/5/15 min), end": load_average(),
        },
        versions=vers,
        specs=specs,
        connections=connections,
        micro=micro,
        setup=setup,
        scale=scale,
        aio=aio,
        aio_profile=aio_profile,
        instructions=instruction_counts,
        e2e=e2e,
        profile=profile,
        notes=notes,
        quick=args.quick,
    )
    text = render(run)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        log(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(run), indent=1, default=str))
    log(f"done in {run.wall_seconds:.0f} s" + (" with failures" if failed else ""))
    return 1 if failed else 0
