"""Wiring: the one place that turns a ``Config`` into working parts.

``build`` reads the config (and the secrets it names from the environment), opens the
database and makes the backend, the renderer and the settings every stage takes as
plain values (``RunSettings`` for the run itself); everything after it can be put
together by hand in tests. Nothing after it reads the config.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import __version__
from .clock import utcnow
from .config import Config
from .deliver.base import Backend, Letterhead, Personalizer
from .deliver.dispatch import DispatchSettings
from .errors import ConfigError
from .ingest.fetch import FetchSettings
from .mail.addresses import Rules
from .model import FeedSource
from .render.edition import Renderer, RenderSettings
from .reputation import Ramp, Thresholds
from .schedule import Cadence, cadence_of
from .state import db, throttle
from .state.tokens import Signer, env_key, load_key

if TYPE_CHECKING:
    from .deliver.dkim import DkimKey
    from .state.fleet import Instance


@dataclass(frozen=True)
class RunSettings:
    """What a run (``pipeline``) takes of the config, as plain values."""

    sources: tuple[FeedSource, ...]
    #: The config's ``[[subscribers]]``: address and name, made true in the database.
    listed: tuple[tuple[str, str | None], ...]
    address_rules: Rules
    skip_if_empty: bool
    summary_length: int
    max_items: int
    max_items_per_feed: int
    #: Parser processes (``fetch.workers``; 0: one per core).
    workers: int
    pause_after: int
    keep_ledger: timedelta
    #: The operator's choices for subscribers' frequency and zone (``[schedule]``).
    cadence: Cadence = Cadence()
    weekly_max_stories: int = 50


def run_settings(config: Config) -> RunSettings:
    d = config.digest
    return RunSettings(
        sources=tuple(config.sources()),
        listed=tuple((s.email, s.name) for s in config.subscribers),
        address_rules=config.delivery.address_rules,
        skip_if_empty=d.skip_if_empty,
        summary_length=d.summary_length,
        max_items=d.max_items,
        max_items_per_feed=d.max_items_per_feed,
        workers=config.fetch.workers,
        pause_after=config.fetch.pause_after,
        keep_ledger=config.delivery.keep_ledger,
        cadence=cadence_of(config),
        weekly_max_stories=config.schedule.weekly_max_stories,
    )


@dataclass(frozen=True)
class Services:
    """Everything a run needs, built once from the config."""

    run: RunSettings
    engine: sa.Engine
    backend: Backend
    renderer: Renderer
    fetch: FetchSettings
    dispatch: DispatchSettings
    clock: Callable[[], datetime] = field(default=utcnow)
    #: The complaint and bounce breaker's limits, and the warm-up (docs/delivery.md).
    thresholds: Thresholds = Thresholds()
    ramp: Ramp | None = None
    #: Where a warm-up's day starts and ends (the schedule's time zone).
    timezone: str = "UTC"
    #: This process among the instances sharing the database (``state/fleet.py``), once
    #: it has registered (``digest serve``); None for a run made by hand or in tests.
    instance: Instance | None = None


def letterhead(config: Config) -> Letterhead:
    head = Letterhead(
        sender=config.digest.from_,
        reply_to=config.digest.reply_to,
        list_id="",
        base_url=config.digest.base_url,
    )
    title = config.digest.title
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in title.lower()).strip("-")
    return replace(head, list_id=f"{title} <{slug or 'digest'}.{head.domain}>")


def render_settings(config: Config) -> RenderSettings:
    d, e = config.digest, config.email
    templates = config.resolve(e.templates) if e.templates else None
    if templates is not None and not templates.is_dir():
        raise ConfigError(
            str(config.path),
            [f"email.templates: {templates} is not a folder: create it, or remove the key"],
        )
    return RenderSettings(
        title=d.title,
        base_url=d.base_url,
        postal_address=d.postal_address,
        timezone=e.timezone or config.schedule.timezone,
        subject=d.subject,
        templates=templates,
        locale=e.locale,
        group_by=e.group_by,
        thumbnails=e.thumbnails,
        contents_from=e.contents_from,
        max_bytes=e.max_bytes,
        headlines_per_group=e.headlines_per_group,
        esp_encodes=config.delivery.backend == "sendgrid",
    )


def fetch_settings(config: Config) -> FetchSettings:
    f = config.fetch
    return FetchSettings(
        timeout=f.timeout.total_seconds(),
        connect_timeout=f.connect_timeout.total_seconds(),
        max_bytes=f.max_bytes,
        max_redirects=f.max_redirects,
        concurrency=f.concurrency,
        connections=f.connections,
        per_host=f.per_host,
        user_agent=f.user_agent or f"digest/{__version__} (+{config.digest.base_url})",
        max_retry_wait=f.max_retry_wait.total_seconds(),
        max_entity_expansion=f.max_entity_expansion,
        max_entries=f.max_entries,
        parse_timeout=f.parse_timeout.total_seconds(),
        allow_private=f.allow_private,
    )


def make_backend(config: Config, signer: Signer, engine: sa.Engine | None = None) -> Backend:
    """The configured delivery backend. Secrets are read from the environment here.
    With ``engine``, ``delivery.smtp.rate`` is counted in the database, for every
    instance sharing it (``state/throttle.py``)."""
    head = letterhead(config)
    personalizer = Personalizer(signer, config.digest.base_url)
    kind = config.delivery.backend
    if kind == "outbox":
        from .deliver.outbox import OutboxBackend

        return OutboxBackend(config.resolve(config.delivery.outbox.dir), head, personalizer)
    if kind == "sendgrid":
        return sendgrid_backend(config, head, personalizer)
    if kind == "smtp":
        return smtp_backend(config, head, personalizer, engine)
    raise ConfigError(
        str(config.path), [f"delivery.backend: {kind!r} is not available in this version"]
    )


def smtp_backend(
    config: Config, head: Letterhead, personalizer: Personalizer, engine: sa.Engine | None
) -> Backend:
    from .deliver.relays import Relay
    from .deliver.smtp import SharedRate, SmtpBackend, SmtpSettings

    s = config.delivery.smtp
    relays = tuple(
        Relay(
            host=r.host,
            port=r.effective_port,
            security=r.security,
            username=r.username,
            password=_smtp_password(config, r.username, r.password_env, f"relays[{i}]."),
            ca_file=config.resolve(r.ca_file) if r.ca_file else None,
            weight=r.weight,
            max_connections=r.max_connections or 0,
        )
        for i, r in enumerate(s.relays)
    )
    settings = SmtpSettings(
        host=s.host,
        port=s.effective_port,
        security=s.security,
        username=s.username,
        password=None if relays else _smtp_password(config, s.username, s.password_env, ""),
        timeout=s.timeout.total_seconds(),
        ca_file=config.resolve(s.ca_file) if s.ca_file else None,
        max_per_connection=s.max_per_connection,
        rate=s.rate,
        dkim=dkim_key(config),
        smtputf8=s.smtputf8,
        relays=relays,
    )
    limit = SharedRate(engine, s.rate) if engine is not None and s.rate > 0 else None
    return SmtpBackend(settings, head, personalizer, limit=limit)


def _smtp_password(config: Config, username: str | None, env: str, where: str) -> str | None:
    password = config.secret_from_env(env)
    if username and password is None:
        raise ConfigError(
            str(config.path),
            [
                f"delivery.smtp.{where}password_env: the environment variable {env} is not "
                f"set: export {env}=... with the SMTP password for {username!r}"
            ],
        )
    return password


def sendgrid_backend(config: Config, head: Letterhead, personalizer: Personalizer) -> Backend:
    from .deliver.sendgrid import SendgridBackend, SendgridSettings

    s = config.delivery.sendgrid
    key = config.secret_from_env(s.api_key_env)
    if key is None:
        raise ConfigError(
            str(config.path),
            [
                f"delivery.sendgrid.api_key_env: the environment variable {s.api_key_env} is "
                f"not set: export {s.api_key_env}=SG.... with a SendGrid API key that has the "
                "Mail Send permission"
            ],
        )
    return SendgridBackend(
        SendgridSettings(
            api_key=key,
            api_url=s.api_url,
            batch_size=s.batch_size,
            timeout=s.timeout.total_seconds(),
            sandbox=s.sandbox,
            asm_group_id=s.asm_group_id,
            categories=tuple(s.categories),
        ),
        head,
        personalizer,
    )


def dkim_key(config: Config) -> DkimKey | None:
    s = config.delivery.smtp
    if not (s.dkim_key_file and s.dkim_selector and s.dkim_domain):
        return None
    from .deliver.dkim import load_dkim_key

    try:
        return load_dkim_key(config.resolve(s.dkim_key_file), s.dkim_selector, s.dkim_domain)
    except ValueError as exc:
        raise ConfigError(str(config.path), [f"delivery.smtp.dkim_key_file: {exc}"]) from exc


def thresholds(config: Config) -> Thresholds:
    b = config.delivery.breaker
    return Thresholds(b.complaint_rate, b.warn_complaint_rate, b.bounce_rate, b.min_recipients)


def ramp(config: Config) -> Ramp | None:
    w = config.delivery.warmup
    return Ramp(w.start, tuple(w.daily)) if w.start is not None else None


def dispatch_settings(
    config: Config,
    sleep: Callable[[float], None],
    clock: Callable[[], datetime],
    should_stop: Callable[[], bool],
) -> DispatchSettings:
    d = config.delivery
    return DispatchSettings(
        workers=d.effective_workers,
        retries=d.retries,
        backoff=d.retry_backoff.total_seconds(),
        max_wait=d.max_retry_wait.total_seconds(),
        retry_unanswered=d.retry_unanswered,
        sleep=sleep,
        clock=clock,
        should_stop=should_stop,
    )


def build(
    config: Config,
    *,
    engine: sa.Engine | None = None,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
    readonly: bool = False,
) -> Services:
    """Turn the config into working parts. ``readonly`` (previews, dry runs) signs links
    with a throwaway key instead of creating the real one."""
    own = engine is None
    engine = engine or db.connect(config.storage_url)
    try:
        if readonly:  # a throwaway key, but a DIGEST_SECRET that could not sign is an error
            env_key()
        signer = Signer(secrets.token_bytes(32) if readonly else load_key(engine))
        backend = make_backend(config, signer, engine)
        dispatch = dispatch_settings(config, sleep, clock, should_stop)
        return Services(
            run=run_settings(config),
            engine=engine,
            backend=backend,
            renderer=Renderer(render_settings(config)),
            fetch=replace(fetch_settings(config), clock=clock),
            # a provider's 429 holds every instance on the database (state/throttle.py)
            dispatch=replace(dispatch, hold=throttle.Hold(engine, backend.name)),
            clock=clock,
            thresholds=thresholds(config),
            ramp=ramp(config),
            timezone=config.schedule.timezone,
        )
    except BaseException:
        if own:  # a config problem found here: do not leave the engine behind
            engine.dispose()
        raise
