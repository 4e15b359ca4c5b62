"""Throw-away certificates and a TLS-capable TCP echo server."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devservers.service import Service


@dataclass(frozen=True)
class Certs:
    """Paths of a CA certificate and of a server and a client certificate it signed (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side context presenting the server certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_cert)
        return ctx

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        """A verifying client-side context trusting only the generated CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if with_client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "django-pooled-clients tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _leaf(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    now: datetime.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_certificates(
    directory: Path, hostnames: Iterable[str] = ("localhost", "127.0.0.1")
) -> Certs:
    """Write a CA, a server certificate (SANs from ``hostnames``) and a client certificate.

    EC P-256 keys keep generation fast; the certificates carry the extensions strict verifiers
    (Python 3.13's VERIFY_X509_STRICT) require.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("devservers test CA"))
        .issuer_name(_name("devservers test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf(
        next(iter(hostnames), "localhost"),
        server_key,
        ca_cert,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        sans,
        now,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _leaf(
        "client", client_key, ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, [], now
    )

    certs = Certs(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pem = serialization.Encoding.PEM
    certs.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    certs.server_cert.write_bytes(server_cert.public_bytes(pem))
    certs.client_cert.write_bytes(client_cert.public_bytes(pem))
    _write_key(certs.server_key, server_key)
    _write_key(certs.client_key, client_key)
    return certs


class EchoServer(Service):
    """A threaded TCP echo server on 127.0.0.1, speaking TLS when given a server context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self.connections_seen = 0
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = True
        self._accept_thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on a free port and serve in daemon threads."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(128)
        listener.settimeout(0.1)  # lets the accept loop notice stop()
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopped = False
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"echo-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop accepting and close every client connection."""
        if self._stopped:
            return
        self._stopped = True
        self.close_all_clients()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2)

    def close_all_clients(self) -> None:
        """Close the server side of every open connection (clients see EOF)."""
        with self._lock:
            clients = list(self._clients)
            self._clients.clear()
        for sock in clients:
            with contextlib.suppress(OSError, ValueError):
                # shutdown() wakes the serving thread blocked in recv(); close() alone would not.
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    @property
    def open_clients(self) -> int:
        """Connections currently open on the server side."""
        with self._lock:
            return len(self._clients)


    def __repr__(self) -> str:
        return f"<EchoServer {self.host}:{self.port} tls={self.tls is not None}>"

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopped:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self.connections_seen += 1
                self._clients.add(sock)
            threading.Thread(
                target=self._serve, args=(sock,), name=f"echo-{self.port}", daemon=True
            ).start()

    def _serve(self, raw: socket.socket) -> None:
        sock = raw
        try:
            if self.tls is not None:
                # Handshake here, not in the accept loop, so a silent client blocks only itself.
                raw.settimeout(10)
                sock = self.tls.wrap_socket(raw, server_side=True)
                sock.settimeout(None)
                with self._lock:
                    if raw in self._clients:
                        self._clients.discard(raw)
                        self._clients.add(sock)
                    else:  # closed by close_all_clients() during the handshake
                        sock.close()
                        return
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(sock)
                self._clients.discard(raw)
            with contextlib.suppress(OSError):
                sock.close()
