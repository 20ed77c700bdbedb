"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives.

Options: STARTTLS or implicit TLS with a self-signed certificate made on the spot,
AUTH with one user, SMTPUTF8 announced or not, and scripted replies (e.g. a 451 for the
next message).
"""

from __future__ import annotations

import datetime
import email
import email.policy
import gc
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digest test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # scripted replies to DATA, consumed in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            self.received.append(
                Received(
                    session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.content
                )
            )
        return "250 2.0.0 Ok: queued as Q" + str(len(self.received))


class SmtpServer:
    def __init__(
        self,
        tmp: Path,
        *,
        security: str = "none",
        user: tuple[str, str] | None = None,
        smtputf8: bool = False,
    ):
        self.handler = Handler()
        self.port = free_port()
        self.security = security
        self.cert: Path | None = None
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if security in ("starttls", "tls"):
            self.cert, key = self_signed(tmp)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            if security == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                kwargs.update(ssl_context=context)
        if user is not None:

            def authenticate(
                server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
            ) -> AuthResult:
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (auth_data.login.decode(), auth_data.password.decode()) == user
                )
                return AuthResult(success=ok, handled=False)

            kwargs.update(
                authenticator=authenticate, auth_required=True, auth_require_tls=security != "none"
            )
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="127.0.0.1",
            **kwargs,
        )

    def __enter__(self) -> SmtpServer:
        if self.security == "tls":
            # Controller's readiness probe speaks plain SMTP; give it a TLS-aware one.
            self.controller._trigger_server = self._trigger_tls  # type: ignore[method-assign]
        self.controller.start()
        return self

    def _trigger_tls(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cert))
        with (
            socket.create_connection(("127.0.0.1", self.port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.recv(1024)

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
        # aiosmtpd leaves the server side of a connection a client dropped to the garbage
        # collector; collect it now, inside the test that caused it.
        gc.collect()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def connections(self) -> int:
        return len({r.peer for r in self.received})
