"""Render a benchmark run as Markdown (the whole of docs/benchmarks.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.aio_bench import WORKLOADS as AIO_WORKLOADS
from benchmarks.aio_bench import AsyncResults
from benchmarks.contestants import OURS, PEERS, Spec
from benchmarks.e2e import VIEWS, E2EResults
from benchmarks.hotpath import ProfileResult
from benchmarks.micro import WORKLOADS, MicroResults, Tail
from benchmarks.setup_bench import ScaleResults, SetupResults


@dataclass
class Run:
    date: str
    command: str
    revision: str
    wall_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    specs: list[Spec]
    connections: dict[str, tuple[int | None, int | None]]
    micro: MicroResults | None
    setup: SetupResults | None
    scale: ScaleResults | None
    aio: AsyncResults | None
    aio_profile: ProfileResult | None
    instructions: dict[str, float]
    e2e: E2EResults | None
    profile: ProfileResult | None
    notes: list[str] = field(default_factory=list)
    quick: bool = False


def _ops(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _x(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _threads_label(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _targets(run: Run) -> list[list[str]]:
    rows: list[list[str]] = []
    m = run.micro

    def ratio(workload: str, threads: int, key: str, base: str) -> float | None:
        return None if m is None else m.ratio(workload, threads, key, base)

    r1 = ratio("noquery", 1, OURS, "floor")
    rows.append(
        [
            "no-query checkout+return at 1 thread >= 0.5x the floor",
            "n/a" if r1 is None else f"{r1:.2f}x",
            _status(None if r1 is None else r1 >= 0.5),
        ]
    )

    worst: tuple[float, str] | None = None
    if m is not None:
        for workload in WORKLOADS:
            for threads in m.thread_counts:
                for peer in PEERS:
                    r = ratio(workload, threads, OURS, peer)
                    if r is None:
                        continue
                    where = f"{m.labels.get(peer, peer)}, {workload}, {_threads_label(threads)}"
                    if worst is None or r < worst[0]:
                        worst = (r, where)
    rows.append(
        [
            "ahead of psycopg_pool, SQLAlchemy and generic-connection-pool everywhere",
            "n/a" if worst is None else f"lowest {worst[0]:.2f}x ({worst[1]})",
            _status(None if worst is None else worst[0] > 1.0),
        ]
    )

    if m is not None:
        for t in (16, 64):
            if t not in m.thread_counts:
                continue
            for workload in WORKLOADS:
                ours_tail = m.tail(workload, t, OURS)
                others = {
                    k: tl
                    for k in m.contestants
                    if k not in (OURS, f"{OURS}_with", "fair_floor")
                    and (tl := m.tail(workload, t, k))
                }
                if ours_tail is None or not others:
                    continue
                best_p999 = min(others.items(), key=lambda kv: kv[1].p999)
                best_max = min(others.items(), key=lambda kv: kv[1].max)
                rows.append(
                    [
                        f"lowest p99.9 and max of all contestants, {workload}, "
                        f"{_threads_label(t)}",
                        f"p99.9 {ours_tail.p999:.3g} ms (best other: "
                        f"{m.labels[best_p999[0]]} {best_p999[1].p999:.3g}); max "
                        f"{ours_tail.max:.3g} ms (best other: {m.labels[best_max[0]]} "
                        f"{best_max[1].max:.3g})",
                        _status(
                            ours_tail.p999 <= best_p999[1].p999
                            and ours_tail.max <= best_max[1].max
                        ),
                    ]
                )

    sel = [
        (t, ratio("select1", t, OURS, "floor"))
        for t in (1, 16)
        if m is not None and t in m.thread_counts
    ]
    known = [r for _, r in sel if r is not None]
    rows.append(
        [
            "SELECT 1 at 1 and 16 threads >= 0.9x the floor",
            ", ".join(f"{_threads_label(t)}: {'n/a' if r is None else f'{r:.2f}x'}" for t, r in sel)
            or "n/a",
            _status(None if not known or len(known) < len(sel) else min(known) >= 0.9),
        ]
    )

    fair = [
        (t, ratio("select1", t, OURS, "fair_floor"))
        for t in (1, 16)
        if m is not None and t in m.thread_counts and "fair_floor" in m.contestants
    ]
    if fair:
        rows.append(
            [
                "(reference) SELECT 1 at 1 and 16 threads against the FIFO hand-off floor",
                ", ".join(f"{_threads_label(t)}: {_x(r)}" for t, r in fair),
                "information",
            ]
        )

    e = run.e2e
    vs_django = e.ratio("db_pooled_clients", "db_django") if e else None
    vs_connect = e.ratio("db_pooled_clients", "db_connect") if e else None
    rows.append(
        [
            "end to end: pooled view >= Django's own pool",
            _x(vs_django),
            _status(None if vs_django is None else vs_django >= 1.0),
        ]
    )
    rows.append(
        [
            "end to end: pooled view >= 5x connect-per-request",
            _x(vs_connect),
            _status(None if vs_connect is None else vs_connect >= 5.0),
        ]
    )

    s = run.setup
    for n in s.counts if s else []:
        added, conns = s.added_cpu_ms(n), s.max_connections(n)
        rows.append(
            [
                f"django.setup() with {n} pools: no connection"
                + (", adds < 20 ms" if n <= 50 else ""),
                "n/a" if added is None else f"{conns} connections, {added:+.2f} ms of CPU time",
                _status(
                    None
                    if added is None or conns is None
                    else conns == 0 and (n > 50 or added < 20.0)
                ),
            ]
        )
    if run.aio is not None:
        rows += _async_targets(run.aio)
    sc = run.scale
    most = max(sc.keyed, key=lambda k: k["keys"]) if sc and sc.keyed else None
    if most is not None and "maintenance_cpu" in most:
        rows.append(
            [
                f"maintenance thread with {int(most['keys']):,} idle keys: < 1% of a core",
                f"{most['maintenance_cpu']:.2%}",
                _status(most["maintenance_cpu"] < 0.01),
            ]
        )
    if sc is not None and sc.maintenance_cpu is not None:
        rows.append(
            [
                f"maintenance thread with {sc.pools:,} idle pools: < 1% of a core",
                f"{sc.maintenance_cpu:.2%}",
                _status(sc.maintenance_cpu < 0.01),
            ]
        )
    return rows


def _micro_tables(m: MicroResults) -> list[str]:
    out: list[str] = []
    header = ["contestant"] + [_threads_label(t) for t in m.thread_counts]
    for workload, title in WORKLOADS.items():
        out += ["", f"### {title[0].upper()}{title[1:]}", ""]
        out.append("Operations per second (ratio to the floor).")
        out.append("")
        rows = []
        for key in m.contestants:
            row = [m.labels[key] if key != OURS else f"**{m.labels[key]}**"]
            for t in m.thread_counts:
                v = m.median(workload, t, key)
                if (workload, t, key) in m.errors:
                    row.append("error")
                else:
                    row.append(f"{_ops(v)} ({_x(m.ratio(workload, t, key, 'floor'))})")
            rows.append(row)
        out += _table(header, rows)

    if OURS in m.contestants:
        out += ["", f"### {OURS} against each contestant", ""]
        out.append(
            f"{OURS}' operations per second divided by the other's; above 1.00x {OURS} is faster."
        )
        out.append("")
        header = ["other"] + [
            f"{'no query' if w == 'noquery' else 'SELECT 1'}, {t}"
            for w in WORKLOADS
            for t in m.thread_counts
        ]
        rows = []
        for key in m.contestants:
            if key == OURS:
                continue
            row = [m.labels[key]]
            for w in WORKLOADS:
                for t in m.thread_counts:
                    row.append(_x(m.ratio(w, t, OURS, key)))
            rows.append(row)
        out += _table(header, rows)

    out += _tail_tables(m)
    out += ["", "### Round-to-round spread", ""]
    out.append("(max - min) / median of each cell's rounds: the median and the worst cell.")
    out.append("")
    rows = []
    for key in m.contestants:
        spreads = [
            s for w in WORKLOADS for t in m.thread_counts if (s := m.spread(w, t, key)) is not None
        ]
        if spreads:
            spreads.sort()
            rows.append([m.labels[key], f"{spreads[len(spreads) // 2]:.0%}", f"{spreads[-1]:.0%}"])
        else:
            rows.append([m.labels[key], "n/a", "n/a"])
    out += _table(["contestant", "median spread", "worst spread"], rows)
    if m.errors:
        out += ["", "Errors:", ""]
        out += [f"- {w}, {t} threads, {k}: {msg}" for (w, t, k), msg in sorted(m.errors.items())]
    return out


def _fmt_tail(t: Tail | None) -> str:
    if t is None:
        return "n/a"
    return " / ".join(f"{v:.3g}" for v in (t.p50, t.p99, t.p999, t.max))


def _tail_tables(m: MicroResults) -> list[str]:
    out: list[str] = []
    header = ["contestant"] + [_threads_label(t) for t in m.thread_counts]
    for workload, title in WORKLOADS.items():
        out += ["", f"### Tail latency: {title}", ""]
        out.append(
            "Milliseconds per operation, p50 / p99 / p99.9 / max: the median over rounds of each "
            "round's percentiles over every operation of every thread, and the largest max of "
            "any round. With more threads than the 10 connections, the wait for a connection "
            "is part of the latency: a pool that lets one thread take a connection back ahead "
            "of the waiting ones shows it in p99.9 and max."
        )
        out.append("")
        rows = []
        for key in m.contestants:
            row = [m.labels[key] if key != OURS else f"**{m.labels[key]}**"]
            row += [_fmt_tail(m.tail(workload, t, key)) for t in m.thread_counts]
            rows.append(row)
        out += _table(header, rows)
    return out


def async_tables(a: AsyncResults) -> list[str]:
    out = [
        "",
        "## The async path",
        "",
        f"All tasks on one event loop; each loops on one operation for {a.duration:g} s per cell, "
        f"{a.rounds} interleaved rounds; median operations per second, then the median p99 "
        "latency of the rounds in milliseconds, timed around the operation alone (with 100 and "
        "1,000 tasks most of it is the wait for one of the 10 connections). With more than one "
        "task, each yields to the loop (`await asyncio.sleep(0)`) after every operation, as a "
        "handler awaiting anything else would; without that a checkout that never suspends "
        "would let one task run the whole cell alone.",
        "",
        "Contestants:",
        "",
    ]
    out += [f"- **{a.labels[k]}**: {d}." for k, d in a.descriptions.items()]
    header = ["contestant"] + [f"{t} task" + ("" if t == 1 else "s") for t in a.task_counts]
    for workload, title in AIO_WORKLOADS.items():
        keys = a.workloads.get(workload, [])
        if not keys:
            continue
        out += ["", f"### Async: {title}", "", "Operations per second / p99 (ms)."]
        rows = []
        for key in keys:
            row = [f"**{a.labels[key]}**" if key.startswith(OURS) else a.labels[key]]
            for t in a.task_counts:
                ops, p99 = a.median(workload, t, key), a.p99(workload, t, key)
                if ops is None:
                    row.append("n/a")
                else:
                    row.append(_ops(ops) + ("" if p99 is None else f" / {p99:.3g}"))
            rows.append(row)
        out += ["", *_table(header, rows)]
    if a.errors:
        out += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in sorted(a.errors.items())]
    return out


def _async_targets(a: AsyncResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for workload in ("noquery", "select1"):
        pairs = [(t, a.ratio(workload, t, OURS, "psycopg_pool")) for t in a.task_counts]
        known = [r for _, r in pairs if r is not None]
        rows.append([
            f"async, {'no query' if workload == 'noquery' else 'SELECT 1'}: AsyncPool ahead of "
            "psycopg_pool's AsyncConnectionPool at every concurrency",
            ", ".join(f"{t}: {_x(r)}" for t, r in pairs),
            _status(None if not known else min(known) > 1.0),
        ])
    pairs = [(t, a.ratio("noquery", t, f"{OURS}_sync", f"{OURS}_with")) for t in a.task_counts]
    known = [r for _, r in pairs if r is not None]
    rows.append([
        "async: a sync Pool through aconnection() within 2x of AsyncPool's aconnection()",
        ", ".join(f"{t}: {_x(r)}" for t, r in pairs),
        _status(None if not known else min(known) >= 0.5),
    ])
    pairs = [(t, a.ratio("get", t, f"{OURS}_http", "httpx_shared")) for t in a.task_counts]
    known = [r for _, r in pairs if r is not None]
    rows.append([
        "async: AsyncHTTPBackend pool within 10% of one shared httpx.AsyncClient",
        ", ".join(f"{t}: {_x(r)}" for t, r in pairs),
        _status(None if not known else min(known) >= 0.9),
    ])
    return rows


def _setup_section(s: SetupResults) -> list[str]:
    out = [
        "",
        "## `django.setup()` with many pools",
        "",
        f"Fresh interpreter per sample ({s.samples} samples each, alternating), timing "
        '`django.setup()` alone with `INSTALLED_APPS=["pooled_clients"]`; then, after a pause, '
        "counting the pools' connections in `pg_stat_activity` (each pool has `MIN_SIZE=2`). "
        "Added: the median of the paired differences in CPU time against the run without pools "
        "(on a shared machine wall time mostly measures other processes), then wall time "
        "fastest against fastest.",
        "",
    ]
    if s.error:
        out.append(f"Failed: {s.error}")
        return out
    rows = []
    for n in (0, *s.counts):
        added_cpu, added = s.added_cpu_ms(n), s.added_ms(n)
        rows.append(
            [
                f"{n:,} pools",
                _ms(s.min_ms(n)),
                _ms(s.median_ms(n)),
                _ms(s.median_cpu_ms(n)),
                "-" if n == 0 or added_cpu is None else f"{added_cpu:+.2f} ms",
                "-" if n == 0 or added is None else f"{added:+.2f} ms",
                "-" if n == 0 else str(s.max_connections(n)),
            ]
        )
    out += _table(
        [
            "configured",
            "fastest (wall)",
            "median (wall)",
            "median (CPU)",
            "added (CPU)",
            "added (wall)",
            "connections opened",
        ],
        rows,
    )
    return out


def _scale_section(sc: ScaleResults) -> list[str]:
    out = ["", "## Idle cost", ""]
    if sc.error:
        return [*out, f"Failed: {sc.error}"]
    out.append(
        f"In a fresh interpreter: {sc.pools:,} pools, each used once and holding one idle "
        f"client, left alone for {sc.seconds:g} s; the maintenance thread's CPU time "
        "(`pthread_getcpuclockid`) over the wall time. Then `tracemalloc` of N clients on "
        "their own against a pool holding N idle ones (in-memory clients: nothing else "
        "allocates)."
    )
    out.append("")
    rows = [["maintenance thread CPU, idle", f"{sc.maintenance_cpu:.3%} of one core"
             if sc.maintenance_cpu is not None else "n/a"]]
    kinds = (("a bare object", sc.memory_bare), ("a requests.Session", sc.memory_session))
    for label, mem in kinds:
        if mem:
            rows.append(
                [
                    f"memory per idle client: {label}",
                    f"{mem['own']:,.0f} B on its own; {mem['overhead']:,.0f} B more in a pool",
                ]
            )
    out += _table(["measure", "value"], rows)
    if sc.keyed:
        out += [
            "",
            "### Keyed pools",
            "",
            "A keyed pool (`KEYS`) with N live keys, each holding one idle in-memory client, "
            "beside a hand-rolled `dict` of N pools; bytes per key over its client's own "
            "size (tracemalloc), one checkout + return cycling through the keys, and the time "
            "the keyed pool took to reach N keys.",
            "",
        ]
        krows = [
            [
                f"{int(k['keys']):,}",
                f"{k['keyed_bytes']:,.0f} B",
                f"{k['dict_bytes']:,.0f} B",
                f"{k['keyed_us']:,.1f} us",
                f"{k['dict_us']:,.1f} us",
                f"{k['keyed_build_s']:.2f} s",
                f"{k['maintenance_cpu']:.3%}" if "maintenance_cpu" in k else "",
            ]
            for k in sc.keyed
        ]
        out += _table(
            [
                "live keys",
                "keyed: bytes per key",
                "dict of pools: bytes per key",
                "keyed: checkout + return",
                "dict of pools: checkout + return",
                "keyed: time to build",
                "maintenance CPU, idle",
            ],
            krows,
        )
    return out


def _e2e_section(e: E2EResults) -> list[str]:
    out = [
        "",
        "## End to end",
        "",
        f"`benchmarks/e2e_site` under gunicorn (`gthread` worker class, {e.workers} workers x "
        f"{e.threads} threads, no preload; each pool and Django's pool sized {e.threads} per "
        f"worker), hit by `wrk -t 1 -c {e.connections} -H 'Connection: close'` for {e.duration} s "
        "per view (a new connection per request, as behind a proxy that does not keep them "
        "alive; kept-alive connections spread unevenly over the workers), "
        f"{e.rounds} interleaved rounds after a warm-up; median requests/s. Every view runs "
        "one round trip: one `SELECT 1`, one GET of a small JSON document from a local upstream, "
        "one Redis `GET` from a local `redis-server`, one WebSocket message echoed by a local "
        "echo server, or one gRPC `Health/Check` to a local grpcio server; each pooled view "
        "against a new client per request.",
        "",
    ]
    if e.error:
        out += [f"Failed: {e.error}", ""]
    rows = []
    for view in VIEWS:
        if view.key in e.skipped:
            rows.append([view.label, "skipped", "", "", e.skipped[view.key]])
            continue
        rps = e.median_rps(view.key)
        if rps is None:
            continue
        ours = f"{view.group}_pooled_clients"
        fails = e.failures(view.key)
        rows.append(
            [
                f"**{view.label}**" if view.needs_ours else view.label,
                _ops(rps),
                _ms(e.median_latency(view.key, "p50_ms")),
                _ms(e.median_latency(view.key, "p99_ms")),
                ("" if view.needs_ours else _x(e.ratio(ours, view.key)))
                + (f" ({fails} failed responses)" if fails else ""),
            ]
        )
    out += _table(["view", "requests/s", "p50", "p99", "pooled_clients / this"], rows)
    return out


def _aio_profile_section(run: Run) -> list[str]:
    out = ["", "### Profile: AsyncPool, 1 task, no query", ""]
    if run.instructions:
        out.append(
            "Instructions per checkout + return of an in-memory client, counted by callgrind "
            "(`python -m benchmarks.instructions`: the difference between N and 2N iterations, "
            "divided by N; steady where timings on this machine are not):"
        )
        out.append("")
        out += _table(
            ["case", "instructions"],
            [[f"`{k}`", f"{v:,.0f}"] for k, v in run.instructions.items()],
        )
        out.append("")
    if run.aio_profile:
        out += _profile_rows(run.aio_profile, "python -m benchmarks.aio_bench")
    return out


def _profile_section(p: ProfileResult) -> list[str]:
    workload = "SELECT 1" if p.query else "no query"
    title = f"## Profile: {p.contestant}, 1 thread, {workload}"
    return ["", title, "", *_profile_rows(p, "python -m benchmarks.hotpath")]


def _profile_rows(p: ProfileResult, command: str) -> list[str]:
    out = [
        f"cProfile over {p.ops:,} checkouts ({p.seconds:.1f} s; the profiler itself slows the "
        "loop several times, so read the shares, not the absolute times). Top functions by own "
        f"time; reproduce with `{command}`.",
        "",
    ]
    rows = [
        [
            f"`{e.function}`",
            f"{e.calls:,}",
            f"{e.tottime_s:.3f}",
            f"{e.cumtime_s:.3f}",
            f"{e.per_call_us:.2f}",
        ]
        for e in p.entries
    ]
    out += _table(
        ["function", "calls", "tottime (s)", "cumtime (s)", "tottime per call (us)"], rows
    )
    return out


METHOD = """\
## Method

