"""Read ``config.toml`` into a validated, frozen ``Config``.

Every key is checked at start-up. A problem is reported with the file, the key path
(``feeds[2].url``), what is wrong and what would be right; unknown keys get a
"did you mean". Secrets never come from the file: keys ending in ``_env`` name the
environment variable that holds them.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import tomllib
import zoneinfo
from collections.abc import Sequence
from datetime import date, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from . import redact
from .durations import parse_duration
from .errors import ConfigError
from .mail import addresses
from .model import FeedSource
from .render.views import DEFAULT_SUBJECT
from .reputation import BOUNCE_HOLD, COMPLAINT_HOLD, COMPLAINT_WARN, DEFAULT_RAMP
from .state import permissions

DEFAULT_PATH = "config.toml"
SECRET_WORDS = ("password", "api_key", "apikey", "secret", "token")

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey


# -- value types --------------------------------------------------------------------------


class KeyProblems(ValueError):
    """Raised by a validator that checks several keys at once: each problem with its key
    path, below the section validated. The message then names the right key without
    anyone keeping a list of which validator says what."""

    def __init__(self, *found: tuple[tuple[str | int, ...], str]) -> None:
        self.found = found
        super().__init__("; ".join(message for _key, message in found))


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError('write durations as a string with a unit, like "30s", "90m" or "24h"')
    return parse_duration(value)


def _window(value: Any) -> timedelta | str:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    return _duration(value)


def address(value: str, rules: addresses.Rules | None = None) -> str:
    """A bare e-mail address; with ``rules``, one the backend can deliver to."""
    try:
        return addresses.normalize(value, rules or addresses.Rules(utf8=True))
    except addresses.AddressError as exc:
        raise ValueError(str(exc)) from exc


def mailbox(value: str, rules: addresses.Rules | None = None) -> str:
    """``"Name <addr>"`` or a bare address."""
    if "\r" in value or "\n" in value:
        raise ValueError("must be on one line")
    name, addr = parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f'{value!r} is not an address: write "Name <name@example.org>"')
    addr = address(addr, rules)
    return f"{name} <{addr}>" if name else addr


def _rules(info: ValidationInfo) -> addresses.Rules | None:
    """The backend's rules, when ``parse_config`` could read them from the file before
    validating it: so a problem elsewhere in ``[delivery]`` or ``[digest]`` hides no
    address the backend cannot deliver to."""
    rules: addresses.Rules | None = (info.context or {}).get("rules")
    return rules


def _address(value: str, info: ValidationInfo) -> str:
    return address(value, _rules(info))


def _mailbox(value: str, info: ValidationInfo) -> str:
    return mailbox(value, _rules(info))


def address_rules(raw: dict[str, Any]) -> addresses.Rules | None:
    """The addresses ``raw``'s backend can deliver to, read before validation (None while
    ``delivery.backend`` or ``delivery.smtp.smtputf8`` is itself wrong)."""
    delivery = raw.get("delivery", {})
    smtp = delivery.get("smtp", {}) if isinstance(delivery, dict) else None
    backend = delivery.get("backend", "outbox") if isinstance(delivery, dict) else None
    utf8 = smtp.get("smtputf8", False) if isinstance(smtp, dict) else None
    if backend not in ("outbox", "smtp", "sendgrid") or not isinstance(utf8, bool):
        return None
    return addresses.rules_for(backend, utf8)


def http_url(value: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in value):
        # urlsplit quietly drops CR, LF and tab; the links in every mail (and their
        # List-Unsubscribe header) would still carry them
        raise ValueError(f"{value!r} must be one URL, without spaces or line breaks")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f'{value!r} is not an http(s) URL: write "https://digest.example.org"')
    return value.rstrip("/")


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f'{value!r} is not an IANA time zone: write one like "Europe/Berlin", '
            '"America/Chicago" or "UTC"'
        ) from exc
    return value


def _cron(value: str) -> str:
    """Five cron fields that fire some day. Checked in UTC: whether a date ever comes
    does not depend on the zone, so a bad ``timezone`` hides no bad ``cron``."""
    from datetime import UTC, datetime

    from .crontab import trigger

    try:
        if trigger(value, "UTC").get_next_fire_time(None, datetime.now(UTC)) is None:
            raise ValueError("that date never comes")
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a cron expression ({exc}): write five fields, "
            'minute hour day month weekday, like "0 7 * * *" (07:00 every day)'
        ) from exc
    return value


def _feed_location(value: str) -> str:
    """An http(s) URL, a file:// URL or a path: nothing else is read (``ftp://`` is not
    a path to a local file)."""
    if any(c in value for c in "\r\n\t\0"):
        raise ValueError(f"{value!r} must be one URL or path, on one line")
    scheme = urlsplit(value).scheme.lower()
    if len(scheme) > 1 and scheme not in ("http", "https", "file"):  # C:\feeds is a path
        raise ValueError(
            f"{value!r}: digest reads http(s) feeds and local files, not {scheme}:// "
            'ones: write url = "https://example.org/feed.xml" or a path like "feeds/mine.xml"'
        )
    return value


def _locale(value: str) -> str:
    from .render.i18n import parse_locale

    return str(parse_locale(value))


def _env_name(value: str) -> str:
    if not value or not all(c.isalnum() or c == "_" for c in value) or value[0].isdigit():
        raise ValueError(
            f"{value!r} is not an environment variable name: "
            'name the variable that holds the secret, like "SMTP_PASSWORD"'
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
#: How far back entries count as new on a feed's first run: a duration, or "all".
Window = Annotated[timedelta | Literal["all"], BeforeValidator(_window)]
Address = Annotated[str, AfterValidator(_address)]
Mailbox = Annotated[str, AfterValidator(_mailbox)]
HttpUrl = Annotated[str, AfterValidator(http_url)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
EnvName = Annotated[str, AfterValidator(_env_name)]
LocaleName = Annotated[str, AfterValidator(_locale)]
Cron = Annotated[str, Field(min_length=1), AfterValidator(_cron)]
FeedLocation = Annotated[str, Field(min_length=1), AfterValidator(_feed_location)]
Text = Annotated[str, Field(min_length=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- sections -----------------------------------------------------------------------------


class DigestSection(Section):
    title: Text = "Digest"
    from_: Mailbox = Field(alias="from")
    reply_to: Mailbox | None = None
    base_url: HttpUrl
    postal_address: Text
    max_items: int = Field(20, ge=1, le=500)
    max_items_per_feed: int = Field(5, ge=1, le=500)
    skip_if_empty: bool = True
    first_run_window: Window = timedelta(hours=24)
    resend_updated: bool = False
    summary_length: int = Field(300, ge=40, le=5000)
    subject: Text = DEFAULT_SUBJECT

    @field_validator("subject")
    @classmethod
    def _subject_compiles(cls, subject: str) -> str:
        import jinja2

        try:
            jinja2.Environment().parse(subject)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(
                f"not a valid template ({(exc.message or '').rstrip('.')}): write it like "
                '"{{ title }}: {{ top }}"'
            ) from exc
        return subject


class ScheduleSection(Section):
    cron: Cron = "0 7 * * *"
    timezone: TimeZone = "UTC"
    catch_up: Duration = timedelta(hours=3)
    #: The day weekly readers get their edition (at their own hour, in their own zone).
    weekly_day: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    #: What subscribers may choose; the first is what those who chose nothing get when
    #: "daily" is not offered.
    frequencies: Annotated[tuple[Literal["daily", "weekly"], ...], Field(min_length=1)] = (
        "daily",
        "weekly",
    )
    #: The most stories a weekly (or catch-up) edition ranks: the best ``max_items`` in
    #: full, the rest as headlines.
    weekly_max_stories: Annotated[int, Field(ge=1, le=1000)] = 50

    @field_validator("catch_up")
    @classmethod
    def _catch_up_bounded(cls, catch_up: timedelta) -> timedelta:
        if not timedelta(0) <= catch_up <= timedelta(days=7):
            raise ValueError('must be between "0s" (never catch up) and "7d", like "3h"')
        return catch_up


class StorageSection(Section):
    url: Text = "sqlite:///digest.state.db"


class FetchSection(Section):
    timeout: Duration = timedelta(seconds=30)
    connect_timeout: Duration = timedelta(seconds=10)
    max_bytes: int = Field(10_000_000, ge=1_000)
    max_redirects: int = Field(5, ge=0, le=30)
    concurrency: int = Field(20, ge=1, le=1000)
    connections: int = Field(200, ge=1, le=10000)
    per_host: int = Field(4, ge=1, le=100)
    user_agent: str | None = None
    max_retry_wait: Duration = timedelta(seconds=10)
    pause_after: int = Field(10, ge=1)
    workers: int = Field(0, ge=0, le=64)
    max_entity_expansion: int = Field(1_000_000, ge=0)
    max_entries: int = Field(1000, ge=1)
    parse_timeout: Duration = timedelta(seconds=30)
    allow_private: bool = False


class OutboxSection(Section):
    dir: Text = "outbox"


def _default_port(security: str) -> int:
    return {"tls": 465, "starttls": 587, "none": 25}[security]


class RelayEntry(Section):
    """One of ``[[delivery.smtp.relays]]``: a relay with its own address and login;
    ``weight`` is its share of the messages, ``max_connections`` its cap."""

    host: Text
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName = "DIGEST_SMTP_PASSWORD"
    ca_file: str | None = None
    weight: int = Field(1, ge=1, le=1000)
    max_connections: int | None = Field(None, ge=1, le=1000)

    @property
    def effective_port(self) -> int:
        return self.port or _default_port(self.security)


#: The keys that say where one relay is and how to log in: in ``[delivery.smtp]`` for
#: one relay, in each ``[[delivery.smtp.relays]]`` for several.
RELAY_KEYS = ("host", "port", "security", "username", "password_env", "ca_file")


class SmtpSection(Section):
    host: Text = "localhost"
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName = "DIGEST_SMTP_PASSWORD"
    timeout: Duration = timedelta(seconds=30)
    ca_file: str | None = None
    max_per_connection: int = Field(0, ge=0)
    rate: float = Field(0, ge=0)
    dkim_key_file: str | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = Field(None, validate_default=True)
    smtputf8: bool = False
    relays: list[RelayEntry] = []

    @field_validator("dkim_domain")
    @classmethod
    def _dkim_complete(cls, domain: str | None, info: ValidationInfo) -> str | None:
        """Checked with the last of the three (the others are in ``info.data``), so a
        bad value elsewhere in the section hides nothing."""
        given = [info.data.get("dkim_key_file"), info.data.get("dkim_selector"), domain]
        if any(given) and not all(given):
            raise KeyProblems(
                (
                    ("..", "dkim_key_file"),
                    "set dkim_key_file, dkim_selector and dkim_domain together "
                    "(or none of them to send unsigned)",
                )
            )
        return domain

    @field_validator("relays")
    @classmethod
    def _relays_unique(cls, relays: list[RelayEntry]) -> list[RelayEntry]:
        seen: dict[tuple[str, int], int] = {}
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, relay in enumerate(relays):
            where = (relay.host.lower(), relay.effective_port)
            if where in seen:
                problems.append(
                    (
                        (i, "host"),
                        f"the same relay as relays[{seen[where]}] (host and port): "
                        "list each relay once",
                    )
                )
            seen.setdefault(where, i)
        if problems:
            raise KeyProblems(*problems)
        return relays

    @model_validator(mode="after")
    def _one_way_to_name_relays(self) -> SmtpSection:
        """With ``relays``, each relay names its own host and login: the same keys in
        ``[delivery.smtp]`` would be silently unused, so they are an error."""
        given = [key for key in RELAY_KEYS if key in self.model_fields_set]
        if self.relays and given:
            raise KeyProblems(
                *(
                    (
                        (key,),
                        f"given together with [[delivery.smtp.relays]], which name their own "
                        f"{key}: move it into each relay (delivery.smtp.relays[].{key}), or "
                        "remove the relays to send through this one host",
                    )
                    for key in given
                )
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or _default_port(self.security)

    @property
    def relay_hosts(self) -> tuple[str, ...]:
        """The host names mail leaves through: the relays', or ``host``."""
        return tuple(r.host for r in self.relays) or (self.host,)


