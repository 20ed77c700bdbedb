"""The ``digest`` command: a thin shell over the pipeline.

Exit codes: 0 fine (delivered, nothing to send, or nothing due yet); 1 something was
not delivered or a command failed; 2 the config or the command line is wrong; 3 another
run holds the lease; 4 the complaint and bounce breaker holds the next edition (``digest release``).
Errors digest expects print one clear message, never a traceback.

This module holds the ``main`` group and its short commands (run, resend, release,
serve, work); ``base.py`` the plumbing they all share (``State``, ``handled``, ``Group``,
the exit codes); the other commands are in modules of their own, joined to ``main`` at
the end of this one: ``proofs`` (preview, send-test), ``checks`` (check), ``outlook``
(schedule), ``overview`` (status), ``init``, ``subscribers``, ``feeds`` (with
``feedlist``: feeds add, remove, import, export) and ``database`` (db).
"""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import click
from rich.markup import escape

from .. import __version__, redact
from ..clock import utcnow as _now
from ..config import Config, warnings_for
from ..errors import UsageError
from ..model import RunReport
from . import (
    checks,
    console,
    database,
    feedlist,  # noqa: F401  (importing it adds feeds add, remove, import, export)
    feeds,
    init,
    outlook,
    overview,
    proofs,
    subscribers,
)
from .base import EXIT_FAILED, EXIT_HELD, EXIT_OK, Group, State, handled

T = TypeVar("T")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    metavar="PATH",
    envvar="DIGEST_CONFIG",
    help="Config file (default ./config.toml, or $DIGEST_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """digest: feeds in, one clean e-mail digest out, to every subscriber, exactly once."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    redact.install()  # no secret and no subscriber's token in any line, at any verbosity
    # The SendGrid client's debug lines are its request headers (the API key) and whole
    # request bodies (every recipient): digest says what happened in its own words.
    logging.getLogger("python_http_client").setLevel(max(level, logging.INFO))
    # The process ends with the command, which closed what it opened: the interpreter's
    # last collection, walking every imported module's objects, need not run (0.2 s of
    # every command's end). atexit's other handlers (logging's flush first) still run.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    ctx.obj = State(config_path)
    ctx.call_on_close(ctx.obj.close)


# -- run --------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--now",
    "at_once",
    is_flag=True,
    help="Make an edition now if anything is new, whatever [schedule] says (sending by hand).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Fetch and render what --now would send; send and record nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys: README).")
@click.option(
    "--due",
    is_flag=True,
    help="Deprecated: what `digest run` does by itself now (follow [schedule]); kept for "
    "old scripts.",
)
@click.pass_obj
@handled
def run(state: State, at_once: bool, dry_run: bool, as_json: bool, due: bool) -> None:
    """Do what [schedule] says is due now, as `digest serve` would (for cron, every 15
    minutes or hourly), else say when the next edition is due.

    Makes the cycle's edition when its first delivery hour comes, releases the zone
    groups whose hour has come, and finishes an edition a crash left unfinished. The
    first run in a new database makes an edition at once; `--now` makes one now
    whenever something is new."""
    from .. import pipeline, schedule
    from . import running

    if due and at_once:
        raise UsageError(
            "--now and --due do not go together: --now makes an edition now, --due (the "
            "default) follows [schedule]; use one"
        )
    if due and dry_run:
        raise UsageError(
            "--due and --dry-run do not go together: --dry-run shows what --now would send"
        )
    if due:
        console.err.print(
            "[yellow]warning:[/yellow] --due is deprecated: `digest run` follows "
            + escape("[schedule] by itself now; drop --due"),
            markup=True,
        )
    services = pipeline.build(state.config, engine=state.engine(), readonly=dry_run, clock=_clock)
    plan = schedule.schedule_of(state.config)
    ran = _with_progress(
        as_json,
        lambda bars: running.run(services, plan, bars, now=at_once, dry_run=dry_run),
    )
    if as_json:
        console.print_json(running.as_json(ran, plan))
    else:
        running.summary(ran, plan, lambda: _where_to_look(state.config))
    report = ran.report
    sys.exit(EXIT_FAILED if not report.ok else EXIT_HELD if report.held else EXIT_OK)