- **One process, real connections.** Every contestant holds 10 real psycopg 3 connections
  (autocommit) to a private PostgreSQL started on a free 127.0.0.1 port for the run; the
  "connections" column above is read from `pg_stat_activity` by `application_name` before and
  after the measurements. All pools stay open for the whole run.
- **The floor** is the least a blocking pool can do: one `threading.Condition` guarding a list
  (`acquire`: wait while empty, pop; `release`: append, notify). Ratios are against it.
- **Each cell** (contestant x workload x thread count) runs N threads that loop on
  checkout + return (optionally `conn.execute("SELECT 1").fetchone()` in between) for a fixed
  duration. The clock stops when the last thread has finished its last operation, so every
  counted operation completed in the measured interval. With more than 10 threads the threads
  queue for the 10 connections, which is what the 16- and 64-thread columns measure.
- **Rounds are interleaved**: every round runs every cell once, rotating the order of the
  contestants each round, so machine drift hits every contestant alike. Operations per second
  are the median of the rounds. A ratio is the median, over the rounds, of the two contestants'
  ratio within the same round (they ran seconds apart), which cancels most of the drift between
  rounds; the spread table shows how noisy the machine was. End-to-end ratios are paired the
  same way.
- **`django.setup()`** is timed in fresh interpreters, alternating 0, 1, 50 and 1,000
  pools. The time added is the median of the paired differences in the process's CPU
  time, which other load on the machine does not inflate; wall time (fastest against
  fastest) is shown beside it. A blocking wait during setup would not show as CPU time,
  but a connection attempt would show in the connection count, which is read from
  `pg_stat_activity` after a pause.