class SendgridSection(Section):
    api_key_env: EnvName = "SENDGRID_API_KEY"
    api_url: HttpUrl = "https://api.sendgrid.com"
    batch_size: int = Field(1000, ge=1, le=1000)
    timeout: Duration = timedelta(seconds=30)
    sandbox: bool = False
    asm_group_id: int | None = Field(None, ge=1)
    categories: tuple[str, ...] = ("digest",)

    @field_validator("categories")
    @classmethod
    def _categories_fit(cls, cats: tuple[str, ...]) -> tuple[str, ...]:
        if len(cats) > 10 or len(set(cats)) != len(cats):
            raise ValueError("at most 10, each once (SendGrid's limit)")
        for c in cats:
            if not c or len(c) > 255 or not c.isprintable():
                raise ValueError(f"{c!r} is not usable: 1 to 255 characters, one line")
        return cats


# -- deliverability (issue 11): the complaint and bounce breaker, the warm-up ramp ---------


def _rate(value: Any) -> float:
    """A rate: "0.3%" or a fraction (0.003)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text.removesuffix("%"))
        except ValueError as exc:
            raise ValueError(f'{value!r} is not a rate: write a percentage, like "0.3%"') from exc
        value = number / 100 if text.endswith("%") else number
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f'{value!r} is not a rate between "0%" and "100%", like "0.3%"')
    return float(value)


Rate = Annotated[float, BeforeValidator(_rate)]


class BreakerSection(Section):
    """``delivery.breaker``: hold the next edition when readers complain or addresses
    bounce (digest/reputation.py; docs/delivery.md, "Deliverability")."""

    complaint_rate: Rate = COMPLAINT_HOLD
    warn_complaint_rate: Rate = COMPLAINT_WARN
    bounce_rate: Rate = BOUNCE_HOLD
    min_recipients: int = Field(100, ge=1)


class WarmupSection(Section):
    """``delivery.warmup``: a daily ramp for a new sending domain or IP (off without
    ``start``)."""

    start: date | None = None
    daily: tuple[int, ...] = DEFAULT_RAMP

    @field_validator("daily")
    @classmethod
    def _daily_positive(cls, daily: tuple[int, ...]) -> tuple[int, ...]:
        if not daily or any(n < 1 for n in daily):
            raise ValueError("give at least one day's limit, each 1 or more, like [50, 100, 500]")
        return daily


# -- delivery -----------------------------------------------------------------------------


class DeliverySection(Section):
    backend: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    retries: int = Field(3, ge=0, le=20)
    retry_backoff: Duration = timedelta(seconds=2)
    max_retry_wait: Duration = timedelta(minutes=5)
    retry_unanswered: bool = True
    workers: int | None = Field(None, ge=1, le=64)
    keep_ledger: Duration = timedelta(days=90)

    @property
    def address_rules(self) -> addresses.Rules:
        """Which addresses the configured backend can deliver to."""
        return addresses.rules_for(self.backend, self.smtp.smtputf8)

    @property
    def effective_workers(self) -> int:
        """Batches in flight at once: by default 4 requests to SendGrid, one SMTP
        connection (many relays limit them), one writer of outbox files."""
        if self.workers is not None:
            return self.workers
        return 4 if self.backend == "sendgrid" else 1

    outbox: OutboxSection = OutboxSection()
    smtp: SmtpSection = SmtpSection()
    sendgrid: SendgridSection = SendgridSection()
    breaker: BreakerSection = BreakerSection()  # deliverability (issue 11)
    warmup: WarmupSection = WarmupSection()  # deliverability (issue 11)


def load_public_key(text: str) -> EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER), or PEM. ValueError when it is neither."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(
            "not a public key: paste the verification key SendGrid shows for the signed "
            f"event webhook (base64, starting with MFkw...) ({exc})"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key, which SendGrid uses")
    return key


class WebSection(Section):
    host: Text = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    trusted_proxies: Text = "127.0.0.1"
    archive: bool = True
    sendgrid_public_key: str | None = None
    webhook_max_age: Duration = timedelta(minutes=10)
    max_confirmations_per_hour: int = Field(100, ge=1, le=1000)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, proxies: str) -> str:
        import ipaddress

        for part in proxies.split(","):
            part = part.strip()
            if part == "*":
                continue
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{part!r} is not an IP address or network: write "
                    '"127.0.0.1", "10.0.0.0/8, ::1" or "*"'
                ) from exc
        return proxies

    def public_key(self) -> EllipticCurvePublicKey | None:
        """``sendgrid_public_key`` loaded (None when unset)."""
        return load_public_key(self.sendgrid_public_key) if self.sendgrid_public_key else None

    @field_validator("sendgrid_public_key")
    @classmethod
    def _key_loads(cls, key: str | None) -> str | None:
        if key:
            load_public_key(key)  # its ValueError says what to paste
        return key


class EmailSection(Section):
    """How the e-mail looks: docs/templates.md."""

    templates: str | None = None  # the operator's folder, searched before the defaults
    group_by: Literal["category", "feed", "none"] = "category"
    locale: LocaleName = "en"
    timezone: TimeZone | None = None  # None: schedule.timezone
    thumbnails: bool = True
    contents_from: int = Field(5, ge=0, le=500)
    max_bytes: int = Field(90_000, ge=20_000, le=100_000)
    headlines_per_group: int = Field(10, ge=1, le=1000)


class FeedEntry(Section):
    url: FeedLocation
    name: str | None = None
    category: str | None = None
    first_run_window: Window | None = None  # None: the [digest] value
    resend_updated: bool | None = None  # None: the [digest] value
    weight: float = Field(1.0, gt=0, le=100)  # for ranking: 2 counts its stories twice


class SubscriberEntry(Section):
    email: Address
    name: str | None = None


class Config(Section):
    #: The file this came from, and the folder relative paths are read against (first:
    #: the checks of ``feeds`` read it).
    path: Path = Field(default=Path(DEFAULT_PATH), exclude=True)

    digest: DigestSection
    schedule: ScheduleSection = ScheduleSection()
    storage: StorageSection = StorageSection()
    fetch: FetchSection = FetchSection()
    delivery: DeliverySection = DeliverySection()
    web: WebSection = WebSection()
    email: EmailSection = EmailSection()
    feeds: list[FeedEntry] = Field(min_length=1)
    subscribers: list[SubscriberEntry] = []

    # A check across keys is a field validator reading what was validated before it
    # (``info.data``) or the rules read from the file first (``info.context``), so a
    # problem elsewhere hides nothing.

    @field_validator("feeds")
    @classmethod
    def _feeds_unique(cls, feeds: list[FeedEntry], info: ValidationInfo) -> list[FeedEntry]:
        base = info.data.get("path", Path(DEFAULT_PATH)).parent
        seen: dict[str, int] = {}
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, feed in enumerate(feeds):
            url = feed_url(feed.url, base)
            if url in seen:
                problems.append(
                    ((i, "url"), f"the same feed as feeds[{seen[url]}]: list each feed once")
                )
            seen.setdefault(url, i)
        if problems:
            raise KeyProblems(*problems)
        return feeds

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, path: str) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def storage_url(self) -> str:
        """The database URL, with a relative SQLite path made relative to the config."""
        url = self.storage.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url

    def sources(self) -> list[FeedSource]:
        return [self._source(f) for f in self.feeds]

    def _source(self, feed: FeedEntry) -> FeedSource:
        window = feed.first_run_window
        if window is None:
            window = self.digest.first_run_window
        return FeedSource(
            url=feed_url(feed.url, self.base_dir),
            name=feed.name,
            category=feed.category,
            first_run_window=None if window == "all" else window,
            resend_updated=(
                self.digest.resend_updated if feed.resend_updated is None else feed.resend_updated
            ),
            weight=feed.weight,
        )

    def secret_from_env(self, name: str) -> str | None:
        """A secret from the environment; from then on it is masked in every log line."""
        value = os.environ.get(name)
        redact.secret(value)
        return value if value else None


def feed_url(url: str, base_dir: Path) -> str:
    """http(s) and file URLs stay as they are; a path becomes a file:// URL."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "file"):
        return url
    path = Path(url).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    return path.as_uri()


