"""The database tables (SQLAlchemy Core). Migrations in ``migrations/`` build exactly this.

Any change here needs a migration: ``tests/test_db.py`` fails while autogenerate still
finds a difference between these tables and ``upgrade head``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: The largest value an ``Integer`` id column holds (PostgreSQL's ``integer``): an id from
#: outside (a token, a URL, a webhook event) beyond it names nothing.
MAX_ID = 2**31 - 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

feeds = Table(
    "feeds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", String(2048), nullable=False, unique=True),  # as written in the config
    Column("moved_to", String(2048)),  # a permanent redirect, adopted: used from then on
    Column("move_pending", String(2048)),  # a permanent redirect seen, not adopted yet...
    Column("move_seen_at", UTCDateTime),  # ...first seen then (adopted 24 h later)
    Column("title", String(500)),
    Column("etag", String(500)),
    Column("last_modified", String(200)),
    Column("body_hash", String(64)),
    Column("entry_prints", LargeBinary),  # its last document's entries' fingerprints
    Column("first_read_at", UTCDateTime),
    Column("last_fetched_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_error_at", UTCDateTime),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("paused_at", UTCDateTime),
    Column("pause_reason", Text),
    Column("retry_after", UTCDateTime),  # do not fetch before (429 / 503 Retry-After)
)

editions = Table(
    "editions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("subject", String(1000), nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("nonce", String(32), nullable=False),
    Column("item_count", Integer, nullable=False, default=0),
    Column("more_count", Integer, nullable=False, default=0),
    Column("recipients", Integer, nullable=False, default=0),
    Column("delivered", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("unknown", Integer, nullable=False, default=0),
    Column("finished_at", UTCDateTime),
    Column("compacted", Boolean, nullable=False, default=False),
    Column("slot", UTCDateTime, unique=True),  # the scheduled time it was made for
    # The archive page: the e-mail's layout with every story (NULL: made before 0012).
    Column("page", Text),
    # The cycle: the local wall-clock time it is for ("2027-03-13T07:00"), the same in
    # every zone group (each gets it at that time in its own zone); NULL before 0009.
    Column("cycle", String(16), index=True),
    Column("weekly", Boolean, nullable=False, server_default="0"),  # weekly readers' cycle
)

# An edition's new entries (JSON), for the weekly and catch-up variants that rank them
# again: megabytes on a heavy day, so not in the edition's row, which each change of
# its status rewrites whole on SQLite (before 0015 they were, as ``editions.stories``).
edition_stories = Table(
    "edition_stories",
    metadata,
    Column(
        "edition_id",
        Integer,
        ForeignKey("editions.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("stories", Text, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("feed_id", Integer, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False),
    Column("identity", String(64), nullable=False),
    Column("link_key", String(64), index=True),  # hash of the canonical link
    Column("title", String(1000), nullable=False),
    Column("link", String(2048)),
    Column("published_at", UTCDateTime, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    # NULL: known but never sent (back catalogue on a first run).
    Column("edition_id", Integer, ForeignKey("editions.id"), index=True),
    # Title and content hash when recorded: with resend_updated, a change is sent again.
    # The same feed, title and content seen recently under another guid is a duplicate.
    Column("fingerprint", String(32), index=True),
    UniqueConstraint("feed_id", "identity", name="uq_entries_feed_identity"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),  # lower-cased
    Column("name", String(200)),
    # active | pending (not confirmed) | unsubscribed | removed | suppressed
    Column("status", String(16), nullable=False, index=True),
    Column("source", String(16), nullable=False),  # config | cli | import | web
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("reason", Text),  # why unsubscribed, removed or suppressed
    Column("preferences", Text),  # JSON, set from the preferences page
    Column("paused_until", UTCDateTime),  # status paused: resumes then (NULL: until asked)
    Column("frequency", String(8)),  # daily | weekly (NULL: daily)
    Column("timezone", String(64)),  # IANA zone (NULL: schedule.timezone)
    # The ledger's cursor: the last edition (cycle) whose stories they have been given.
    Column("covered_through", Integer),
    # (0014) The zone groups of active subscribers, read as a few index seeks by each
    # scheduled run; and the config's own subscribers, found without a scan.
    Index("ix_subscribers_zone", "timezone", "status"),
    Index("ix_subscribers_source", "source", "status"),
)

batches = Table(
    "batches",
    metadata,
    Column("edition_id", Integer, ForeignKey("editions.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider_id", String(200)),
    Column("detail", Text),
    Column("updated_at", UTCDateTime, nullable=False),
    # Which version of the edition its recipients get: 0 the edition itself, else a
    # row of ``variants`` (subscribers who left feeds out on the preferences page).
    Column("variant", Integer, nullable=False, server_default="0"),
    Column("zone", String(64)),  # the zone group its recipients are in (NULL: before 0009)
    Column("release_at", UTCDateTime),  # when it may go: the cycle's time in that zone
    # The fleet (0013): the instance that claimed it (``instances.id``) and until when the
    # claim holds unless renewed; the instance that sent it and the SMTP relay it went to.
    Column("claimed_by", String(200)),
    Column("claim_expires", UTCDateTime),
    Column("sent_by", String(200)),
    Column("relay", String(300)),
    PrimaryKeyConstraint("edition_id", "number", name="pk_batches"),
    Index("ix_batches_status", "edition_id", "status", "number"),
)

variants = Table(
    "variants",
    metadata,
    Column("edition_id", Integer, ForeignKey("editions.id"), nullable=False),
    Column("number", Integer, nullable=False),  # 1, 2, ...: 0 is the edition itself
    Column("dropped", Text, nullable=False),  # JSON: the feed URLs it leaves out
    Column("span", Text),  # JSON: the editions whose stories it ranks (NULL: its own)
    Column("subject", String(1000), nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
    PrimaryKeyConstraint("edition_id", "number", name="pk_variants"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("edition_id", Integer, ForeignKey("editions.id"), nullable=False),
    Column("subscriber_id", Integer, nullable=False),
    Column("batch", Integer, nullable=False),
    Column("variant", Integer, nullable=False, server_default="0"),  # as its batch's
    Column("email", String(320), nullable=False),
    Column("name", String(200)),
    # Set when this one recipient failed though its batch went out (a bad address).
    Column("error", Text),
    Column("since", Integer),  # their ledger cursor before this edition (see subscribers)
    PrimaryKeyConstraint("edition_id", "subscriber_id", name="pk_deliveries"),
    Index("ix_deliveries_batch", "edition_id", "batch"),
    # (0014) Only the recipients who failed alone: an edition's tally and problems read
    # these few rows, never the edition's million others.
    Index(
        "ix_deliveries_error",
        "edition_id",
        sqlite_where=text("error IS NOT NULL"),
        postgresql_where=text("error IS NOT NULL"),
    ),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", String(100), unique=True),  # sg_event_id: deliveries repeat
    Column("kind", String(32), nullable=False),
    Column("email", String(320)),
    Column("subscriber_id", Integer),
    Column("edition_id", Integer),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
)

signups = Table(
    "signups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email_key", String(320), nullable=False, index=True),  # lower-cased
    Column("subscriber_id", Integer),
    Column("ip", String(64)),  # who asked (proof of consent, with confirmed_at)
    Column("requested_at", UTCDateTime, nullable=False),
    Column("mailed", Boolean, nullable=False, default=False),  # a mail went out for it
    Column("error", Text),  # why no mail went out
    Column("confirmed_at", UTCDateTime),
)

instances = Table(  # state/fleet.py: each running process says who it is and what it does
    "instances",
    metadata,
    Column("id", String(200), primary_key=True),  # host:pid:random, as lease holders
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(16), nullable=False),  # serve | work | run
    Column("state", String(16), nullable=False),  # building | sending | standby | stopped
    Column("edition_id", Integer),  # the edition it is building or sending, if any
    Column("version", String(32)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False, index=True),
    Column("sent", Integer, nullable=False, default=0),  # recipients it has sent to
    Column("detail", Text),
)

throttles = Table(  # limits shared by every instance: a rate's tokens, a provider's hold
    "throttles",
    metadata,
    Column("name", String(64), primary_key=True),  # smtp.rate | sendgrid | smtp:relay...
    Column("tokens", Float, nullable=False, default=0.0),  # what the bucket holds...
    Column("stamp", Float, nullable=False, default=0.0),  # ...at this time (epoch seconds)
    Column("hold_until", Float, nullable=False, default=0.0),  # nothing goes before this
    Column("reason", Text),
)

signup_limits = Table(  # web/limits.py: what the sign-up limits count, and the row lock
    "signup_limits",
    metadata,
    Column("key", String(400), primary_key=True),  # all | network:... | address:...
    Column("hits", Text, nullable=False),  # JSON: the recent counted times (epoch seconds)
    Column("updated_at", UTCDateTime, nullable=False, index=True),
)
