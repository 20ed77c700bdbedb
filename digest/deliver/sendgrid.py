"""The ``sendgrid`` backend: up to 1,000 recipients per ``POST /v3/mail/send``.

The edition is rendered once; each recipient is one personalization (so nobody sees
another's address) carrying their personal values as ``substitutions`` (the markers
of ``mail.markers.substitutions``), their own ``List-Unsubscribe`` / ``List-Unsubscribe-Post``
headers, and nothing else. The body is a plain dict, turned into JSON once and posted
on one keep-alive connection per sender (one per worker, ``http.client`` with a
timeout, through the environment's proxy as urllib would go). The official client
opened a new connection for every request (urllib) and cost 7.7 ms more per
1,000-recipient request than the same POST on a kept connection (docs/performance.md);
its helper classes, 4.6 times the JSON's cost.

Errors are sorted for the dispatcher (which retries):

* 429: transient, with the wait ``X-RateLimit-Reset`` or ``Retry-After`` asks for;
* 5xx, 408, refused or broken connections: transient, exponential backoff;
* no answer after the request went out (a timeout, a dropped connection):
  ``UnansweredError`` (transient, but SendGrid may have accepted it; see dispatch);
* 400, 413 (and other 4xx): permanent for the batch, with SendGrid's own words;
* 401, 403, 404, 405, 415: fatal (bad key, unverified sender, wrong URL): no other
  request could succeed, so the edition stops.

Addresses are checked before they reach a request: a malformed one is left out of
its batch and recorded as rejected for that recipient, so one bad address never
makes SendGrid refuse the 999 good ones with it.
"""

from __future__ import annotations

import base64
import html
import http.client
import json
import logging
import re
import select
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import faults
from ..clock import utcnow
from ..errors import (
    AddressError,
    PermanentDeliveryError,
    RefusedError,
    TransientDeliveryError,
    UnansweredError,
)
from ..mail.addresses import wire
from ..mail.headers import header_safe
from ..mail.markers import Marker
from ..model import Batch, Composed
from .base import Letterhead, Personalizer, Sent

MAX_BATCH = 1000
#: Requests for one batch when SendGrid refuses some of its recipients (each round
#: leaves at least one out).
REFUSAL_ROUNDS = 5
log = logging.getLogger(__name__)
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
_ADDRESS = re.compile(rf"{_LOCAL}@(?:{_LABEL}\.)+{_TLD}")
_NAME_BAD = re.compile(r'[;,"]')
_HTML_SPECIAL = re.compile(r"[&<>\"']")
_FATAL = {401, 403, 404, 405, 415}


@dataclass(frozen=True, slots=True)
class SendgridSettings:
    api_key: str = field(repr=False)  # a secret: never in a repr, a log or a traceback
    api_url: str = "https://api.sendgrid.com"
    batch_size: int = MAX_BATCH
    timeout: float = 30.0
    sandbox: bool = False
    asm_group_id: int | None = None
    categories: tuple[str, ...] = ("digest",)
    #: Wall clock (epoch seconds), to turn ``X-RateLimit-Reset`` into a wait.
    now: Callable[[], float] = field(default=time.time, compare=False)


def address_problem(email: str) -> str | None:
    """Why SendGrid would refuse this address (in its wire form: the domain in IDNA;
    None: it is fine). Cheap: a regex."""
    if len(email) > 254:
        return "longer than 254 characters"
    if _ADDRESS.fullmatch(email) is None:
        if not email.partition("@")[0].isascii():
            return (
                "has letters outside ASCII before the @, which SendGrid does not accept in "
                "an address"
            )
        return "is not a valid e-mail address"
    if email.index("@") > 64:
        return "its part before the @ is longer than 64 characters"
    return None


