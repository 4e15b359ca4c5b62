"""gRPC clients: one ``grpc.Channel`` per pooled client; build your stubs on it.

Needs grpcio (``pip install django-pooled-clients[grpc]``, which also brings
``grpcio-health-checking``); ``manage.py check`` reports its absence. ``OPTIONS``:

- ``target``: what ``grpc.insecure_channel`` takes (``"authz.internal:50051"``,
  ``"dns:///authz.internal:443"``, ``"unix:///run/authz.sock"``);
- ``tls``: ``True`` (the system's roots) or a dict of ``root_certificates``, ``private_key``,
  ``certificate_chain`` (PEM bytes, as ``grpc.ssl_channel_credentials`` takes them) and
  ``server_hostname`` (the name to verify instead of the target's host);
- ``channel_options``: a dict (or list of pairs) of gRPC channel arguments;
- ``health_service``: a service name for the standard ``grpc.health.v1`` ``Health/Check``
  (``""`` is the server as a whole), called with a deadline; a service reported NOT_SERVING
  fails the check, naming the status. ``None`` (the default) checks that the channel is
  connected;
- ``metadata``: a dict sent with the health check (values are secrets).

Creating a client waits until the channel is connected, within ``CONNECT_TIMEOUT``, and fails
at the first failed connection attempt rather than waiting out the timeout: a pool of a
service that is down fails fast. gRPC does not survive ``fork()`` reliably (see the
deployment guide): channels are opened on first use in the process that uses them, and a
channel inherited across a fork is abandoned by the pool, never used nor closed.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pooled_clients.backends.base import (
    AsyncClientBackend,
    ClientBackend,
    describe_key_hash,
    time_left,
    unknown_options,
    without_callables,
)
from pooled_clients.masking import mask_text, printable

if TYPE_CHECKING:
    import grpc
    import grpc.aio

__all__ = ["AsyncGRPCChannelBackend", "GRPCChannelBackend", "ServiceNotServing"]

OPTION_NAMES = ("target", "tls", "channel_options", "health_service", "metadata")
TLS_OPTION_NAMES = ("root_certificates", "private_key", "certificate_chain", "server_hostname")
_INSTALL_HINT = ("grpcio is not installed; install it with "
                 "'pip install django-pooled-clients[grpc]'.")
_HEALTH_HINT = ("grpcio-health-checking is not installed (needed by 'health_service'); "
                "install it with 'pip install django-pooled-clients[grpc]'.")


class ServiceNotServing(ConnectionError):
    """The health service answered, and the service is not serving."""


class _GRPCConfig:
    """Parsing, validation, description and keys shared by the sync and async backends."""

    options: dict[str, Any]
    provided_secrets: Callable[[], tuple[str, ...]]
    secret_options: ClassVar[tuple[str, ...]] = ("password", "token", "secret", "metadata")

    def _parse(self, options: Mapping[str, Any]) -> None:
        self.target = str(options.get("target", ""))
        tls = options.get("tls", False)
        self.tls_options: dict[str, Any] | None = (
            dict(tls) if isinstance(tls, Mapping) else ({} if tls else None))
        channel_options = options.get("channel_options") or {}
        pairs = list(channel_options.items() if isinstance(channel_options, Mapping)
                     else channel_options)
        hostname = (self.tls_options or {}).get("server_hostname")
        if hostname:
            pairs.append(("grpc.ssl_target_name_override", hostname))
        self.channel_options: list[tuple[str, Any]] = [(str(k), v) for k, v in pairs]
        self.health_service: str | None = options.get("health_service")
        self.metadata: list[tuple[str, str]] = list((options.get("metadata") or {}).items())

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with the gRPC OPTIONS, without any network or file I/O."""
        # Looked up, not imported: grpcio loads only in a process that opens a channel.
        if importlib.util.find_spec("grpc") is None:
            return [_INSTALL_HINT]
        problems = unknown_options(options, OPTION_NAMES)
        # A callable is checked by what it returns, at each creation.
        options, provided = without_callables(options)
        target = options.get("target")
        if "target" not in provided and (not isinstance(target, str) or not target):
            problems.append("'target' is required; expected a gRPC target such as "
                            "'authz.internal:50051'.")
        tls = options.get("tls", False)
        if isinstance(tls, Mapping):
            problems.extend(f"'tls' has unknown key {name!r}; expected one of "
                            f"{', '.join(TLS_OPTION_NAMES)}." for name in tls
                            if name not in TLS_OPTION_NAMES)
            for name in ("root_certificates", "private_key", "certificate_chain"):
                value = tls.get(name)
                if value is not None and not isinstance(value, bytes):
                    problems.append(f"'tls'[{name!r}] must be PEM bytes (read the file in "
                                    "binary mode), not " + type(value).__name__ + ".")
            if bool(tls.get("private_key")) != bool(tls.get("certificate_chain")):
                problems.append("'tls' needs both 'private_key' and 'certificate_chain' for a "
                                "client certificate, or neither.")
            hostname = tls.get("server_hostname")
            if hostname is not None and (not isinstance(hostname, str) or not hostname):
                problems.append(f"'tls'['server_hostname'] is {hostname!r}; expected a host "
                                "name.")
        elif not isinstance(tls, bool):
            problems.append(f"'tls' is {tls!r}; expected True, False or a dict of "
                            f"{', '.join(TLS_OPTION_NAMES)}.")
        channel_options = options.get("channel_options")
        if channel_options is not None and not isinstance(channel_options, Mapping) and not (
            isinstance(channel_options, list | tuple) and all(
                isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], str)
                for p in channel_options)):
            problems.append("'channel_options' must be a dict (or a list of pairs) of channel "
                            "argument name -> value.")
        service = options.get("health_service")
        if service is not None:
            if not isinstance(service, str):
                problems.append(f"'health_service' is {service!r}; expected a service name "
                                "(\"\" for the whole server) or None.")
            elif importlib.util.find_spec("grpc_health") is None:
                problems.append(_HEALTH_HINT)
        metadata = options.get("metadata")
        if metadata is not None and (not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and k == k.lower() and isinstance(v, str)
            for k, v in metadata.items()
        )):
            problems.append("'metadata' must be a dict of lower-case key -> string value.")
        return problems

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls_options is None:
            return None
        import grpc

        tls = self.tls_options
        return grpc.ssl_channel_credentials(
            root_certificates=tls.get("root_certificates"),
            private_key=tls.get("private_key"),
            certificate_chain=tls.get("certificate_chain"),
        )

    def _health_request(self) -> tuple[Any, Any]:
        """The health stub's class and the request for ``health_service``."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        return health_pb2_grpc.HealthStub, health_pb2.HealthCheckRequest(
            service=self.health_service or "")

    def _verdict(self, response: Any) -> None:
        from grpc_health.v1 import health_pb2

        if response.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            service = repr(self.health_service) if self.health_service else "the server"
            raise ServiceNotServing(f"health service reports {service} as {name}")

    def describe(self) -> str:
        """``grpc://host:port`` (``grpcs://`` with TLS), or the target as written when it
        has a scheme of its own (``dns:///...``, ``unix:...``)."""
        if ":/" in self.target or self.target.startswith("unix:"):
            return mask_text(self.target)
        return f"{'grpcs' if self.tls_options is not None else 'grpc'}://{self.target}"

    def secrets(self) -> list[str]:
        """Metadata values (and their words, such as a bearer token)."""
        found = [value for _, value in self.metadata if value]
        for _, value in self.metadata:
            found.extend(part for part in value.split() if len(part) >= 6)
        return found + list(self.provided_secrets())

    def key_options(self, key: Any) -> dict[str, Any]:
        """A key is a target (``"host:port"``, ``"dns:///host:443"``) or ``(host, port)``."""
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int):
            host = f"[{key[0]}]" if ":" in str(key[0]) else str(key[0])
            return {"target": f"{host}:{key[1]}"}
        if isinstance(key, str) and key:
            return {"target": key}
        raise ValueError(f"{type(self).__name__}: a key is a target such as 'host:port' or a "
                         f"(host, port) pair, not {type(key).__name__}.")

    def describe_key(self, key: Any) -> str:
        """The key's target (targets carry no credentials)."""
        try:
            return printable(self.key_options(key)["target"])
        except ValueError:
            return describe_key_hash(key)