- **pooled_clients is used as a user would**: Django settings with
  `INSTALLED_APPS=["pooled_clients"]` and a `POOLED_CLIENTS` entry
  (`MIN_SIZE=MAX_SIZE=10`, defaults otherwise: stats and lease tracking on), `django.setup()`,
  then `pools["bench"].acquire()` / `.release(c)`; the "(with)" row uses
  `with pools["bench"].connection() as c`.
- **Peers** use their own recommended explicit API: `getconn()`/`putconn()` for psycopg_pool,
  `connect()`/`close()` for SQLAlchemy's `QueuePool` (its reset-on-return rollback included, as
  shipped), `acquire()`/`release()` for generic-connection-pool (with a psycopg 3 twin of its
  bundled psycopg2 connection manager).
- All of this runs on CPython with the GIL: at 4 threads and more the threads take turns, so
  the columns measure contention and hand-off cost rather than parallel speed-up.
- **Tail latency** is timed around every operation of every thread (one clock read per
  operation, the same for every contestant, so the operations per second beside it include
  that read too). Percentiles are nearest-rank over all the operations of a cell in one
  round, then the median over rounds; max is the largest of any round.
- **The async path** runs every task on one event loop in the main process: `AsyncPool` with
  `AsyncPostgresBackend` and psycopg_pool's `AsyncConnectionPool` (10 connections each), a
  sync `Pool` driven through `aconnection()`, and an `AsyncPool` of `httpx.AsyncClient`s
  against one shared `httpx.AsyncClient` limited to 10 connections, calling the same local
  upstream. Ratios pair cells of the same round, as for threads.
