"""TCPBackend against local echo servers: plain, TLS (verification on and off, wrong host
name, client certificates), keepalive, connect timeout and peer-closed detection."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from devservers.proxy import FaultProxy
from devservers.tls import Certs, EchoServer
from pooled_clients import ClientCreationError, pools
from pooled_clients.backends.tcp import PeerClosedError, TCPBackend

TCP = "pooled_clients.backends.tcp.TCPBackend"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def tls_echo(tls_certs: Certs) -> Iterator[EchoServer]:
    with EchoServer(tls_certs.server_context()) as server:
        yield server


@pytest.fixture
def pool_for(pooled_clients_settings: Callable[[str, dict[str, Any]], None]
             ) -> Iterator[Callable[..., Any]]:
    """Configure pool "tcp" from OPTIONS (plus pool keys) and return it."""

    def make(options: dict[str, Any], **keys: Any) -> Any:
        pooled_clients_settings("tcp", {"BACKEND": TCP, "OPTIONS": options,
                                        "CONNECT_RETRIES": 0, "TIMEOUT": 3.0, **keys})
        return pools["tcp"]

    try:
        yield make
    finally:
        pools.close_all(timeout=1.0)


def roundtrip(sock: socket.socket, payload: bytes = b"hello") -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(len(payload) - len(received))
        assert chunk, "the server closed the connection"
        received += chunk
    return received


def wait_readable(sock: socket.socket, timeout: float = 2.0) -> bool:
    readable, _, _ = select.select([sock], [], [], timeout)
    return bool(readable)


# ------------------------------------------------------------------ plain TCP


def test_plain_echo_through_the_pool_reuses_one_socket(pool_for: Any, echo: EchoServer) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": echo.port})
    for _ in range(3):
        with pool.connection() as sock:
            assert not isinstance(sock, ssl.SSLSocket)
            assert roundtrip(sock) == b"hello"
    assert echo.connections_seen == 1
    assert pool.stats().target == f"tcp://127.0.0.1:{echo.port}"


def test_keepalive_is_on_by_default_and_can_be_turned_off(echo: EchoServer) -> None:
    on = TCPBackend("t", {"host": "127.0.0.1", "port": echo.port})
    off = TCPBackend("t", {"host": "127.0.0.1", "port": echo.port, "keepalive": False,
                           "timeout": 2.5})
    with on.create() as a, off.create() as b:
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert a.gettimeout() is None
        assert b.gettimeout() == 2.5


def test_peer_closed_plain_socket_is_detected_without_blocking(echo: EchoServer) -> None:
    backend = TCPBackend("t", {"host": "127.0.0.1", "port": echo.port})
    sock = backend.create()
    try:
        backend.check(sock)  # idle and healthy: passes at once
        assert roundtrip(sock) == b"hello"  # the server has accepted it
        backend.check(sock)
        echo.close_all_clients()
        assert wait_readable(sock)
        start = time.monotonic()
        with pytest.raises(PeerClosedError, match="closed"):
            backend.check(sock)
        assert time.monotonic() - start < 0.5
        assert sock.gettimeout() is None  # the check restored the blocking mode
    finally:
        sock.close()


def test_a_dead_idle_socket_is_replaced_on_checkout(pool_for: Any, echo: EchoServer) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": echo.port}, CHECK="always")
    with pool.connection() as sock:
        assert roundtrip(sock) == b"hello"  # the server has accepted it
        first = sock
    echo.close_all_clients()
    assert wait_readable(first)
    with pool.connection() as sock:
        assert sock is not first
        assert roundtrip(sock) == b"hello"
    stats = pool.stats()
    assert stats.check_failures_total == 1
    assert stats.created_total == 2


def test_a_socket_returned_with_unread_bytes_is_discarded(pool_for: Any,
                                                          echo: EchoServer) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": echo.port})
    with pool.connection() as sock:
        sock.sendall(b"reply nobody reads")
        assert wait_readable(sock)
        first = sock
    assert first.fileno() == -1
    with pool.connection() as sock:
        assert roundtrip(sock, b"fresh") == b"fresh"
    assert pool.stats().closed_total == 1


def test_connection_refused_is_a_client_creation_error(pool_for: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound but not listening: refused
        pool = pool_for({"host": "127.0.0.1", "port": port})
        with pytest.raises(ClientCreationError, match=f"tcp://127.0.0.1:{port}") as info:
            pool.acquire(timeout=2.0)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


# ------------------------------------------------------------------ TLS


def test_tls_with_verification_against_the_test_ca(pool_for: Any, tls_echo: EchoServer,
                                                   tls_certs: Certs) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": tls_echo.port,
                     "tls": {"cafile": str(tls_certs.ca_cert)}})
    with pool.connection() as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getpeercert()["subject"]  # verified: the certificate was parsed
        assert roundtrip(sock) == b"hello"
    assert pool.stats().target == f"tls://127.0.0.1:{tls_echo.port}"


def test_tls_verification_rejects_an_unknown_ca(pool_for: Any, tls_echo: EchoServer) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": tls_echo.port, "tls": True})
    with pytest.raises(ClientCreationError, match="certificate verify failed") as info:
        pool.acquire(timeout=2.0)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_tls_without_verification_accepts_any_certificate(pool_for: Any,
                                                          tls_echo: EchoServer) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": tls_echo.port,
                     "tls": {"verify": False, "server_hostname": "anything.invalid"}})
    with pool.connection() as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert roundtrip(sock) == b"hello"


def test_wrong_host_name_is_refused_with_a_clear_error(pool_for: Any, tls_echo: EchoServer,
                                                       tls_certs: Certs) -> None:
    pool = pool_for({"host": "127.0.0.1", "port": tls_echo.port,
                     "tls": {"cafile": str(tls_certs.ca_cert),
                             "server_hostname": "wrong.example"}})
    start = time.monotonic()
    with pytest.raises(ClientCreationError) as info:
        pool.acquire(timeout=2.0)
    assert time.monotonic() - start < 1.5  # refused at once, not timed out
    message = str(info.value)
    assert "Hostname mismatch" in message
    assert "wrong.example" in message
    assert f"tls://127.0.0.1:{tls_echo.port}" in message
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_client_certificate_is_presented(pool_for: Any, tls_certs: Certs) -> None:
    with EchoServer(tls_certs.server_context(require_client_cert=True)) as server:
        pool = pool_for({"host": "localhost", "port": server.port,
                         "tls": {"cafile": str(tls_certs.ca_cert),
                                 "certfile": str(tls_certs.client_cert),
                                 "keyfile": str(tls_certs.client_key)}})
        with pool.connection() as sock:
            assert roundtrip(sock) == b"hello"


def test_tls_idle_socket_with_session_tickets_passes_its_check(tls_echo: EchoServer,
                                                               tls_certs: Certs) -> None:
    backend = TCPBackend("t", {"host": "127.0.0.1", "port": tls_echo.port,
                               "tls": {"cafile": str(tls_certs.ca_cert)}})
    sock = backend.create()
    try:
        assert isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3"
        # TLS 1.3 session tickets arrive after the handshake: the raw socket is readable
        # although no application data is there. That must not count as "closed".
        assert wait_readable(sock)
        backend.check(sock)
        backend.check(sock)
        assert roundtrip(sock) == b"hello"
        backend.check(sock)
    finally:
        sock.close()


def test_peer_closed_tls_socket_is_detected(tls_echo: EchoServer, tls_certs: Certs) -> None:
    backend = TCPBackend("t", {"host": "127.0.0.1", "port": tls_echo.port,
                               "tls": {"cafile": str(tls_certs.ca_cert)}})
    sock = backend.create()
    try:
        assert roundtrip(sock) == b"hello"
        tls_echo.close_all_clients()
        assert wait_readable(sock)
        start = time.monotonic()
        with pytest.raises(PeerClosedError):
            backend.check(sock)
        assert time.monotonic() - start < 0.5
        assert not backend.reset(sock)
    finally:
        sock.close()


def test_unread_tls_data_fails_the_check(tls_echo: EchoServer, tls_certs: Certs) -> None:
    backend = TCPBackend("t", {"host": "127.0.0.1", "port": tls_echo.port,
                               "tls": {"cafile": str(tls_certs.ca_cert)}})
    sock = backend.create()
    try:
        sock.sendall(b"unread")
        deadline = time.monotonic() + 2
        with pytest.raises(PeerClosedError, match="unread"):
            while time.monotonic() < deadline:  # until the echo arrives
                backend.check(sock)
                wait_readable(sock, 0.05)
    finally:
        sock.close()


def test_a_stalled_tls_handshake_is_bounded_by_connect_timeout(
        pool_for: Any, tls_echo: EchoServer, tls_certs: Certs,
        fault_proxy_factory: Callable[[str, int], FaultProxy]) -> None:
    proxy = fault_proxy_factory(tls_echo.host, tls_echo.port)
    proxy.pause()  # accepts the TCP connection, forwards nothing: the handshake stalls
    pool = pool_for({"host": "127.0.0.1", "port": proxy.port,
                     "tls": {"cafile": str(tls_certs.ca_cert)}}, CONNECT_TIMEOUT=0.3)
    start = time.monotonic()
    with pytest.raises(ClientCreationError) as info:
        pool.acquire(timeout=3.0)
    assert time.monotonic() - start < 2.0
    assert isinstance(info.value.__cause__, TimeoutError)


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(("options", "fragment"), [
    ({"port": 1}, "'host' is required"),
    ({"host": "h"}, "'port' is None"),
    ({"host": "h", "port": 0}, "'port' is 0"),
    ({"host": "h", "port": "80"}, "'port' is '80'"),
    ({"host": "h", "port": 1, "tls": "yes"}, "'tls' is 'yes'"),
    ({"host": "h", "port": 1, "tls": {"ca": "x"}}, "unknown key 'ca'"),
    ({"host": "h", "port": 1, "tls": {"verify": "no"}}, "'verify'] is 'no'"),
    ({"host": "h", "port": 1, "tls": {"cafile": 3}}, "'cafile'] is 3"),
    ({"host": "h", "port": 1, "tls": {"keyfile": "k.pem"}}, "'keyfile' without 'certfile'"),
    ({"host": "h", "port": 1, "keepalive": 1}, "'keepalive' is 1"),
    ({"host": "h", "port": 1, "timeout": 0}, "'timeout' is 0"),
    ({"host": "h", "port": 1, "hots": "h"}, "unknown option 'hots'"),
])
def test_bad_options_are_system_check_errors(options: dict[str, Any], fragment: str) -> None:
    assert any(fragment in problem for problem in TCPBackend.check_options(options))
    with override_settings(POOLED_CLIENTS={"tcp": {"BACKEND": TCP, "OPTIONS": options}}):
        messages = run_checks(tags=["pooled_clients"])
    assert any(m.id == "pooled_clients.E011" and fragment in m.msg for m in messages), messages


def test_good_options_pass() -> None:
    assert TCPBackend.check_options({
        "host": "db.internal", "port": 6379, "keepalive": False, "timeout": 1.5,
        "tls": {"cafile": "/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem",
                "server_hostname": "db", "verify": True},
    }) == []
    assert TCPBackend("t", {"host": "::1", "port": 1, "tls": True}).describe() == "tls://[::1]:1"


def test_sockets_with_file_descriptors_above_1024_are_reset_and_checked(
        pool_for: Any, echo: EchoServer, tmp_path: Any) -> None:
    """A busy worker has more than 1024 files open: the peer-closed probe must not use
    select(), which refuses such descriptors (reset would then fail on every release)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    files = []
    try:
        for number in range(1100):
            files.append(open(tmp_path / f"f{number}", "w"))  # noqa: SIM115
        pool = pool_for({"host": "127.0.0.1", "port": echo.port}, CHECK="always")
        with pool.connection() as sock:
            assert sock.fileno() >= 1024
            assert roundtrip(sock) == b"hello"
            first = sock
        with pool.connection() as sock:
            assert sock is first  # reset kept it, and the check passed
            assert roundtrip(sock, b"again") == b"again"
        stats = pool.stats()
        assert (stats.created_total, stats.closed_total, stats.check_failures_total) == (1, 0, 0)
        echo.close_all_clients()
        assert wait_readable_poll(first)
        with pool.connection() as sock:
            assert sock is not first  # the dead one was told apart and replaced
    finally:
        for handle in files:
            handle.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def wait_readable_poll(sock: socket.socket, timeout: float = 2.0) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