# -- loading and error messages ----------------------------------------------------------


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: the argument, else ``$DIGEST_CONFIG``, else ./config.toml."""
    return Path(path or os.environ.get("DIGEST_CONFIG") or DEFAULT_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem."""
    file = config_path(path)
    shown = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            shown,
            [
                "file not found: pass --config PATH, set DIGEST_CONFIG, or write one here "
                "with `digest init`"
            ],
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, [f"cannot read the file: {exc}"]) from exc
    return parse_config(read_toml(text, shown), file.resolve(), shown=shown)


def read_toml(text: str, shown: str) -> dict[str, Any]:
    """The TOML document, or a ConfigError that says which line and what to write."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, [toml_problem(text, str(exc))]) from exc


_AT = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$", re.DOTALL)
_ONE_BRACKET = re.compile(r"^[ \t]*\[[ \t]*(feeds|subscribers)[ \t]*\][ \t]*(#.*)?$", re.MULTILINE)


def toml_problem(text: str, said: str) -> str:
    """tomllib's complaint in digest's words, with the line it is about."""
    single = _ONE_BRACKET.search(text)
    if single:
        name = single.group(1)
        line = text.count("\n", 0, single.start()) + 1
        return (
            f"line {line}: [{name}] makes one table, but each of the {name} is its own "
            f"section: write [[{name}]] (two pairs of brackets) above each one"
        )
    found = _AT.match(said)
    if not found:
        return f"not valid TOML: {said}"
    number = int(found["line"])
    lines = text.splitlines()
    shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    what = found["what"]
    if what == "Cannot overwrite a value":
        why = "a key is given twice in one section: keep one of them"
    elif what.startswith("Cannot declare"):
        why = "this section is already there above: merge the two into one"
    elif what == "Invalid value":
        why = 'the value is not valid TOML: put text in quotes, like title = "My digest"'
    else:
        why = f"not valid TOML ({what[:1].lower()}{what[1:]})"
    return f"line {number}: {why}" + (f" (the line: {shown[:80]})" if shown else "")


def parse_config(raw: dict[str, Any], path: Path, shown: str | None = None) -> Config:
    """Validate an already-parsed TOML document (tests build configs this way)."""
    try:
        return Config.model_validate({**raw, "path": path}, context={"rules": address_rules(raw)})
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            problems += [p for p in _describe(err) if p not in problems]
        raise ConfigError(shown or str(path), problems) from exc


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _up(parts: list[int | str]) -> list[int | str]:
    """``..`` in a key path steps out of a section: ``delivery.smtp.dkim_domain..x``."""
    out: list[int | str] = []
    for part in parts:
        if part == "..":
            out.pop()
        else:
            out.append(part)
    return out


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that holds the last key of ``loc``."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = (model.model_fields if is_model else {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = [a for arg in getattr(annotation, "__args__", ()) for a in (arg, *get_args(arg))]
        candidates = [annotation, *args]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _field_at(loc: Sequence[int | str]) -> FieldInfo | None:
    model = _model_at(loc)
    if model is None or not loc or isinstance(loc[-1], int):
        return None
    name = str(loc[-1])
    return next(
        (f for n, f in model.model_fields.items() if name in (n, f.alias)),
        None,
    )


def _known_keys(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        names.append(info.alias or name)
    return names


#: Union members pydantic adds to an error's location.
_UNION_MEMBERS = {"str", "int", "float", "bool", "timedelta", "none", "literal", "dict", "list"}


def _describe(err: Any) -> list[str]:
    """One pydantic error as digest's problem lines: the key, what is wrong, what to write.
    No text of the validator library reaches the operator."""
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    loc = [p for p in loc if p not in _UNION_MEMBERS]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblems):
        return [f"{_key_path(_up([*loc, *key]))}: {message}" for key, message in cause.found]
    key = _key_path(loc)
    if isinstance(cause, ValueError):  # digest's own validators say it in its words
        return [f"{key}: {cause}"]
    return [f"{key}: {_in_own_words(err, loc)}"]


def _in_own_words(err: Any, loc: Sequence[int | str]) -> str:
    kind: str = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    name = str(loc[-1]) if loc and not isinstance(loc[-1], int) else ""
    write = _write(loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return f"is required but missing{_example(loc)}"
    if name in ("feeds", "subscribers", "relays") and isinstance(got, dict):
        table = _key_path(loc)
        return (
            f"[{table}] makes one table, but each of the {name} is its own section: "
            f"write [[{table}]] (two pairs of brackets) above each one"
        )
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        if isinstance(got, list):
            return f"write [{name}] (one pair of brackets): there is one {name} section"
        return f"{got!r} is not a section: write a [{_key_path(loc)}] section with its keys"
    if kind == "too_short" and name == "feeds":
        return f"there are no feeds{_example(loc)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{got!r} is not a whole number{write}"
    if kind in ("float_parsing", "float_type"):
        return f"{got!r} is not a number{write}"
    if kind.startswith(("greater_than", "less_than")):
        return f"{got!r} is out of range: {_bounds(ctx, loc)}{write}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{got!r} is not true or false{write or f' (write {name} = true or false)'}"
    if kind == "string_too_short":
        return f"must not be empty{write}"
    if kind == "string_type":
        example = write or f' (write {name} = "...")'
        return f"{got!r} is not text: put it in quotes{example}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", '"')
        return f"{got!r} is not one of the choices: {choices}"
    if kind in ("list_type", "tuple_type", "too_short", "too_long"):
        return f"{got!r} is not a usable list{write}"
    if kind.startswith(("date_", "datetime_")):
        return f"{got!r} is not a date: write {name} = 2027-01-01 (a TOML date, without quotes)"
    return (
        f"{got!r} cannot be used here: see {_key_path(loc)} in the README's configuration reference"
    )


def _unknown_key(loc: Sequence[int | str]) -> str:
    name = str(loc[-1])
    model = _model_at(loc)
    known = _known_keys(model) if model else []
    hint = ""
    if any(word in name.lower() for word in SECRET_WORDS):
        hint = (
            "; secrets never go in the config file: put the secret in an environment "
            "variable and name that variable in the matching *_env key"
        )
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        hint = f"; did you mean {close[0]!r}?" + hint
    elif known and not hint:
        hint = f"; known keys here: {', '.join(known)}"
    return f"unknown key{hint}"


def _bounds(ctx: dict[str, Any], loc: Sequence[int | str]) -> str:
    field = _field_at(loc)
    low = high = None
    for rule in field.metadata if field else ():
        low = getattr(rule, "ge", None) if getattr(rule, "ge", None) is not None else low
        high = getattr(rule, "le", None) if getattr(rule, "le", None) is not None else high
    low = ctx.get("ge", low)
    high = ctx.get("le", high)
    if low is not None and high is not None:
        return f"it must be from {low} to {high}"
    return f"it must be at least {low}" if low is not None else f"it must be at most {high}"


def _write(loc: Sequence[int | str]) -> str:
    """``: write max_items = 20`` from the key's default, or a known example."""
    field = _field_at(loc)
    name = str(loc[-1]) if loc else ""
    if field is None or field.default is None or field.is_required():
        return _example(loc) and f" ({_example(loc).strip(' ()')})"
    return f": write {name} = {_toml_value(field.default)}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        from .durations import format_duration

        return f'"{format_duration(value)}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


