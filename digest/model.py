"""The values that flow between the stages of the pipeline.

Every value here is a frozen dataclass: a stage receives them, never changes them, and
hands new ones to the next stage::

    FeedSource ─fetch→ Fetched ─parse→ ParsedFeed ─clean→ Entry
    [FeedEntries] ─pick→ Selection ─render→ Composed ─deliver→ BatchResult ─record→ ledger

No I/O and no behaviour here beyond small derived properties.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from .errors import FeedError


class FetchStatus(enum.StrEnum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"
    SKIPPED = "skipped"  # paused, or the server asked us to come back later


class BatchStatus(enum.StrEnum):
    """Where one batch of an edition stands in the delivery ledger.

    ``pending → sending → sent | failed``; a batch found in ``sending`` after a crash
    becomes ``unknown`` (it may or may not have gone out: see docs/delivery.md).
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    #: Frozen, its zone group's local hour not come yet: ``pending`` at ``release_at``.
    WAITING = "waiting"


class SubscriberStatus(enum.StrEnum):
    """Where a subscriber stands; only ``active`` ones receive editions (``state/subscribers.py``
    says how each is reached)."""

    ACTIVE = "active"
    PENDING = "pending"  # signed up on the web, not confirmed yet
    PAUSED = "paused"  # asked for a break; active again at ``paused_until`` or on resuming
    UNSUBSCRIBED = "unsubscribed"  # left
    SUPPRESSED = "suppressed"  # bounced or complained
    REMOVED = "removed"  # taken off by the operator (re-adding is fine)


class EditionStatus(enum.StrEnum):
    SENDING = "sending"  # recipients frozen, some batches not settled yet
    DONE = "done"  # every batch settled; at least one sent (or unknown)
    ABANDONED = "abandoned"  # nothing went out: its entries count as new again


@dataclass(frozen=True, slots=True)
class FeedSource:
    """One ``[[feeds]]`` entry of the config, with paths already made absolute."""

    url: str
    name: str | None = None
    category: str | None = None
    #: How far back entries count as new the first time this feed is read; None = all.
    first_run_window: timedelta | None = timedelta(hours=24)
    #: Send an entry again when its title or content changed since it went out.
    resend_updated: bool = False
    #: The operator's weight for ranking (``feeds[].weight``): 2 counts a story twice.
    weight: float = 1.0

    def display_name(self, title: str | None) -> str:
        """What the digest calls the feed: its configured name, else its own ``title``,
        else its host."""
        return self.name or title or urlsplit(self.url).hostname or self.url


@dataclass(frozen=True, slots=True)
class Validators:
    """What the last successful fetch of a feed left us, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    #: Where a permanent redirect said the feed now lives.
    moved_to: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outcome of fetching one feed: a value, whether it worked or not."""

    source: FeedSource
    status: FetchStatus
    url: str = ""  # the URL finally read, after redirects
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case keys
    validators: Validators = field(default_factory=Validators)
    #: Set when a permanent redirect (301/308) moved the feed.
    moved_to: str | None = None
    #: Set when the server said 410 Gone.
    gone: bool = False
    #: Set when the body is byte-for-byte the one seen last time.
    unchanged: bool = False
    #: Set when the server asked us not to come back before then (429/503 Retry-After).
    retry_after: datetime | None = None
    error: FeedError | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RawEntry:
    """An entry as the feed wrote it: strings may hold markup, nothing is trusted yet."""

    guid: str | None
    link: str | None
    title: str
    summary: str | None  # HTML or text
    content: str | None  # HTML or text
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    thumbnail: str | None = None
    categories: tuple[str, ...] = ()
    #: The URL relative links in this entry resolve against (xml:base, else the feed URL).
    base: str = ""
    #: The language the feed declares for this entry (xml:lang, else the feed's
    #: <language>): untrusted, checked by ``clean``.
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    format: str  # "rss20", "atom10", "json11", ... as detected
    title: str | None
    link: str | None
    entries: tuple[RawEntry, ...]
    #: Problems the parser survived (encoding overrides, loose parsing), for reports.
    warnings: tuple[str, ...] = ()


#: The title of an entry whose feed gave neither a title nor text to make one of.
UNTITLED = "(untitled)"