def _connect(channel: grpc.Channel, timeout: float, target: str) -> None:
    """Wait until ``channel`` is READY; raise at the first failed attempt or the timeout."""
    import grpc

    outcome: list[grpc.ChannelConnectivity] = []
    settled = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
            outcome.append(state)
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        if not settled.wait(timeout):
            raise TimeoutError(f"no connection to {target} within {timeout:.2f}s")
    finally:
        channel.unsubscribe(watch)
    if outcome[0] is not grpc.ChannelConnectivity.READY:
        raise ConnectionError(f"cannot connect to {target} "
                              f"({outcome[0].name.lower().replace('_', ' ')})")


class GRPCChannelBackend(_GRPCConfig, ClientBackend["grpc.Channel"]):
    """A pool of connected ``grpc.Channel`` objects (one HTTP/2 connection each)."""

    #: A failed call (NOT_FOUND, PERMISSION_DENIED, ...) says nothing about the channel,
    #: which reconnects by itself; the check finds a channel that stays down.
    discard_on_error = False

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        self._parse(options)

    def create(self) -> grpc.Channel:
        """Open a channel and wait until it is connected, within ``connect_timeout``."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        import grpc

        credentials = self._credentials()
        channel = (grpc.secure_channel(self.target, credentials, options=self.channel_options)
                   if credentials is not None
                   else grpc.insecure_channel(self.target, options=self.channel_options))
        try:
            _connect(channel, timeout, self.describe())
        except BaseException:
            channel.close()
            raise
        return channel

    def close(self, client: grpc.Channel) -> None:
        """Close the channel (calls still running on it are cancelled)."""
        client.close()

    def check(self, client: grpc.Channel) -> None:
        """``Health/Check`` for ``health_service`` with a deadline of the time left; without
        one, that the channel is (or gets) connected within it."""
        timeout = max(0.05, time_left(self._connect_timeout))
        if self.health_service is None:
            _connect(client, timeout, self.describe())
            return
        stub_class, request = self._health_request()
        response = stub_class(client).Check(request, timeout=timeout,
                                            metadata=self.metadata or None)
        self._verdict(response)


class AsyncGRPCChannelBackend(_GRPCConfig, AsyncClientBackend["grpc.aio.Channel"]):
    """A pool of connected ``grpc.aio.Channel`` objects, for async code only; each belongs
    to the event loop that opened it. Same options and check as
    :class:`GRPCChannelBackend`."""

    discard_on_error = False

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        super().__init__(alias, options)
        self._parse(options)

    async def create(self) -> grpc.aio.Channel:
        """Open a channel on the running loop and wait until it is connected."""
        timeout = self.connect_timeout
        if timeout <= 0:
            raise TimeoutError("no time left to connect")
        import grpc.aio

        credentials = self._credentials()
        channel = (grpc.aio.secure_channel(self.target, credentials,
                                           options=self.channel_options)
                   if credentials is not None
                   else grpc.aio.insecure_channel(self.target, options=self.channel_options))
        try:
            await self._aconnect(channel, timeout)
        except BaseException:
            await channel.close()
            raise
        return channel

    async def _aconnect(self, channel: grpc.aio.Channel, timeout: float) -> None:
        import asyncio

        import grpc

        try:
            async with asyncio.timeout(timeout):
                state = channel.get_state(try_to_connect=True)
                while state is not grpc.ChannelConnectivity.READY:
                    if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                                 grpc.ChannelConnectivity.SHUTDOWN):
                        raise ConnectionError(f"cannot connect to {self.describe()} "
                                              f"({state.name.lower().replace('_', ' ')})")
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise TimeoutError(f"no connection to {self.describe()} within "
                               f"{timeout:.2f}s") from None

    async def close(self, client: grpc.aio.Channel) -> None:  # type: ignore[override]
        """Close the channel (calls still running on it are cancelled)."""
        await client.close()

    async def check(self, client: grpc.aio.Channel) -> None:  # type: ignore[override]
        """``Health/Check`` for ``health_service`` with a deadline of the time left; without
        one, that the channel is (or gets) connected within it."""
        timeout = max(0.05, time_left(self._connect_timeout))
        if self.health_service is None:
            await self._aconnect(client, timeout)
            return
        stub_class, request = self._health_request()
        response = await stub_class(client).Check(request, timeout=timeout,
                                                  metadata=self.metadata or None)
        self._verdict(response)