_EXAMPLES = {
    "url": ' (write url = "https://example.org/feed.xml" or a path to a local file)',
    "from": ' (write from = "Digest <digest@example.org>")',
    "base_url": ' (write base_url = "https://digest.example.org": links in mails point there)',
    "postal_address": (
        ' (write postal_address = "1 Example Street, Town": the law in many countries asks '
        "for a postal address in every mail)"
    ),
    "email": ' (write email = "someone@example.org")',
    "reply_to": ' (write reply_to = "Editor <editor@example.org>")',
    "digest": " (add a [digest] section with from, base_url and postal_address)",
    "feeds": (
        ' (add at least one [[feeds]] section with url = "...", or run `digest feeds add URL`)'
    ),
    "port": " (write port = 587)",
    "host": ' (write host = "smtp.example.org")',
    "asm_group_id": " (write asm_group_id = 12345)",
    "workers": " (write workers = 4)",
    "user_agent": ' (write user_agent = "digest (+https://digest.example.org)")',
    "name": ' (write name = "A name")',
    "category": ' (write category = "News")',
}


def _example(loc: Sequence[int | str]) -> str:
    last = str(loc[-1]) if loc else ""
    return _EXAMPLES.get(last, "")


def warnings_for(config: Config) -> list[str]:
    """Things that work but that an operator should know about (``digest check``)."""
    out = _exposed(config)
    if not config.digest.base_url.startswith("https://"):
        out.append(
            f"digest.base_url: {config.digest.base_url!r} is not https: fine for local "
            "testing, but mail providers expect one-click unsubscribe links over HTTPS"
        )
    if config.delivery.backend == "sendgrid" and not config.web.sendgrid_public_key:
        out.append(
            "web.sendgrid_public_key: not set, so `digest serve` refuses SendGrid's event "
            "webhook and never learns of bounces and spam reports: paste the key SendGrid "
            "shows for the signed Event Webhook"
        )
    for i, feed in enumerate(config.feeds):
        url = feed_url(feed.url, config.base_dir)
        if url.startswith("file:"):
            from urllib.request import url2pathname

            local = Path(url2pathname(urlsplit(url).path))
            if not local.exists():
                out.append(f"feeds[{i}].url: {local} does not exist")
    return out