def display_name(name: str | None) -> str:
    """A ``to.name`` SendGrid accepts: ``header_safe`` (one line, nothing to decode), and
    no ``;`` or ``,`` (SendGrid refuses those)."""
    if not name:
        return ""
    if (  # the usual case, quickly: printable, no runs of spaces, nothing SendGrid refuses
        len(name) <= 200
        and name.isprintable()
        and name == name.strip()
        and "  " not in name
        and "=?" not in name
        and _NAME_BAD.search(name) is None
    ):
        return name
    return " ".join(_NAME_BAD.sub(" ", header_safe(name, 200)).split())


def _mailbox(mailbox: str) -> dict[str, str]:
    """``{"email", "name"}`` of the operator's ``Name <address>`` (the address in IDNA)."""
    name, address = parseaddr(mailbox)
    out = {"email": wire(address)}
    if display_name(name):
        out["name"] = display_name(name)
    return out


def _escape(value: str) -> str:
    return html.escape(value) if _HTML_SPECIAL.search(value) else value


def message_fields(
    composed: Composed, letterhead: Letterhead, settings: SendgridSettings
) -> dict[str, Any]:
    """Everything of the request body but the personalizations (the same for every batch)."""
    body: dict[str, Any] = {
        "from": _mailbox(letterhead.sender),
        "subject": header_safe(("[TEST] " if composed.test else "") + composed.subject, 900)
        or "Digest",
        "content": [
            {"type": "text/plain", "value": composed.text or " "},
            {"type": "text/html", "value": composed.html or " "},
        ],
        "headers": {
            "List-Id": header_safe(letterhead.list_id, 500),
            "X-Digest-Edition": str(composed.edition_id),
        },
        # Echoed in every Event Webhook event: which edition a bounce or complaint is about.
        "custom_args": {"digest_edition": str(composed.edition_id)},
        # Click tracking off for digest's mail, whatever the account says: it rewrites
        # every link (~200 bytes each, past the size budget's allowance, so Gmail would
        # clip), and the signed unsubscribe and preferences links stay digest's own.
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False}},
    }
    if composed.test:  # digest send-test: not an edition's delivery
        body["custom_args"] = {"digest_test": "1"}
        body["headers"]["X-Digest-Edition"] = "test"
    if letterhead.reply_to:
        body["reply_to"] = _mailbox(letterhead.reply_to)
    if settings.categories:
        body["categories"] = list(settings.categories)
    if settings.asm_group_id is not None:
        body["asm"] = {"group_id": settings.asm_group_id}
    if settings.sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