@dataclass(frozen=True, slots=True)
class Entry:
    """A clean entry: plain-text title and summary, sanitized HTML, absolute links, UTC date."""

    source: FeedSource
    source_title: str  # what the digest calls the feed
    identity: str  # stable key within the feed: guid, else link, else content hash
    title: str
    link: str | None
    canonical_link: str | None
    summary: str
    content_html: str  # sanitized; empty until ``clean.finish`` (see ``body_source``)
    published: datetime  # UTC
    dated: bool  # False when the feed gave no date and ``published`` is when we first saw it
    author: str | None = None
    thumbnail: str | None = None
    categories: tuple[str, ...] = ()
    #: The body as the feed wrote it: UNTRUSTED, never to be shown. ``clean.finish``
    #: sanitizes it into ``content_html`` for the entries an edition shows (at most a
    #: few among many, so the others never pay for it), then drops it.
    body_source: str = ""
    #: What relative links in ``body_source`` resolve against.
    body_base: str = ""
    #: A hash of the title and content as the feed wrote them (recorded when sent, so a
    #: feed with ``resend_updated``, now or later, can tell an update).
    fingerprint: str | None = None
    #: Sent before, and changed since: this is the update (set by ``pick``).
    updated: bool = False
    #: The same story from other feeds, shown as "Also in" under this, its best source
    #: (set by ``cluster``; each of them has no ``also`` of its own).
    also: tuple[Entry, ...] = ()
    #: The language the feed declares for it, a checked BCP 47 tag ("de", "ur-PK"), or None.
    language: str | None = None

    @property
    def titled(self) -> bool:
        """False when the feed gave neither a title nor text to make one of."""
        return self.title != UNTITLED


@dataclass(frozen=True, slots=True)
class FeedEntries:
    """What ``pick`` needs to know about one feed's entries this run."""

    source: FeedSource
    entries: tuple[Entry, ...]
    #: True when no earlier run ever read this feed: the first-run window applies.
    first_run: bool
    #: When digest first read this feed successfully (None on its first run).
    first_read: datetime | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """What the ledger already knows: entries sent (or deliberately skipped) before."""

    identities: frozenset[tuple[str, str]] = frozenset()  # (feed url, identity)
    canonical_links: frozenset[str] = frozenset()
    #: (feed url, identity) → the fingerprint recorded, for feeds with resend_updated.
    fingerprints: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: (feed url, fingerprint) of entries recorded recently (sent or baseline) → whether
    #: one of them had no link: the same title and content under a new guid.
    recent_content: Mapping[tuple[str, str], bool] = field(default_factory=dict)


class Place(enum.StrEnum):
    """Where a story goes in an edition (``rank.order`` decides)."""

    LEAD = "lead"  # the first item; the subject names it
    FULL = "full"  # shown in full
    HEADLINE = "headline"  # listed under the items


@dataclass(frozen=True, slots=True)
class Score:
    """A story's ranking, factor by factor (``rank.score``): ``value`` is their product."""

    sources: int  # the feeds carrying the story
    weight: float  # the weight of the feed it is shown under (``feeds[].weight``)
    age_hours: float  # since published (since first seen, for an undated entry)
    recency: float  # 0.5 per half-life of age (an undated entry: half that)
    flood: float  # 1, then smaller for each story of the same feed ranked above
    value: float
    #: ln(value), computed factor by factor: what stories are sorted by (a story
    #: years old has a value too small for a float, never too small for its log).
    log: float


@dataclass(frozen=True, slots=True)
class Placed:
    """One story of a ranking: its score, its place, and why it is there in words."""

    entry: Entry
    score: Score
    place: Place
    reason: str


