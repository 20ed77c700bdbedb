"""The ``smtp`` backend: one message per recipient over a connection kept for the edition.

``security`` is ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none``
(port 25, for a local relay). Certificates are verified (``ca_file`` adds a private
CA). The password comes from the environment variable the config names. Connections
stay open for the whole edition, shared by the workers, and are reopened when the
server drops them.

One relay (``[delivery.smtp]``) or several (``relays``, ``relays.py``): each message
goes to a relay chosen by weight; one that cannot be reached, or answers the greeting
with 4xx, or refuses the login or the sender, is out for a while and the message goes
to the next at once (nothing was sent through it). Only when no relay takes it is the
message's failure the dispatcher's: transient, or fatal when every relay refused.

Errors are sorted for the dispatcher: 4xx replies and dropped connections are
transient (retried), 5xx replies are permanent for that recipient, and a refused
login, sender or TLS handshake is fatal (no other message could get through). A
connection lost after the whole message went out but before the server's reply is
``UnansweredError``: the server may have queued it.

Options: ``max_per_connection`` (reconnect after that many messages), ``rate``
(messages per second across all workers: ``SharedRate`` counts it in the database for
every instance on it), and DKIM signing with a key the config names
(``dkim.py``: relaxed/relaxed, over-signing From, To, Subject, Date, Message-ID,
Reply-To, List-Id, both ``List-Unsubscribe`` headers as RFC 8058 asks, and the MIME
headers). Messages are built and signed in ``prepare``, before the batch is marked
sending.

Addresses go out in their wire form (the domain in IDNA). A recipient whose message
cannot be built, or whose address needs SMTPUTF8 the relay does not announce, is left
out with the reason; the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from .. import faults
from ..errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientError,
    StoreError,
    TransientDeliveryError,
    UnansweredError,
)
from ..mail.addresses import wire
from ..model import Batch, Composed, Recipient
from ..state import throttle
from .base import Letterhead, Personalizer, Sent
from .dkim import DkimKey
from .message import Encoded, check_edition, encode
from .relays import Pool, Relay

log = logging.getLogger(__name__)


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


#: The bucket (``throttles``) every instance takes ``delivery.smtp.rate``'s tokens from.
RATE_BUCKET = "smtp.rate"


class SharedRate:
    """``delivery.smtp.rate`` for every instance on the database together: tokens are
    reserved from the shared bucket (``state/throttle.py``) a few at a time (a quarter
    second's worth, 1 to 100: one round trip per reservation, not per message) and
    handed out here at the pace ``RateLimit`` keeps."""

    def __init__(
        self,
        engine: sa.Engine,
        per_second: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.rate = per_second
        self.chunk = max(1, min(100, int(per_second / 4)))
        self.clock = clock
        self.sleep = sleep
        self.local = RateLimit(per_second, monotonic, sleep)
        self.left = 0  # tokens reserved and not used yet
        self.reserved = 0  # for logs and tests
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:  # while one worker reserves, the others have no token either
            if self.left == 0:
                try:
                    delay = throttle.take(
                        self.engine, RATE_BUCKET, self.chunk, self.rate, self.clock(), self.chunk
                    )
                except StoreError as exc:
                    raise TransientDeliveryError(
                        f"cannot count delivery.smtp.rate in the database: {exc}"
                    ) from exc
                self.reserved += self.chunk
                if delay > 0:
                    self.sleep(delay)
                self.left = self.chunk
            self.left -= 1
        self.local.wait()


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
    #: Several relays (``[[delivery.smtp.relays]]``); empty: ``host``/``port`` is the one.
    relays: tuple[Relay, ...] = ()

    @property
    def all_relays(self) -> tuple[Relay, ...]:
        """The relays mail goes through: ``relays``, or the one ``host`` names."""
        if self.relays:
            return self.relays
        one = Relay(self.host, self.port, self.security, self.username, self.password)
        return (replace(one, ca_file=self.ca_file),)


class Limit(Protocol):
    def wait(self) -> None:
        """Return when the next message may go."""
        ...


class SmtpBackend:
    name = "smtp"
    batch_size = 1

    def __init__(
        self,
        settings: SmtpSettings,
        letterhead: Letterhead,
        personalizer: Personalizer,
        *,
        limit: Limit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.letterhead = letterhead
        self.personalizer = personalizer
        self.connections_opened = 0  # for operators' logs and for tests
        if limit is None and settings.rate > 0:
            limit = RateLimit(settings.rate)
        self.limit = limit
        self.pool = Pool(settings.all_relays, clock)
        self._lock = threading.Lock()

    def probe(self) -> str:
        return "; ".join(self._probe(relay) for relay in self.settings.all_relays)

    def _probe(self, relay: Relay) -> str:
        conn = self.connect(relay)  # raises with the reason: refused, TLS, login...
        if self.settings.smtputf8 and not conn.has_extn("smtputf8"):
            conn.close()
            raise PermanentDeliveryError(
                f"{relay.name} does not announce SMTPUTF8, but delivery.smtp.smtputf8 is "
                "true: addresses with letters outside ASCII before the @ would be refused; set "
                "it to false, or use a relay that supports SMTPUTF8",
                fatal=True,
            )
        try:
            conn.noop()
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
        login = f", logged in as {relay.username!r}" if relay.username else ""
        return f"{relay.name} answered ({relay.security}{login}); nothing was sent"

    def open(self, composed: Composed) -> SmtpSender:
        check_edition(composed, self.letterhead, self.personalizer)
        self.pool.enter()
        return SmtpSender(self, composed)

    def connect(self, relay: Relay | None = None) -> _SMTP | _SMTPS:
        relay = relay or self.settings.all_relays[0]
        where = relay.name
        timeout = self.settings.timeout
        try:
            context = ssl.create_default_context(
                cafile=str(relay.ca_file) if relay.ca_file else None
            )
            conn: _SMTP | _SMTPS
            if relay.security == "tls":
                conn = _SMTPS(relay.host, relay.port, timeout=timeout, context=context)
            else:
                conn = _SMTP(relay.host, relay.port, timeout=timeout)
            try:
                _greet(conn, relay, context)
            except BaseException:
                conn.close()  # refused, or TLS failed: the socket is closed, not left open
                raise
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"{where} refused the login for {relay.username!r}: {_reply(exc)}", fatal=True
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                f"{where}: the server's TLS certificate is not trusted ({exc.verify_message}); "
                "for a private CA set delivery.smtp.ca_file (or the relay's ca_file)",
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


def _greet(conn: _SMTP | _SMTPS, relay: Relay, context: ssl.SSLContext) -> None:
    """EHLO, STARTTLS if configured (refused where the server does not offer it), and
    the login if there is a username."""
    conn.ehlo()
    if relay.security == "starttls":
        if not conn.has_extn("starttls"):
            raise PermanentDeliveryError(
                f"{relay.name} does not offer STARTTLS: set delivery.smtp.security to "
                '"tls" (implicit TLS) or "none" (a trusted local relay)',
                fatal=True,
            )
        conn.starttls(context=context)
        conn.ehlo()
    if relay.username:
        conn.login(relay.username, relay.password or "")


def _none_left(failures: Mapping[str, DeliveryError], pool: Pool) -> DeliveryError:
    """The error when no relay took a message (``failures``: the relays tried for it, and
    why). One relay: its failure as it was. Several: fatal only when every relay refused
    it for good just now (the login, the sender, TLS: as with one); otherwise a passing
    failure, naming each relay and why."""
    errors = list(failures.values())
    if len(pool.states) == 1 and errors:
        return errors[0]
    resting = [f"{n} is out for {left:.0f}s" for n, left in pool.out().items() if n not in failures]
    said = "; ".join([*(str(e) for e in errors), *resting])
    everyone = len(errors) == len(pool.states)
    if everyone and all(isinstance(e, PermanentDeliveryError) for e in errors):
        fatal = all(isinstance(e, PermanentDeliveryError) and e.fatal for e in errors)
        return PermanentDeliveryError(f"every relay refused: {said}", fatal=fatal)
    return TransientDeliveryError(f"no relay could take the message: {said}")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch's messages, and the recipients left out of it, with why. ``relays``
    gathers, over the attempts, the relays that answered for a message of the batch."""

    messages: list[tuple[Recipient, Encoded]]
    rejected: Mapping[int, str]
    relays: list[str] = field(default_factory=list)

    @property
    def relay(self) -> str | None:
        """What the ledger records (``batches.relay``): "host:port", or several joined
        by commas when the batch went through more than one."""
        return ",".join(self.relays) or None

    def through(self, relay: Relay) -> None:
        if relay.name not in self.relays:
            self.relays.append(relay.name)


class _Refused(Exception):
    """The relay refused the sender (5xx): nothing was sent; another relay may take it."""

    def __init__(self, error: PermanentDeliveryError) -> None:
        self.error = error


class _Stale(Exception):
    """The connection was lost before the message went out: nothing was sent."""

    def __init__(self, error: TransientDeliveryError) -> None:
        self.error = error


class SmtpSender:
    def __init__(self, backend: SmtpBackend, composed: Composed) -> None:
        self.backend = backend
        self.composed = composed
        self.closed = False

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
        rejected: dict[int, str] = dict(prepared.rejected)
        queue_id = None
        for recipient, message in prepared.messages:
            if self.backend.limit is not None:
                self.backend.limit.wait()
            got, why = self._one(prepared, recipient, message)
            queue_id = got or queue_id
            if why is not None:
                rejected[recipient.subscriber_id] = why
        if rejected and len(rejected) == len(prepared.messages) + len(prepared.rejected):
            raise PermanentDeliveryError("; ".join(rejected.values()))
        return Sent(provider_id=queue_id, rejected=rejected)

    def _one(
        self, prepared: Prepared, recipient: Recipient, message: Encoded
    ) -> tuple[str | None, str | None]:
        """One message through the first relay that takes it: (queue id, why the
        recipient was refused). A relay that cannot be reached, or refuses the sender,
        is out for a while and the next one is asked; nothing went out through it."""
        pool = self.backend.pool
        failures: dict[str, DeliveryError] = {}  # the relays that could not take it, and why
        stale_retry = True  # an idle connection the server closed: one fresh try
        while (lease := pool.take(failures)) is not None:
            conn, kept = lease.conn, None
            try:
                if conn is None:
                    conn = self.backend.connect(lease.relay)
                    pool.worked(lease.relay)
                result = _send(conn, lease.relay, recipient, message, self.backend)
                kept = conn  # a refused recipient leaves it usable (smtplib sent RSET)
                prepared.through(lease.relay)
                return result
            except _Stale as exc:
                if lease.conn is None or not stale_retry:
                    raise exc.error from exc.error.__cause__
                stale_retry = False
            except (TransientDeliveryError, PermanentDeliveryError, _Refused) as exc:
                error = exc.error if isinstance(exc, _Refused) else exc
                if conn is not None and not isinstance(exc, _Refused):
                    prepared.through(lease.relay)  # it answered, or took the message
                    raise
                failures[lease.relay.name] = error  # nothing went out through it
                wait = pool.failed(lease.relay)
                log.warning("%s; out for %.0fs, the next relay is asked", error, wait)
            finally:
                if conn is not None and kept is None:
                    _drop(conn)  # closing twice is harmless
                pool.give_back(lease, self._keep(kept))
        raise _none_left(failures, pool)

    def _keep(self, conn: _SMTP | _SMTPS | None) -> _SMTP | _SMTPS | None:
        """``conn`` if it may take the next message; else None, closed politely."""
        limit = self.backend.settings.max_per_connection
        if conn is not None and 0 < limit <= conn.messages:
            _quit(conn)  # a polite QUIT, then a fresh connection for the next message
            return None
        return conn

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for conn in self.backend.pool.leave():
                _quit(conn)


def _send(
    conn: _SMTP | _SMTPS, relay: Relay, recipient: Recipient, message: Encoded, backend: SmtpBackend
) -> tuple[str | None, str | None]:
    """One message over ``conn``: (queue id, why the recipient was refused). Raises
    ``_Refused`` (the sender refused with 5xx), ``_Stale`` (lost before the message went
    out) or the delivery error; the connection is closed unless the recipient was refused."""
    where = relay.name
    sender = wire(_bare(backend.letterhead.sender))
    if message.smtputf8 and not conn.has_extn("smtputf8"):
        return None, (
            f"{recipient.email}: {where} does not announce SMTPUTF8, which an address "
            "with letters outside ASCII before the @ needs: not sent"
        )
    conn.body_sent = False
    try:
        options = ["SMTPUTF8"] if message.smtputf8 else []
        refused = conn.sendmail(sender, [message.to], message.data, mail_options=options)
        conn.messages += 1
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        if 400 <= code < 500:
            raise TransientDeliveryError(
                f"{where} deferred {recipient.email}: {code} {_text(reply)}"
            ) from exc
        return None, f"{code} {_text(reply)}"
    except smtplib.SMTPSenderRefused as exc:
        _drop(conn)
        error = _classify(exc, where)
        if isinstance(error, PermanentDeliveryError):
            error.fatal = True  # the sender address is refused for every message
            error.__cause__ = exc
            raise _Refused(error) from exc
        raise error from exc
    except smtplib.SMTPResponseException as exc:
        _drop(conn)
        raise _classify(exc, where) from exc
    except (OSError, smtplib.SMTPException) as exc:
        _drop(conn)
        if conn.body_sent:
            raise UnansweredError(
                f"{where}: connection lost after the message to {recipient.email} "
                f"went out, before the server's reply ({_why(exc)}): it may have "
                "been queued"
            ) from exc
        lost = TransientDeliveryError(f"{where}: connection lost: {_why(exc)}")
        lost.__cause__ = exc
        raise _Stale(lost) from exc
    for addr, (code, reply) in refused.items():
        return _queue_id(conn), f"{addr}: {code} {_text(reply)}"
    return _queue_id(conn), None


def _drop(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        _drop(conn)


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
    messages: int = 0  # sent over this connection (delivery.smtp.max_per_connection)
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