- **Instruction counts** come from callgrind (`python -m benchmarks.instructions`): a loop
  of checkouts of an in-memory client run with N and 2N iterations, the difference divided
  by N. Unlike timings they do not move with the machine's load.
- **Idle cost** runs in fresh interpreters with in-memory clients, so that only the pools
  allocate and only the maintenance thread runs; its CPU time is read from its own thread
  clock.
- The numbers are only comparable within one run: the machine is small and shared. Compare
  ratios, not absolute operations per second, across runs.

## Running it

```sh
scripts/bootstrap                    # PostgreSQL, wrk and the virtualenv, if missing
.venv/bin/python -m benchmarks       # the full run (< 15 minutes on 2 cores), rewrites this page
.venv/bin/python -m benchmarks --quick   # a smoke run (< 1 minute), prints only
.venv/bin/python -m benchmarks.hotpath --seconds 5  # cProfile of the sync hot path
.venv/bin/python -m benchmarks.aio_bench --profile 5  # cProfile of AsyncPool's hot path
.venv/bin/python -m benchmarks.aio_bench --tasks 1,10  # the async tables alone
.venv/bin/python -m benchmarks.scale_probe --keys 1,100  # idle cost and keyed pools, as JSON
.venv/bin/python -m benchmarks.contention --threads 16,64  # a contended checkout, no database
```