_PROMPT_PROBE = """
import sys
from pooled_clients.backends.tcp import TCPBackend
from pooled_clients.core import PoolSettings
from pooled_clients.pool import Pool

host, port, cafile, certfile, keyfile = sys.argv[1:6]
backend = TCPBackend("tls", {"host": host, "port": int(port), "tls": {
    "cafile": cafile, "certfile": certfile, "keyfile": keyfile}})
pool = Pool("tls", backend, PoolSettings(timeout=5.0, connect_retries=0))
try:
    pool.acquire()
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc, flush=True)
"""


def test_an_encrypted_key_without_a_pass_phrase_never_prompts_on_the_terminal(
        tls_certs: Certs, tmp_path: Any) -> None:
    """Inside a terminal (``runserver``), OpenSSL would ask for the pass phrase and the
    creation thread would wait for an answer forever: it must fail with the reason."""
    import os
    import pty
    import sys

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(tls_certs.client_key.read_bytes(), None)
    encrypted = tmp_path / "client-encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass-phrase")))
    with EchoServer(tls_certs.server_context(require_client_cert=True)) as server:
        pid, fd = pty.fork()
        if pid == 0:  # the child has the pseudo-terminal as its controlling terminal
            os.execv(sys.executable, [sys.executable, "-c", _PROMPT_PROBE, "localhost",
                                      str(server.port), str(tls_certs.ca_cert),
                                      str(tls_certs.client_cert), str(encrypted)])
        output = b""
        deadline = time.monotonic() + 20
        try:
            # Read until the child exits (the terminal then reports EOF or EIO).
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(fd, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    output += chunk
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(fd)
        text = output.decode(errors="replace")
        assert "pass phrase" not in text.lower().split("refused")[0], text
        assert "REFUSED ClientCreationError" in text and "keyfile_password" in text, text
        # With the pass phrase given, the client certificate is presented.
        backend = TCPBackend("tls", {"host": "localhost", "port": server.port, "tls": {
            "cafile": str(tls_certs.ca_cert), "certfile": str(tls_certs.client_cert),
            "keyfile": str(encrypted), "keyfile_password": "key-pass-phrase"}})
        sock = backend.create()
        try:
            assert roundtrip(sock) == b"hello"
        finally:
            backend.close(sock)
