"""End to end: the benchmark site under gunicorn, hit by wrk on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class View:
    key: str
    label: str
    path: str
    group: str
    needs_ours: bool


VIEWS = [
    View("db_pooled_clients", "pools: one query", "/db/pooled_clients/", "db", True),
    View("db_django", "Django DATABASES pool: one query", "/db/django/", "db", False),
    View("db_connect", "psycopg.connect per request: one query", "/db/connect/", "db", False),
    View("http_pooled_clients", "HTTPBackend pool: one GET", "/http/pooled_clients/", "http", True),
    View("http_requests", "requests.get per request: one GET", "/http/requests/", "http", False),
    View("redis_pooled_clients", "RedisBackend pool: one GET", "/redis/pooled_clients/", "redis",
         True),
    View("redis_connect", "redis.Redis per request: one GET", "/redis/connect/", "redis", False),
    View("ws_pooled_clients", "WebSocketBackend pool: one echo", "/ws/pooled_clients/", "ws",
         True),
    View("ws_connect", "websockets connect per request: one echo", "/ws/connect/", "ws", False),
    View("grpc_pooled_clients", "GRPCBackend pool: one health Check", "/grpc/pooled_clients/",
         "grpc", True),
    View("grpc_connect", "grpc channel per request: one health Check", "/grpc/connect/", "grpc",
         False),
]


@dataclass
class WrkRun:
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non2xx: int
    socket_errors: int


@dataclass
class E2EResults:
    workers: int
    threads: int
    connections: int
    duration: int
    rounds: int
    wrk_version: str = ""
    runs: dict[str, list[WrkRun]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def median_rps(self, key: str) -> float | None:
        runs = self.runs.get(key)
        return statistics.median(r.rps for r in runs) if runs else None

    def ratio(self, key: str, base: str) -> float | None:
        """Median over rounds of ``key``'s requests/s divided by ``base``'s in the same round."""
        a, b = self.runs.get(key) or [], self.runs.get(base) or []
        pairs = [x.rps / y.rps for x, y in zip(a, b, strict=False) if y.rps]
        return statistics.median(pairs) if pairs else None

    def median_latency(self, key: str, which: str) -> float | None:
        runs = self.runs.get(key) or []
        values = [v for r in runs if (v := getattr(r, which)) is not None]
        return statistics.median(values) if values else None

    def failures(self, key: str) -> int:
        return sum(r.non2xx + r.socket_errors for r in self.runs.get(key, []))


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(output: str) -> WrkRun:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise RuntimeError("wrk printed no Requests/sec: " + output.strip()[-300:])
    total = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        requests=int(total.group(1)) if total else 0,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def _wrk(url: str, connections: int, seconds: int) -> WrkRun:
    # Every request on a new connection, as behind a proxy that does not keep connections to
    # gunicorn alive (nginx's default). With keep-alive, wrk's few long-lived connections land
    # unevenly on the workers (often all on one) and the result flips between two modes.
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-H",
        "Connection: close",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return parse_wrk(proc.stdout)


def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            if _get(base + "/ping/", timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /ping/ in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _disable_nagle_upstream() -> None:
    """Make the local upstream answer keep-alive requests without a Nagle stall.

    Its handler writes the headers and the body of each response separately; on a reused
    connection Nagle's algorithm then holds the body back until the client's delayed ACK, about
    40 ms later, which would measure the kernel's timers instead of the pools. Production servers
    set TCP_NODELAY; ``disable_nagle_algorithm`` is socketserver's switch for it.
    """
    import devservers.http

    handler = getattr(devservers.http, "_Handler", None)
    if handler is not None and not getattr(handler, "disable_nagle_algorithm", False):
        handler.disable_nagle_algorithm = True


def _start_services(
    results: E2EResults, log: Callable[[str], None]
) -> tuple[list[Any], dict[str, str]]:
    """Start the Redis, WebSocket echo and gRPC health servers the views talk to; a server
    that cannot start skips its views instead of failing the run."""
    services: list[Any] = []
    env: dict[str, str] = {}

    def redis() -> tuple[Any, str, str]:
        from devservers.redis import RedisServer

        server = RedisServer()
        server.start()
        return server, "BENCH_REDIS_URL", server.url

    def ws() -> tuple[Any, str, str]:
        from devservers.websocket import WebSocketEchoServer

        server = WebSocketEchoServer()
        server.start()
        return server, "BENCH_WS_URL", server.url

    def grpc() -> tuple[Any, str, str]:
        from devservers.grpc import GRPCHealthServer

        server = GRPCHealthServer()
        server.start()
        return server, "BENCH_GRPC_TARGET", server.target

    for group, start in (("redis", redis), ("ws", ws), ("grpc", grpc)):
        try:
            server, name, value = start()
        except Exception as exc:
            reason = f"its server did not start: {type(exc).__name__}: {exc}"
            log(f"  {group}: {reason}")
            for view in VIEWS:
                if view.group == group:
                    results.skipped[view.key] = reason
            continue
        services.append(server)
        env[name] = value
    return services, env


def wrk_version() -> str:
    path = shutil.which("wrk")
    if not path:
        return ""
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def run_e2e(
    conninfo: str,
    *,
    workers: int,
    threads: int,
    duration: int,
    rounds: int,
    warmup: int,
    with_ours: bool,
    log: Callable[[str], None],
) -> E2EResults:
    connections = workers * threads
    results = E2EResults(workers, threads, connections, duration, rounds, wrk_version())
    if not shutil.which("wrk"):
        results.error = "wrk is not installed (Debian: apt-get install wrk)"
        return results

    from devservers.http import UpstreamServer
    from devservers.ports import free_port

    _disable_nagle_upstream()
    upstream = UpstreamServer()
    upstream.start()
    services, service_env = _start_services(results, log)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.e2e_site.settings",
        BENCH_PG_CONNINFO=conninfo,
        BENCH_UPSTREAM_URL=str(upstream.url),
        BENCH_POOL_SIZE=str(threads),
        BENCH_WITH_POOLED_CLIENTS="1" if with_ours else "0",
        **service_env,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    logdir = tempfile.mkdtemp(prefix="bench-e2e-")
    logfile = Path(logdir, "gunicorn.log")
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "benchmarks.e2e_site.wsgi:application",
        "-c",
        str(ROOT / "benchmarks" / "e2e_site" / "gunicorn_conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
    ]
    proc: subprocess.Popen[bytes] | None = None
    try:
        with logfile.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _wait_ready(base, proc, 60.0)
        active: list[View] = []
        for view in VIEWS:
            if view.needs_ours and not with_ours:
                results.skipped[view.key] = "pooled_clients is not usable"
                continue
            if view.key in results.skipped:
                continue
            status, body = _get(base + view.path)
            if status != 200:
                results.skipped[view.key] = f"HTTP {status}: {body.strip()[:200]}"
                continue
            active.append(view)
        for view in active:  # fill pools and warm every worker
            if warmup > 0:
                _wrk(base + view.path, connections, warmup)
        for r in range(rounds):
            order = [active[(i + r) % len(active)] for i in range(len(active))] if active else []
            for view in order:
                run = _wrk(base + view.path, connections, duration)
                results.runs.setdefault(view.key, []).append(run)
            log(f"  e2e round {r + 1}/{rounds} done")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
        results.error = f"{exc}" + (f" (gunicorn log: {' | '.join(tail)})" if tail else "")
        log(f"  end-to-end failed: {results.error}")
    finally:
        if proc is not None:
            _stop(proc)
        upstream.stop()
        for service in services:
            service.stop()
        shutil.rmtree(logdir, ignore_errors=True)
    return results
