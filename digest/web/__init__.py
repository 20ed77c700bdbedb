"""``digest serve``: the web app and the scheduler in one process.

``build`` turns the config into the web app's parts (the web side's counterpart of
``pipeline.build``); ``server.serve`` runs them under uvicorn with the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Config
from ..services import Services, make_backend
from ..state.tokens import Signer, load_key
from .app import Topic, Web, WebSettings, create_app
from .signup import Mailer

__all__ = ["Topic", "Web", "WebSettings", "build", "create_app", "topics"]


def topics(config: Config, titles: dict[str, str]) -> tuple[Topic, ...]:
    """What subscribers can choose on the preferences page: each category, and each
    feed that has none. ``titles`` are the feeds' own titles, by URL."""
    out: list[Topic] = []
    seen: set[str] = set()
    for source in config.sources():
        if source.category:
            if source.category not in seen:
                seen.add(source.category)
                out.append(Topic("category", source.category, source.category))
        else:
            out.append(Topic("feed", source.url, source.display_name(titles.get(source.url))))
    return tuple(out)


def build(
    config: Config, services: Services, health: Callable[[], dict[str, Any]] | None = None
) -> Web:
    import sqlalchemy as sa

    from ..state.db import schema

    with services.engine.connect() as conn:
        titles = {
            url: title
            for url, title in conn.execute(sa.select(schema.feeds.c.url, schema.feeds.c.title))
            if title
        }
    w = config.web
    d = config.digest
    signer = Signer(load_key(services.engine))
    settings = WebSettings(
        title=d.title,
        base_url=d.base_url,
        postal_address=d.postal_address,
        timezone=config.schedule.timezone,
        archive=w.archive,
        public_key=w.public_key(),
        webhook_max_age=w.webhook_max_age,
        topics=topics(config, titles),
        max_confirmations_per_hour=w.max_confirmations_per_hour,
        thresholds=services.thresholds,
        frequencies=tuple(config.schedule.frequencies),
        weekly_day=config.schedule.weekly_day,
    )
    return Web(
        settings=settings,
        engine=services.engine,
        signer=signer,
        # its sign-up mails count in delivery.smtp.rate with the editions, fleet-wide
        mailer=Mailer(make_backend(config, signer, services.engine), config.delivery.address_rules),
        clock=services.clock,
        health=health or (lambda: {}),
    )