class SendgridBackend:
    name = "sendgrid"

    def __init__(
        self, settings: SendgridSettings, letterhead: Letterhead, personalizer: Personalizer
    ) -> None:
        if not 1 <= settings.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
        self.settings = settings
        self.batch_size = settings.batch_size
        self.letterhead = letterhead
        self.personalizer = personalizer

    def open(self, composed: Composed) -> SendgridSender:
        return SendgridSender(self, composed)

    def probe(self) -> str:
        """A request in sandbox mode to the sender's own address: SendGrid checks the key,
        the sender and the body, and delivers nothing."""
        composed = Composed(
            edition_id=0,
            subject="digest check --online",
            html="<p>check</p>",
            text="check",
            created=utcnow(),
            nonce="probe",
        )
        body = message_fields(composed, self.letterhead, replace(self.settings, sandbox=True))
        body["personalizations"] = [{"to": [{"email": body["from"]["email"]}]}]
        sender = self.open(composed)
        try:
            sender.deliver(Prepared(body, {}, (0,)))
        finally:
            sender.close()  # its kept connection: else the socket is left to the collector
        return (
            f"SendGrid ({self.settings.api_url}) accepted a sandbox request: the API key works "
            "and digest.from is accepted; nothing was sent"
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch turned into a request body, and the recipients left out of it."""

    body: dict[str, Any]
    rejected: Mapping[int, str]
    #: The subscriber of each personalization, in order.
    ids: tuple[int, ...]
    #: The body as it is posted: encoded once, while preparing (pure work, before the
    #: batch is marked sending).
    data: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", json.dumps(self.body).encode())

    @property
    def recipients(self) -> int:
        return len(self.ids)

    def without(self, refused: Mapping[int, str]) -> Prepared:
        """This body without the personalizations SendGrid refused (index → why),
        their recipients rejected with SendGrid's words."""
        if any(i >= len(self.ids) for i in refused):  # not this body's: refuse it whole
            raise PermanentDeliveryError(f"SendGrid refused personalizations {sorted(refused)}")
        parts = self.body["personalizations"]
        keep = [i for i in range(len(self.ids)) if i not in refused]
        body = {**self.body, "personalizations": [parts[i] for i in keep]}
        rejected = dict(self.rejected)
        for i, why in refused.items():
            rejected[self.ids[i]] = f"SendGrid refused this recipient: {why}"
        return Prepared(body, rejected, tuple(self.ids[i] for i in keep))


class SendgridSender:
    """One worker's client and the edition's fixed parts; ``prepare`` then ``deliver``."""

    def __init__(self, backend: SendgridBackend, composed: Composed) -> None:
        s = backend.settings
        self.backend = backend
        self.composed = composed
        self.api = Api(s.api_url, s.api_key, s.timeout)
        self.signer = backend.personalizer.signer
        base = backend.personalizer.base_url
        self.links = {
            "unsubscribe_url": f"{base}/unsubscribe/",
            "preferences_url": f"{base}/preferences/",
        }
        # Only the markers the edition uses travel with each recipient. A link is a fixed
        # prefix and a token of URL-safe characters: when escaping the prefix changes
        # nothing, its HTML spelling is its text spelling, and one substitution serves both.
        fields = message_fields(composed, backend.letterhead, s)
        text, html_part = fields["content"][0]["value"], fields["content"][1]["value"]
        self.markers: list[tuple[str, str | None, str | None]] = []
        for key in ("unsubscribe_url", "preferences_url", "email", "name"):
            marker = Marker(composed.nonce, key)
            h, t = marker.__html__(), str(marker)
            if key in self.links and html.escape(self.links[key]) == self.links[key]:
                html_part = html_part.replace(h, t)
            uses_h = h in html_part or h in fields["subject"]
            uses_t = t in html_part or t in text or t in fields["subject"]
            if uses_h or uses_t:
                self.markers.append((key, h if uses_h else None, t if uses_t else None))
        fields["content"][1]["value"] = html_part
        self.fields = fields

    def prepare(self, batch: Batch) -> Prepared:
        """The request body for a batch: pure, no I/O (built before the batch is marked
        sending, so a crash while building leaves nothing ambiguous). A few microseconds
        per recipient: a million of them go through here per edition."""
        rejected: dict[int, str] = {}
        seen: dict[str, int] = {}
        personalizations = []
        ids = []
        token = self.signer.token
        unsubscribe, preferences = self.links["unsubscribe_url"], self.links["preferences_url"]
        markers = self.markers
        doomed = faults.armed("build-message")  # fault-injection tests only
        for recipient in batch.recipients:
            rid = recipient.subscriber_id
            try:
                if doomed:
                    faults.fail("build-message", rid)
                email = wire(recipient.email)
                problem = address_problem(email)
                if problem is not None:
                    rejected[rid] = f"{recipient.email!r} {problem}: not sent"
                    continue
                low = email.lower()
                if low in seen:
                    rejected[rid] = (
                        f"{email} is also subscriber {seen[low]}'s address: sent once, to them"
                    )
                    continue
                seen[low] = rid
                secret = token(rid, recipient.email)
                link = unsubscribe + secret
                name = display_name(recipient.name)
                values = {
                    "unsubscribe_url": link,
                    "preferences_url": preferences + secret,
                    "email": recipient.email,
                    "name": name,
                }
                subs = {}
                for key, h, t in markers:
                    value = values[key]
                    if h is not None:
                        subs[h] = _escape(value)
                    if t is not None:
                        subs[t] = value
                p: dict[str, Any] = {
                    "to": [{"email": email, "name": name} if name else {"email": email}],
                    "headers": {
                        "List-Unsubscribe": f"<{link}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    },
                }
                if subs:
                    p["substitutions"] = subs
            except AddressError as exc:
                rejected[rid] = f"{exc}: not sent"
                continue
            except Exception as exc:  # anything this one recipient's part met: theirs alone
                rejected[rid] = (
                    f"the request for {recipient.email} could not be built ({exc!r}): not sent"
                )
                continue
            personalizations.append(p)
            ids.append(rid)
        body = dict(self.fields)
        body["personalizations"] = personalizations
        return Prepared(body, rejected, tuple(ids))

    def deliver(self, prepared: Prepared) -> Sent:
        """Post one prepared body. Raises Transient/Permanent/UnansweredError.

        A 400 whose every error names a personalization (SendGrid refused those
        recipients) leaves them out, each recorded with SendGrid's words, and posts
        the others again: nothing was accepted, so nothing can arrive twice."""
        for _ in range(REFUSAL_ROUNDS):
            if not prepared.recipients:  # every recipient was refused: nothing to post
                return Sent(provider_id=None, rejected=prepared.rejected)
            try:
                return self._post(prepared)
            except RefusedError as exc:
                log.warning("SendGrid refused %s recipient(s) of a batch: %s", len(exc.parts), exc)
                prepared = prepared.without(exc.parts)
        return self._post(prepared)

    def _post(self, prepared: Prepared) -> Sent:
        status, headers, body = self.api.post(prepared.data)
        if status >= 300:
            raise self._classify(status, headers, body)
        message_id = _header(headers, "X-Message-Id")
        if status == 200:  # sandbox mode: validated, nothing delivered
            message_id = f"sandbox{':' + message_id if message_id else ''}"
        return Sent(provider_id=message_id, rejected=prepared.rejected)

    def send(self, batch: Batch) -> Sent:
        return self.deliver(self.prepare(batch))

    def close(self) -> None:
        self.api.close()

    def _classify(
        self, status: int, headers: Any, body: bytes
    ) -> TransientDeliveryError | PermanentDeliveryError:
        said = error_text(body) or _reason(status)
        text = f"SendGrid answered {status}: {said}"
        if status == 400 and (parts := refused_parts(body)):
            return RefusedError(text, parts)
        if status == 429:
            return TransientDeliveryError(text, retry_after=self._wait(headers) or 1.0)
        if status >= 500 or status == 408:
            return TransientDeliveryError(text, retry_after=self._wait(headers))
        if status in _FATAL:
            return PermanentDeliveryError(f"{text}{_HINTS.get(status, '')}", fatal=True)
        return PermanentDeliveryError(text)

    def _wait(self, headers: Any) -> float | None:
        """Seconds to wait, from ``X-RateLimit-Reset`` (epoch seconds) or ``Retry-After``."""
        reset = _header(headers, "X-RateLimit-Reset")
        if reset:
            try:
                return max(0.0, float(reset) - self.backend.settings.now())
            except ValueError:
                pass
        after = _header(headers, "Retry-After")
        if after:
            try:
                return max(0.0, float(after))
            except ValueError:
                try:
                    when = parsedate_to_datetime(after).timestamp()
                except (TypeError, ValueError, IndexError):
                    return None
                return max(0.0, when - self.backend.settings.now())
        return None


class Api:
    """``POST /v3/mail/send`` on one kept connection: ``post`` returns the status, the
    headers and the body of the answer, whatever its status, and raises
    TransientDeliveryError when the request never left (the connection could not be
    made) or UnansweredError when it may have (no answer, a dropped connection)."""

    def __init__(self, api_url: str, api_key: str, timeout: float) -> None:
        self.url = api_url
        parts = urlsplit(api_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path.rstrip("/") + "/v3/mail/send"
        self.timeout = timeout
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "digest",
        }
        self.target = self.path
        self.proxy_headers: dict[str, str] = {}  # a plain proxy's credentials, per request
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = self._connected()
        try:
            headers = {**self.headers, **self.proxy_headers}
            connection.request("POST", self.target, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise UnansweredError(
                f"SendGrid did not answer ({_why(exc)}; delivery.sendgrid.timeout is "
                f"{self.timeout:g}s): it may have accepted the request"
            ) from exc
        if response.will_close:
            self.close()
        return response.status, response.headers, answer

    def _connected(self) -> http.client.HTTPConnection:
        """The kept connection, or a new one (nothing is sent yet: a failure here is
        transient, and safe to retry)."""
        if self.connection is not None and self._dropped(self.connection):
            self.close()  # the server closed it while idle: a new one, before sending
        if self.connection is None:
            connection = self._new()
            try:
                connection.connect()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise TransientDeliveryError(
                    f"cannot reach SendGrid at {self.url}: {_why(exc)}"
                ) from exc
            self.connection = connection
        return self.connection

    @staticmethod
    def _dropped(connection: http.client.HTTPConnection) -> bool:
        sock = connection.sock
        if sock is None:
            return True
        idle = select.poll()  # not select(): no limit on the descriptor's number
        idle.register(sock, select.POLLIN)
        return bool(idle.poll(0))  # readable while idle: the server closed it

    def _new(self) -> http.client.HTTPConnection:
        """A connection to the API, or through the proxy urllib would use for it
        (``HTTPS_PROXY``, ``NO_PROXY``...): for https a tunnel, TLS end to end."""
        host, port, tunnel, auth = self.host, self.port, False, {}
        proxy = urllib.request.getproxies().get("https" if self.https else "http")
        if proxy and not urllib.request.proxy_bypass(self.host):
            via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            host, port, tunnel = via.hostname or host, via.port or 80, True
            auth = _proxy_authorization(via.username, via.password)
        self.target, self.proxy_headers = self.path, {}
        if not self.https:
            if tunnel:  # a plain proxy is asked for the whole URL, its credentials each time
                self.target = f"http://{self.host}:{self.port}{self.path}"
                self.proxy_headers = auth
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        context = ssl.create_default_context()
        connection = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
        if tunnel:
            connection.set_tunnel(self.host, self.port, headers=auth)
        return connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _proxy_authorization(user: str | None, password: str | None) -> dict[str, str]:
    """The ``Proxy-Authorization`` header for credentials in the proxy's URL
    (``http://user:pass@proxy:3128``, percent-encoded as urllib reads them), or none."""
    if user is None:
        return {}
    pair = f"{unquote(user)}:{unquote(password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


_HINTS = {
    401: " (the API key is wrong or revoked: check the variable delivery.sendgrid.api_key_env "
    "names)",
    403: " (the key lacks the Mail Send permission, or digest.from is not a verified sender "
    "in SendGrid)",
    404: " (check delivery.sendgrid.api_url)",
    405: " (check delivery.sendgrid.api_url)",
}


_PART = re.compile(r"personalizations\.(\d{1,4})(?:\.|$)")


def refused_parts(body: bytes | str | None) -> dict[int, str]:
    """SendGrid's errors by personalization index, when every error of the body names
    one; otherwise nothing (the request as a whole was refused)."""
    out: dict[int, str] = {}
    try:
        errors = json.loads(body or b"")["errors"]
        for e in errors:
            found = _PART.match(str(e.get("field") or ""))
            if found is None:
                return {}
            out.setdefault(int(found[1]), header_safe(str(e.get("message") or "refused"), 300))
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
    return out


def error_text(body: bytes | str | None) -> str:
    """SendGrid's own words from an error body: ``{"errors": [{"message", "field"}]}``."""
    if not body:
        return ""
    try:
        data = json.loads(body)
        messages = []
        for e in data.get("errors", [])[:5]:
            where = f" ({e['field']})" if e.get("field") else ""
            messages.append(f"{e.get('message', '?')}{where}")
        if messages:
            return "; ".join(messages)[:1000]
    except (ValueError, AttributeError, TypeError):
        pass
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return header_safe(text, 300)


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return str(value) if value is not None else None


def _reason(status: int) -> str:
    try:
        return http.client.responses[status]
    except KeyError:
        return "error"


def _why(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
