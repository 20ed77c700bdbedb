"""The ``smtp`` backend: one message per recipient over a connection kept for the edition.

``security`` is ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none``
(port 25, for a local relay). Certificates are verified (``ca_file`` adds a private
CA). The password comes from the environment variable the config names. Each worker
keeps one connection for the whole edition, and reconnects when the server drops it.

Errors are sorted for the dispatcher: 4xx replies and dropped connections are
transient (retried), 5xx replies are permanent for that recipient, and a refused
login, sender or TLS handshake is fatal (no other message could get through). A
connection lost after the whole message went out but before the server's reply is
``UnansweredError``: the server may have queued it.

Options: ``max_per_connection`` (reconnect after that many messages), ``rate``
(messages per second across all workers), and DKIM signing with a key the config names
(``dkim.py``: relaxed/relaxed, over-signing From, To, Subject, Date, Message-ID,
Reply-To, List-Id, both ``List-Unsubscribe`` headers as RFC 8058 asks, and the MIME
headers). Messages are built and signed in ``prepare``, before the batch is marked
sending.

Addresses go out in their wire form (the domain in IDNA). A recipient whose message
cannot be built, or whose address needs SMTPUTF8 the relay does not announce, is left
out with the reason; the others go on.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import faults
from ..errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientError,
    TransientDeliveryError,
    UnansweredError,
)
from ..mail.addresses import wire
from ..model import Batch, Composed, Recipient
from .base import Letterhead, Personalizer, Sent
from .dkim import DkimKey
from .message import Encoded, check_edition, encode


class RateLimit:
    """At most ``per_second`` messages per second, shared by every worker."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second
        self.clock = clock
        self.sleep = sleep
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = self.clock()
            at = max(self.next, now)
            self.next = at + self.interval
        if at > now:
            self.sleep(at - now)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # a secret: never in a repr
    timeout: float = 30.0
    ca_file: Path | None = None
    max_per_connection: int = 0  # 0: no limit
    rate: float = 0.0  # messages per second over all workers; 0: no limit
    dkim: DkimKey | None = None
    #: The relay takes addresses with letters outside ASCII before the @ (RFC 6531).
    smtputf8: bool = False


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
        self.limit = RateLimit(settings.rate) if settings.rate > 0 else None
        self._lock = threading.Lock()

    def probe(self) -> str:
        s = self.settings
        conn = self.connect()  # raises with the reason: refused, TLS, login...
        if s.smtputf8 and not conn.has_extn("smtputf8"):
            conn.close()
            raise PermanentDeliveryError(
                f"{s.host}:{s.port} does not announce SMTPUTF8, but delivery.smtp.smtputf8 is "
                "true: addresses with letters outside ASCII before the @ would be refused; set "
                "it to false, or use a relay that supports SMTPUTF8",
                fatal=True,
            )
        try:
            conn.noop()
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
        login = f", logged in as {s.username!r}" if s.username else ""
        return f"{s.host}:{s.port} answered ({s.security}{login}); nothing was sent"

    def open(self, composed: Composed) -> SmtpSender:
        check_edition(composed, self.letterhead, self.personalizer)
        return SmtpSender(self, composed)

    def connect(self) -> _SMTP | _SMTPS:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            conn: _SMTP | _SMTPS
            if s.security == "tls":
                conn = _SMTPS(s.host, s.port, timeout=s.timeout, context=context)
            else:
                conn = _SMTP(s.host, s.port, timeout=s.timeout)
            try:
                self._greet(conn, context)
            except BaseException:
                conn.close()  # refused, or TLS failed: the socket is closed, not left open
                raise
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
        with self._lock:
            self.connections_opened += 1
        return conn

    def _greet(self, conn: _SMTP | _SMTPS, context: ssl.SSLContext) -> None:
        """EHLO, STARTTLS if configured (refused where the server does not offer it), and
        the login if there is a username."""
        s = self.settings
        conn.ehlo()
        if s.security == "starttls":
            if not conn.has_extn("starttls"):
                raise PermanentDeliveryError(
                    f"{s.host}:{s.port} does not offer STARTTLS: set delivery.smtp.security to "
                    '"tls" (implicit TLS) or "none" (a trusted local relay)',
                    fatal=True,
                )
            conn.starttls(context=context)
            conn.ehlo()
        if s.username:
            conn.login(s.username, s.password or "")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch's messages, and the recipients left out of it, with why."""

    messages: list[tuple[Recipient, Encoded]]
    rejected: Mapping[int, str]


