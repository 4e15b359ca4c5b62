"""Real servers on 127.0.0.1 for the test suite, the example project and the benchmarks.

Nothing here is part of the published package: these helpers start private PostgreSQL clusters,
PgBouncer, Redis, an HTTP upstream, a WebSocket echo server, a gRPC health server, a
fault-injecting TCP proxy and TLS echo servers, each on a free port.
"""

from __future__ import annotations

__all__ = ["grpc", "http", "pgbouncer", "ports", "postgres", "proxy", "redis", "tls", "websocket"]
