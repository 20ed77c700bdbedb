"""``digest feeds``: the group, and its own work: feed health, one line per feed of the
config (``--resume`` reads a paused feed again). Its ``add | remove | import | export``
are in ``feedlist.py``."""

from __future__ import annotations

import click

from ..config import Config
from . import console
from .base import Group, State, handled


@click.group(cls=Group, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (keys: README).")
@click.option(
    "--resume",
    "resume_urls",
    multiple=True,
    metavar="URL",
    help="Read a paused feed again (repeatable); 'all' for every paused feed.",
)
@click.pass_context
@handled
def feeds(ctx: click.Context, as_json: bool, resume_urls: tuple[str, ...]) -> None:
    """Feed health: one line per feed of the config (and add, remove, import, export)."""
    from ..state import health

    if ctx.invoked_subcommand is not None:
        return
    state: State = ctx.obj
    config = state.config
    sources = config.sources()
    engine = state.engine()
    with engine.begin() as conn:
        if resume_urls:
            wanted = None if "all" in resume_urls else _resolve_urls(config, resume_urls)
            count = health.resume(conn, wanted)
            console.err.print(f"{count} feed(s) resumed")
        states = health.states(conn, [s.url for s in sources], create=False)
    rows = []
    for source in sources:
        s = states.get(source.url)
        status = s.status if s else health.FeedStatus.NEVER_READ
        rows.append(
            {
                "url": source.url,
                "name": source.name or (s.title if s else None) or source.url,
                "status": status,
                "moved_to": s.validators.moved_to if s else None,
                "pending_move": s.pending_move if s else None,
                "pending_move_since": s.pending_since.isoformat()
                if s and s.pending_since
                else None,
                "last_success_at": s.last_success_at.isoformat()
                if s and s.last_success_at
                else None,
                "last_error_at": s.last_error_at.isoformat() if s and s.last_error_at else None,
                "last_error": s.last_error if s else None,
                "consecutive_failures": s.consecutive_failures if s else 0,
                "paused": bool(s and s.paused),
                "pause_reason": s.pause_reason if s else None,
                "retry_after": s.retry_after.isoformat() if s and s.retry_after else None,
            }
        )
    if as_json:
        console.print_json(rows)
    else:
        console.feeds_table(rows)


def _resolve_urls(config: Config, urls: tuple[str, ...]) -> list[str]:
    from ..config import feed_url

    return [feed_url(u, config.base_dir) for u in urls]