def _exposed(config: Config) -> list[str]:
    """The config, the database, the outbox and the DKIM key, when every local user can
    read them."""
    out = []
    mode = permissions.open_to_all(config.path)
    if mode:
        out.append(
            f"{config.path} can be read by every local user ({mode}), and it may list "
            f"subscribers' addresses: chmod 600 {config.path} (or 640 for a trusted group)"
        )
    database = permissions.sqlite_file(config.storage_url)
    if database is not None:
        for path in [database, *(Path(f"{database}{c}") for c in permissions.SQLITE_COMPANIONS)]:
            mode = permissions.open_to_all(path)
            if mode:
                out.append(
                    f"storage.url: {path} can be read by every local user ({mode}), and it "
                    "holds every subscriber's address and, without DIGEST_SECRET, the key "
                    f"that signs their unsubscribe links: chmod 600 {path}"
                )
    smtp = config.delivery.smtp
    if smtp.dkim_key_file:
        key = config.resolve(smtp.dkim_key_file)
        mode = permissions.open_to_all(key)
        if mode:
            out.append(
                f"delivery.smtp.dkim_key_file: {key} can be read by every local user ({mode}), "
                f"and whoever reads it can sign mail as {smtp.dkim_domain}: chmod 600 {key}"
            )
    if config.delivery.backend == "outbox":
        folder = config.resolve(config.delivery.outbox.dir)
        mode = permissions.open_to_all(folder)
        if mode:
            out.append(
                f"delivery.outbox.dir: every local user can list {folder} ({mode}), whose "
                f"files are named after their recipients: chmod 700 {folder}"
            )
    return out