Options: `--rounds N`, `--duration S` (seconds per cell), `--threads 1,4,16,64`,
`--contestants floor,pooled_clients,...`, `--skip-e2e`, `--e2e-duration S`, `--e2e-rounds N`,
`--workers N`, `--worker-threads N`, `--setup-samples N`, `--setup-pools 1,50,1000`,
`--tasks 1,10,100,1000`, `--async-rounds N`, `--skip-async`, `--scale-pools N`,
`--scale-seconds S`, `--keys 1,100,10000`, `--instructions N` (0 to skip),
`--profile-seconds S` (0 to skip),
`--output PATH` (`-` for standard output; `--quick` prints unless given), `--json PATH` for the
raw samples. The run exits non-zero when a contestant, a cell, the `django.setup()` or idle
probe, the async part or the end-to-end part fails; it never judges speed.
"""


def render(run: Run) -> str:
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks`: edit benchmarks/report.py, not this file. -->",
        "",
        "How fast `pooled_clients` checks a client out and back in, side by side with the least a "
        "blocking pool can do and with the pools people already use, on one machine in one run. "
        "The method and how to run it are at the end of this page.",
        "",
        "## Latest run",
        "",
        f"- Date: {run.date}",
        f"- Command: `{run.command}`",
    ]
    if run.revision:
        rev, _, rest = run.revision.partition(" ")
        out.append(f"- Revision: `{rev}`" + (f" {rest}" if rest else ""))
    out.append(f"- Wall time: {run.wall_seconds:.0f} s")
    if run.micro:
        out.append(
            f"- Micro: {run.micro.rounds} rounds x {run.micro.duration:g} s per cell, "
            f"threads {', '.join(map(str, run.micro.thread_counts))}"
        )
    out.append("")
    out += _table(
        ["machine", ""],
        [[k, v] for k, v in run.machine.items()] + [[k, v] for k, v in run.versions.items()],
    )

    out += ["", "## Targets", ""]
    if run.quick:
        out += ["A `--quick` smoke run: far too short to judge any target.", ""]
    out += _table(["target", "measured", "status"], _targets(run))

    out += ["", "## Checkout and return", ""]
    out += ["Contestants:", ""]
    for spec in run.specs:
        start, end = run.connections.get(spec.key, (None, None))
        held = "" if start is None else f" Connections held: {start} before, {end} after."
        out.append(f"- **{spec.label}**: {spec.description}.{held}")
    if run.micro:
        out += _micro_tables(run.micro)
    if run.aio:
        out += async_tables(run.aio)
    if run.aio_profile or run.instructions:
        out += _aio_profile_section(run)
    if run.setup:
        out += _setup_section(run.setup)
    if run.scale:
        out += _scale_section(run.scale)
    if run.e2e:
        out += _e2e_section(run.e2e)
    if run.profile:
        out += _profile_section(run.profile)
    if run.notes:
        out += ["", "## Notes from this run", ""] + [f"- {n}" for n in run.notes]
    out += ["", METHOD]
    return "\n".join(out).rstrip() + "\n"