def _clock() -> datetime:
    """The time for a run: ``_now`` as it is when asked (tests set their own)."""
    return _now()


def _with_progress(as_json: bool, work: Callable[[console.Bars | None], T]) -> T:
    """Run ``work`` with progress bars on a terminal (never with --json)."""
    bars = console.Bars() if not as_json and sys.stderr.isatty() else None
    try:
        return work(bars)
    finally:
        if bars is not None:
            bars.done()


def _finish(report: RunReport, as_json: bool) -> None:
    if as_json:
        console.print_json(console.run_json(report))
    else:
        console.run_summary(report)


def _where_to_look(config: Config) -> None:
    if config.delivery.backend == "outbox":
        folder = config.resolve(config.delivery.outbox.dir)
        console.out.print(
            f"The messages are in {folder}/ (open an .eml file with any mail "
            "client), and `digest preview` renders the next edition as HTML."
        )


# -- resend -------------------------------------------------------------------------------


@main.command()
@click.option("--edition", "edition_id", type=int, required=True, help="The edition's id.")
@click.option("--failed", is_flag=True, help="Re-send the batches known not delivered.")
@click.option(
    "--unknown",
    is_flag=True,
    help="Also re-send batches whose fate is unknown (check the provider's log first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, like `run`.")
@click.pass_obj
@handled
def resend(state: State, edition_id: int, failed: bool, unknown: bool, as_json: bool) -> None:
    """Send an edition again to the recipients it did not reach."""
    from .. import pipeline
    from ..redeliver import resend as redeliver

    services = pipeline.build(state.config, engine=state.engine())
    report = _with_progress(
        as_json,
        lambda bars: redeliver(services, edition_id, failed=failed, unknown=unknown, progress=bars),
    )
    _finish(report, as_json)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


# -- deliverability: the breaker's release ------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@handled
def release(state: State, as_json: bool) -> None:
    """Let the next edition go after the complaint and bounce breaker held it."""
    from ..services import thresholds
    from ..state import reputation

    with state.engine().begin() as conn:
        verdict = reputation.verdict(conn, thresholds(state.config), _now())
        through = reputation.release(conn) if verdict.held else None
    if as_json:
        console.print_json(
            {"released": verdict.held, "reason": verdict.reason, "through_edition": through}
        )
        return
    if not verdict.held:
        console.out.print("Nothing is held: the next run makes an edition as usual.")
        return
    console.out.print(
        f"Released (editions up to {through} are forgiven): the next run sends. It was "
        f"{verdict.reason}"
    )


# -- serve and schedule -------------------------------------------------------------------


@main.command()
@click.option("--host", help="Listen on this address (default: web.host).")
@click.option("--port", type=int, help="Listen on this port (default: web.port).")
@click.option("--no-schedule", is_flag=True, help="Only the web app: send no editions.")
@click.pass_context
@handled
def serve(ctx: click.Context, host: str | None, port: int | None, no_schedule: bool) -> None:
    """Run the scheduler and the web app (unsubscribe, preferences, sign-up, archive,
    webhooks) until SIGTERM or Ctrl-C."""
    from ..web.server import serve as run_server

    state: State = ctx.obj
    _service_logging()
    config = state.config
    for warning in warnings_for(config):
        logging.getLogger("digest.serve").warning("%s", warning)
    sys.exit(run_server(config, host=host, port=port, scheduler_on=not no_schedule))


@main.command()
@click.pass_obj
@handled
def work(state: State) -> None:
    """Send editions beside the other instances on the same PostgreSQL database (no web
    app, no scheduler) until SIGTERM or Ctrl-C."""
    from ..scheduler import work as run_worker

    _service_logging()
    sys.exit(run_worker(state.config))


def _service_logging() -> None:
    """A service says what it does (-v adds more), each line with its time."""
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    for h in root.handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


# The commands in their own modules join the group (they import ``base``, never this
# module: the imports run one way).
main.add_command(proofs.preview)
main.add_command(checks.check)
main.add_command(subscribers.subscribers_group)
main.add_command(feeds.feeds)
main.add_command(database.db_group)
main.add_command(proofs.send_test)
main.add_command(outlook.schedule_command)
main.add_command(init.init)
main.add_command(overview.status)
