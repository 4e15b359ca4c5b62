"""An in-process gRPC server with the standard health service (``grpc.health.v1``).

``set_status(service, serving)`` flips what ``Health/Check`` answers for a service name
(``""`` is the server as a whole); TLS when given :class:`~devservers.tls.Certs`.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

from devservers.service import Service
from devservers.tls import Certs


class GRPCHealthServer(Service):
    """A grpcio server on 127.0.0.1 serving only the health service."""

    host = "127.0.0.1"

    def __init__(self, services: tuple[str, ...] = ("",), certs: Certs | None = None,
                 port: int = 0) -> None:
        self.services = services
        self.certs = certs
        self.port = port
        self.checks = 0
        self._server: Any = None
        self._health: Any = None

    @property
    def target(self) -> str:
        """``127.0.0.1:port`` (``localhost:port`` with TLS, matching the certificate)."""
        return f"{'localhost' if self.certs else self.host}:{self.port}"

    def start(self) -> None:
        """Serve on a free port (the same port again after a stop), every service SERVING."""
        import grpc
        from grpc_health.v1 import health, health_pb2_grpc

        if self._server is not None:
            return
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(_Counting(self, self._health), server)
        address = f"{self.host}:{self.port}"
        if self.certs is not None:
            credentials = grpc.ssl_server_credentials([(
                self.certs.server_key.read_bytes(), self.certs.server_cert.read_bytes())])
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        server.start()
        self._server = server
        for service in self.services:
            self.set_status(service, True)

    def stop(self) -> None:
        """Stop at once: open calls are cancelled and connections closed."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(5)

    def set_status(self, service: str, serving: bool) -> None:
        """What ``Health/Check`` answers for ``service`` from now on."""
        from grpc_health.v1 import health_pb2

        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        self._health.set(service, status)

    def __repr__(self) -> str:
        return f"<GRPCHealthServer {self.target} tls={self.certs is not None}>"


class _Counting:
    """The health servicer, counting ``Check`` calls (a witness for the tests)."""

    def __init__(self, owner: GRPCHealthServer, servicer: Any) -> None:
        self._owner = owner
        self._servicer = servicer

    def Check(self, request: Any, context: Any) -> Any:
        self._owner.checks += 1
        return self._servicer.Check(request, context)

    def Watch(self, request: Any, context: Any) -> Any:
        return self._servicer.Watch(request, context)

    def List(self, request: Any, context: Any) -> Any:
        return self._servicer.List(request, context)