class SmtpSender:
    def __init__(self, backend: SmtpBackend, composed: Composed) -> None:
        self.backend = backend
        self.composed = composed
        self.conn: _SMTP | _SMTPS | None = None
        self.on_connection = 0  # messages sent over the current connection

    def prepare(self, batch: Batch) -> Prepared:
        """Every message of the batch, built (and signed) with CRLF line ends; a recipient
        whose message cannot be built is left out, with the reason."""
        backend = self.backend
        out = []
        rejected: dict[int, str] = {}
        for recipient in batch.recipients:
            values = backend.personalizer.values(recipient)
            try:
                message = encode(self.composed, recipient, values, backend.letterhead, "\r\n")
            except RecipientError as exc:
                rejected[recipient.subscriber_id] = str(exc)
                continue
            if backend.settings.dkim is not None:
                signed = backend.settings.dkim.sign(message.data, int(time.time()))
                message = replace(message, data=signed)
            out.append((recipient, message))
        return Prepared(out, rejected)

    def send(self, batch: Batch) -> Sent:
        return self.deliver(self.prepare(batch))

    def deliver(self, prepared: Prepared) -> Sent:
        backend = self.backend
        settings = backend.settings
        where = f"{settings.host}:{settings.port}"
        sender = wire(_bare(backend.letterhead.sender))
        rejected: dict[int, str] = dict(prepared.rejected)
        queue_id = None
        for recipient, message in prepared.messages:
            if self.conn is not None and 0 < settings.max_per_connection <= self.on_connection:
                self.close()  # a polite QUIT, then a fresh connection
            if self.conn is None:
                self.conn = backend.connect()
                self.on_connection = 0
            if backend.limit is not None:
                backend.limit.wait()
            conn = self.conn
            assert conn is not None
            if message.smtputf8 and not conn.has_extn("smtputf8"):
                rejected[recipient.subscriber_id] = (
                    f"{recipient.email}: {where} does not announce SMTPUTF8, which an address "
                    "with letters outside ASCII before the @ needs: not sent"
                )
                continue
            conn.body_sent = False
            try:
                options = ["SMTPUTF8"] if message.smtputf8 else []
                refused = conn.sendmail(sender, [message.to], message.data, mail_options=options)
                self.on_connection += 1
                queue_id = _queue_id(conn)
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
                if conn.body_sent:
                    raise UnansweredError(
                        f"{where}: connection lost after the message to {recipient.email} "
                        f"went out, before the server's reply ({_why(exc)}): it may have "
                        "been queued"
                    ) from exc
                raise TransientDeliveryError(f"{where}: connection lost: {_why(exc)}") from exc
            for addr, (code, reply) in refused.items():
                rejected[recipient.subscriber_id] = f"{addr}: {code} {_text(reply)}"
        if rejected and len(rejected) == len(prepared.messages) + len(prepared.rejected):
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


class _Tracking:
    """Remembers the reply to DATA (it holds the server's queue id), and whether the
    whole message went out (the final ``.``): a connection lost after that point leaves
    the message's fate unknown."""

    last_data_reply: bytes = b""
    body_sent: bool = False
    _in_data: bool = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self._in_data = True
        try:
            code, reply = super().data(msg)  # type: ignore[misc]
        finally:
            self._in_data = False
        self.last_data_reply = reply
        return code, reply

    def send(self, s: Any) -> None:
        super().send(s)  # type: ignore[misc]
        if self._in_data and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.body_sent = True
            faults.point("smtp-data-sent")  # crash tests: the server has it, no reply yet


class _SMTP(_Tracking, smtplib.SMTP):
    pass


class _SMTPS(_Tracking, smtplib.SMTP_SSL):
    pass


def _bare(mailbox: str) -> str:
    from email.utils import parseaddr

    return parseaddr(mailbox)[1]


def _queue_id(conn: smtplib.SMTP) -> str | None:
    """The id the server gave the message ("250 2.0.0 Ok: queued as ABC123"), if any."""
    reply = _text(getattr(conn, "last_data_reply", b""))
    return reply.rsplit(" ", 1)[-1] if "queued as" in reply.lower() else None