@dataclass(frozen=True, slots=True)
class Selection:
    """The decision of ``pick``: what goes into the next edition."""

    items: tuple[Entry, ...]  # shown in full
    more: tuple[Entry, ...]  # new too, listed as headlines under the items
    #: Seen now for the first time but not new (back catalogue on a first run):
    #: remembered so they never count as new later, never sent.
    baseline: tuple[Entry, ...]
    #: New entries dropped because the same story is already in this selection or was sent.
    duplicates: int = 0
    #: Why each story is where it is, best first (``rank.order``; ``preview --explain``).
    ranking: tuple[Placed, ...] = ()

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The stories: the items, then the headlines (each once, under its best source)."""
        return self.items + self.more

    @property
    def recorded(self) -> tuple[Entry, ...]:
        """Every entry the edition holds: the stories and the sources shown as "Also in"."""
        return tuple(e for story in self.entries for e in (story, *story.also))

    @property
    def empty(self) -> bool:
        return not self.items and not self.more


@dataclass(frozen=True, slots=True)
class Composed:
    """A rendered edition, the same for every recipient.

    Personal parts (unsubscribe link, name...) are markers; ``personalize`` and the
    backends replace them per recipient, so the edition is rendered once.
    """

    edition_id: int
    subject: str
    html: str
    text: str
    created: datetime
    #: Makes the personal markers unguessable to feed authors.
    nonce: str
    #: A test send (``digest send-test``): marked as such, never recorded as an edition.
    test: bool = False


@dataclass(frozen=True, slots=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """The unit of sending: one request (SendGrid) or one message (SMTP, outbox)."""

    edition_id: int
    number: int
    recipients: tuple[Recipient, ...]
    #: Which version of the edition: 0 the edition itself, else one of its variants.
    variant: int = 0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How one batch settled."""

    batch: Batch
    status: BatchStatus
    provider_id: str | None = None  # X-Message-Id, file name, SMTP queue id
    detail: str | None = None  # the error, in words a person understands
    attempts: int = 1
    fatal: bool = False  # no later batch of the edition can succeed either
    #: Recipients left out of a batch that otherwise went out: subscriber id → reason.
    rejected: Mapping[int, str] = field(default_factory=dict)
    #: The SMTP relay(s) that answered for it ("host:port", comma-separated), if any.
    relay: str | None = None


@dataclass(frozen=True, slots=True)
class FeedReport:
    """One line of a run's report per feed."""

    url: str
    name: str
    status: FetchStatus
    error: str | None = None
    entries: int = 0
    new: int = 0
    moved_to: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class EditionReport:
    id: int
    resumed: bool
    entries: int
    recipients: int
    recipients_delivered: int
    recipients_failed: int
    recipients_unknown: int
    status: EditionStatus
    problems: tuple[str, ...] = ()
    #: Still pending for the warm-up's next days (not failed: see delivery.warmup).
    recipients_waiting: int = 0
    #: Zone groups released so far, and those whose local hour has not come yet.
    zones_released: tuple[str, ...] = ()
    zones_pending: tuple[str, ...] = ()
    #: Recipients in the pending zone groups.
    recipients_later: int = 0


@dataclass(frozen=True, slots=True)
class RunReport:
    editions: tuple[EditionReport, ...]
    feeds: tuple[FeedReport, ...]
    skipped: str | None  # why nothing was sent, or None
    seconds: float
    dry_run: bool = False
    #: Where the dry run's rendering went, if anywhere.
    preview_path: str | None = None
    #: No new edition: the complaint and bounce breaker holds it (``skipped`` says why).
    held: bool = False

    @property
    def ok(self) -> bool:
        return all(e.recipients_failed == 0 and e.recipients_unknown == 0 for e in self.editions)


@dataclass(frozen=True, slots=True)
class Variants:
    """Who gets which version of one edition."""

    #: Variant number (1, 2, ...) → the feed URLs it leaves out.
    dropped: Mapping[int, frozenset[str]] = field(default_factory=dict)
    #: Subscriber id → variant number, for those not on the edition itself (0).
    assigned: Mapping[int, int] = field(default_factory=dict)
    #: Subscribers who left out every feed with news this time: no mail for them.
    nothing: frozenset[int] = frozenset()
    #: Variant number → the editions (cycles) whose stories it ranks, when not just
    #: this one's (a weekly edition, or a catch-up after a switch or a missed hour).
    spans: Mapping[int, frozenset[int]] = field(default_factory=dict)
    #: Active subscribers this edition is not for (weekly readers on another day, a
    #: zone group whose hour was missed): their stories wait for their next edition.
    later: frozenset[int] = frozenset()
