"""The ``smtp`` backend: one message per recipient over a connection kept for the edition.

``security`` is ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none``
(port 25, for a local relay). Certificates are verified (``ca_file`` adds a private
CA). The password comes from the environment variable the config names. Each worker
keeps one connection for the whole edition, and reconnects when the server drops it.

Errors are sorted for the dispatcher: 4xx replies and dropped connections are
transient (retried), 5xx replies are permanent for that recipient, and a refused
login, sender or TLS handshake is fatal (no other message could get through).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from ..model import Batch, Composed
from .base import Letterhead, Personalizer, Sent
from .message import build


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    ca_file: Path | None = None


class SmtpBackend:
    name = "smtp"
    batch_size = 1

    def __init__(
        self, settings: SmtpSettings, letterhead: Letterhead, personalizer: Personalizer
    ) -> None:
        self.settings = settings
        self.letterhead = letterhead
        self.personalizer = personalizer
        self.connections_opened = 0  # for operators' logs and for tests

    def open(self, composed: Composed) -> SmtpSender:
        return SmtpSender(self, composed)

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            conn: smtplib.SMTP
            if s.security == "tls":
                conn = _SMTPS(s.host, s.port, timeout=s.timeout, context=context)
            else:
                conn = _SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise PermanentDeliveryError(
                        f"{where} does not offer STARTTLS: set delivery.smtp.security to "
                        '"tls" (implicit TLS) or "none" (a trusted local relay)',
                        fatal=True,
                    )
                conn.starttls(context=context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"{where} refused the login for {s.username!r}: {_reply(exc)}", fatal=True
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                f"{where}: the server's TLS certificate is not trusted ({exc.verify_message}); "
                "for a private CA set delivery.smtp.ca_file",
                fatal=True,
            ) from exc
        except ssl.SSLError as exc:
            raise PermanentDeliveryError(f"{where}: TLS failed: {exc}", fatal=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc, where) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientDeliveryError(f"cannot connect to {where}: {_why(exc)}") from exc
        self.connections_opened += 1
        return conn


class SmtpSender:
    def __init__(self, backend: SmtpBackend, composed: Composed) -> None:
        self.backend = backend
        self.composed = composed
        self.conn: smtplib.SMTP | None = None

    def send(self, batch: Batch) -> Sent:
        backend = self.backend
        where = f"{backend.settings.host}:{backend.settings.port}"
        rejected: dict[int, str] = {}
        queue_id = None
        for recipient in batch.recipients:
            values = backend.personalizer.values(recipient)
            message = build(self.composed, recipient, values, backend.letterhead)
            if self.conn is None:
                self.conn = backend.connect()
            try:
                refused = self.conn.send_message(message)
                queue_id = _queue_id(self.conn)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                if 400 <= code < 500:
                    raise TransientDeliveryError(
                        f"{where} deferred {recipient.email}: {code} {_text(reply)}"
                    ) from exc
                rejected[recipient.subscriber_id] = f"{code} {_text(reply)}"
                continue
            except smtplib.SMTPSenderRefused as exc:
                self._drop()
                error = _classify(exc, where)
                if isinstance(error, PermanentDeliveryError):
                    error.fatal = True  # the sender address is refused for every message
                raise error from exc
            except smtplib.SMTPResponseException as exc:
                self._drop()
                raise _classify(exc, where) from exc
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                raise TransientDeliveryError(f"{where}: connection lost: {_why(exc)}") from exc
            for addr, (code, reply) in refused.items():
                rejected[recipient.subscriber_id] = f"{addr}: {code} {_text(reply)}"
        if rejected and len(rejected) == len(batch.recipients):
            raise PermanentDeliveryError("; ".join(rejected.values()))
        return Sent(provider_id=queue_id, rejected=rejected)

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            finally:
                self._drop()


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _classify(exc: smtplib.SMTPResponseException, where: str) -> DeliveryError:
    text = f"{where} answered {_reply(exc)}"
    if 400 <= exc.smtp_code < 500 or exc.smtp_code == -1:
        return TransientDeliveryError(text)
    return PermanentDeliveryError(text)


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out (delivery.smtp.timeout)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP that remembers the reply to DATA (it holds the server's queue id)."""

    last_data_reply: bytes = b""

    def data(self, msg: Any) -> tuple[int, bytes]:
        code, reply = super().data(msg)
        self.last_data_reply = reply
        return code, reply


class _SMTPS(smtplib.SMTP_SSL):
    last_data_reply: bytes = b""

    def data(self, msg: Any) -> tuple[int, bytes]:
        code, reply = super().data(msg)
        self.last_data_reply = reply
        return code, reply


def _queue_id(conn: smtplib.SMTP) -> str | None:
    """The id the server gave the message ("250 2.0.0 Ok: queued as ABC123"), if any."""
    reply = _text(getattr(conn, "last_data_reply", b""))
    return reply.rsplit(" ", 1)[-1] if "queued as" in reply.lower() else None
