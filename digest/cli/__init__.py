"""The ``digest`` command: a thin shell over the pipeline.

Exit codes: 0 fine (delivered, nothing to send, or nothing due yet); 1 something was
not delivered or a command failed; 2 the config or the command line is wrong; 3 another
run holds the lease; 4 the complaint and bounce breaker holds the next edition (``digest release``).
Errors digest expects print one clear message, never a traceback.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.markup import escape

from .. import __version__, redact
from ..clock import utcnow as _now
from ..config import Config, load_config, warnings_for
from ..errors import (
    ConfigError,
    DatabaseFailed,
    DeliveryError,
    DigestError,
    LeaseError,
    RenderError,
    UsageError,
)
from ..model import RunReport, SubscriberStatus
from . import console

if TYPE_CHECKING:  # the rest is imported by the commands that use it: --help stays quick
    import sqlalchemy as sa

    from ..services import Services

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_HELD = 0, 1, 2, 3, 4


class State:
    """What commands share: the config, read once, and one database engine."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._engine: sa.Engine | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def engine(self) -> sa.Engine:
        if self._engine is None:
            from ..state import db

            self._engine = db.connect(self.config.storage_url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def handled(func: F) -> F:
    """Turn digest's own errors into a message and an exit code; with ``--json``, also
    into ``{"ok": false, "error": ...}`` on stdout, so a script always gets one object."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except (ConfigError, UsageError) as exc:
            fail(exc, EXIT_USAGE, as_json)
        except LeaseError as exc:
            fail(exc, EXIT_BUSY, as_json, label="[yellow]busy:[/yellow]")
        except DatabaseFailed as exc:  # locked, unreachable, disk full...
            logging.getLogger("digest").debug("database error", exc_info=True)
            fail(exc, EXIT_FAILED, as_json, hint=" (storage.url; -vv shows the traceback)")
        except DigestError as exc:
            fail(exc, EXIT_FAILED, as_json)

    return wrapper  # type: ignore[return-value]


def fail(
    exc: DigestError,
    code: int,
    as_json: bool,
    label: str = "[red]error:[/red]",
    hint: str = "",
) -> NoReturn:
    """Say what went wrong on stderr (and as the JSON failure object), and exit."""
    if as_json:
        console.print_json(failure(exc, code))
    console.err.print(f"{label} {escape(str(exc) + hint)}", markup=True)
    sys.exit(code)


def failure(exc: DigestError, code: int) -> dict[str, Any]:
    """The one JSON object a ``--json`` command prints when it fails (README)."""
    data: dict[str, Any] = {"ok": False, "error": str(exc), "exit_code": code}
    if isinstance(exc, ConfigError):
        data["file"] = exc.path
        data["problems"] = exc.problems
    return data


class Group(click.Group):
    """A command group whose ``--help`` lists each command with its whole first sentence
    (click cuts it to fit one line), wrapped to the terminal."""

    group_class = type  # subgroups are Groups too

    def invoke(self, ctx: click.Context) -> Any:
        """A command line click refuses (an unknown option, a missing argument) is a
        failure too: with ``--json`` in it, the failure object goes to stdout."""
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if ctx.parent is None and "--json" in words:
                console.print_json(
                    {"ok": False, "error": exc.format_message(), "exit_code": exc.exit_code}
                )
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, command.get_short_help_str(limit=1000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


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


# -- run / preview / check ----------------------------------------------------------------


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


@main.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the HTML (default ./preview.html).",
)
@click.option("--text", "as_text", is_flag=True, help="Print the plain-text part instead.")
@click.option(
    "--serve", is_flag=True, help="Serve it on 127.0.0.1, rendered again on every reload."
)
@click.option("--port", default=8025, show_default=True, help="The port for --serve.")
@click.option(
    "--sample", "use_sample", is_flag=True, help="The sample edition instead of the feeds."
)
@click.option("--explain", is_flag=True, help="Print why each story is where it is (the ranking).")
@click.option(
    "--next",
    "force_next",
    is_flag=True,
    help="The next edition even when nothing is new (else the last one sent is shown).",
)
@click.pass_obj
@handled
def preview(
    state: State,
    out_path: Path | None,
    as_text: bool,
    serve: bool,
    port: int,
    use_sample: bool,
    explain: bool,
    force_next: bool,
) -> None:
    """Render the next edition without sending or recording anything (with nothing new
    since the last edition: that one, as it was sent)."""
    from .. import pipeline
    from . import previews

    services = pipeline.build(state.config, engine=state.engine(), readonly=True)
    upcoming = previews.next_edition(services, use_sample)
    for report in upcoming.reports:
        if report.error:
            console.err.print(
                f"[yellow]warning:[/yellow] {escape(report.name)}: {escape(str(report.error))}",
                markup=True,
            )
    if explain:
        sys.stdout.write(previews.explain(upcoming))
        return
    render = previews.live(state.config_path, upcoming, _now)
    what = (
        f"Preview of edition {upcoming.edition_id} ({len(upcoming.selection.entries)} new entries)"
    )
    sent = None
    if upcoming.selection.empty and not (use_sample or force_next):
        sent = previews.last_sent(services, state.config.digest.base_url)
    if sent is not None:
        console.err.print(
            f"Nothing new since edition {sent.edition_id} "
            f"({sent.created:%Y-%m-%d %H:%M} UTC): this is edition {sent.edition_id} as it was "
            "sent, to a sample subscriber. `digest preview --next` shows the next edition."
        )
        render = previews.fixed(sent.page)
        what = f"Edition {sent.edition_id}, as sent"
    if serve:
        _serve(render, port, "the next edition" if sent is None else what.lower())
        return
    page = render()
    if as_text:
        sys.stdout.write(f"Subject: {page.subject}\n\n{page.text}")
        return
    target = out_path or Path("preview.html")
    target.write_text(page.html, encoding="utf-8")
    console.out.print(f"{what}, subject {page.subject!r}:")
    console.out.print(f"{target.resolve()}")


def _serve(render: Callable[[], Any], port: int, what: str = "the next edition") -> None:
    from . import previews

    try:
        httpd = previews.server(render, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): try --port") from exc
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    console.out.print(
        f"Serving {what} at {url} (plain text: {url}text).\n"
        "Edit a template or config.toml and reload the page; Ctrl-C to stop."
    )
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@main.command()
@click.option("--online", is_flag=True, help="Also fetch every feed and test the delivery login.")
@click.option(
    "--deliverability", is_flag=True, help="Also look up SPF, DKIM and DMARC of digest.from."
)
@click.option("--dns-server", metavar="ADDR[:PORT]", help="With --deliverability: ask this one.")
@click.option("--json", "as_json", is_flag=True, help="With --deliverability: one JSON object.")
@click.pass_obj
@handled
def check(
    state: State, online: bool, deliverability: bool, dns_server: str | None, as_json: bool
) -> None:
    """Validate the config (and the templates); exit 0 when valid, 2 when not."""
    if (as_json or dns_server) and not deliverability:
        raise UsageError("--json and --dns-server go with --deliverability")
    from .. import pipeline

    config = state.config
    for warning in warnings_for(config):
        console.err.print(f"[yellow]warning:[/yellow] {escape(warning)}", markup=True)
    services = pipeline.build(config, engine=state.engine(), readonly=True)
    try:
        problems = services.renderer.check(_now())
    except RenderError as exc:
        problems = [str(exc)]
    for problem in problems:
        console.err.print(f"[red]error:[/red] templates: {escape(problem)}", markup=True)
    if problems:
        if as_json:
            error = "templates: " + "; ".join(problems)
            console.print_json(
                {"ok": False, "error": error, "exit_code": EXIT_USAGE, "problems": problems}
            )
        sys.exit(EXIT_USAGE)
    if online:
        _check_online(services)
    if deliverability:
        _check_deliverability(config, dns_server, as_json)
        return
    console.out.print(
        f"{config.path}: valid ({console.plural(len(config.feeds), 'feed')}, "
        f"delivery via {config.delivery.backend})."
    )


def _check_deliverability(config: Config, server: str | None, as_json: bool) -> None:
    """SPF, DKIM and DMARC of digest.from's domain, with what to publish (exit 1 when
    something must be fixed or could not be looked up)."""
    from ..deliver import dnscheck
    from ..mail import authrecords
    from ..services import dkim_key, letterhead

    if server:
        try:
            dnscheck.server_address(server)
        except ValueError as exc:
            raise UsageError(f"--dns-server {server!r}: give an IP address[:port] ({exc})") from exc
    key = dkim_key(config) if config.delivery.backend == "smtp" else None
    setup = authrecords.Setup(
        domain=letterhead(config).domain,
        backend=config.delivery.backend,
        relay=config.delivery.smtp.relay_hosts[0] if config.delivery.backend == "smtp" else None,
        dkim=(key.selector, key.domain, key.public_record()) if key else None,
    )
    report = dnscheck.check(setup, server)
    if as_json:
        console.print_json(report.as_json())
    else:
        console.deliverability(report)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _check_online(services: Services) -> None:
    """Fetch every feed and try the delivery backend's credentials, sending nothing."""
    from .. import pipeline

    gathered = pipeline.gather(services, pipeline.NoProgress(), dry_run=True)
    bad = [r for r in gathered.reports if r.error]
    for r in gathered.reports:
        mark = "[red]✗[/red]" if r.error else "[green]✓[/green]"
        said = (
            escape(str(r.error))
            if r.error
            else "unchanged since the last run"
            if r.status == "not_modified"
            else console.plural(r.entries, "entry", "entries")
        )
        console.out.print(f"  {mark} {escape(_feed_label(r.name, r.url))}: {said}", markup=True)
    backend = services.backend.name
    try:
        checked = services.backend.probe()
    except DeliveryError as exc:
        console.out.print(f"  [red]✗[/red] delivery ({backend}): {escape(str(exc))}", markup=True)
        sys.exit(EXIT_FAILED)
    console.out.print(f"  [green]✓[/green] delivery ({backend}): {escape(checked)}", markup=True)
    if bad:
        sys.exit(EXIT_FAILED)


def _feed_label(name: str, url: str) -> str:
    """``Name (url)``; the address alone when the feed has no name of its own."""
    from urllib.parse import urlsplit

    return url if name in (urlsplit(url).hostname, url) else f"{name} ({url})"


# -- subscribers --------------------------------------------------------------------------


@main.group(name="subscribers")
def subscribers_group() -> None:
    """Manage the subscriber list."""


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", help="Their name, for the To header.")
@click.option("--resubscribe", is_flag=True, help="Re-add an address that unsubscribed.")
@click.pass_obj
@handled
def subscribers_add(state: State, email: str, name: str | None, resubscribe: bool) -> None:
    """Add a subscriber (confirmed at once)."""
    from ..state import subscribers

    with state.engine().begin() as conn:
        result = subscribers.add(
            conn,
            email,
            name,
            "cli",
            _now(),
            resubscribe=resubscribe,
            rules=state.config.delivery.address_rules,
        )
    s = result.subscriber
    if result.outcome == "refused":
        raise UsageError(
            f"{s.email} unsubscribed on {s.unsubscribed_at:%Y-%m-%d}; add "
            "--resubscribe only if they asked to come back"
        )
    console.out.print(f"{s.email}: {result.outcome}.")


@subscribers_group.command("remove")
@click.argument("email")
@click.option("--forget", is_flag=True, help="Erase the record instead of marking it removed.")
@click.pass_obj
@handled
def subscribers_remove(state: State, email: str, forget: bool) -> None:
    """Take a subscriber off the list."""
    from ..state import subscribers

    with state.engine().begin() as conn:
        found = subscribers.remove(conn, email, _now(), forget=forget)
    if not found:
        raise UsageError(f"{email} is not on the list")
    console.out.print(f"{email}: {'erased' if forget else 'removed'}.")


@subscribers_group.command("set")
@click.argument("email")
@click.option("--frequency", help="daily or weekly (as [schedule] frequencies offers).")
@click.option("--timezone", help='Their IANA time zone, like "Asia/Kolkata".')
@click.pass_obj
@handled
def subscribers_set(state: State, email: str, frequency: str | None, timezone: str | None) -> None:
    """Set how often, and in which time zone, a subscriber gets the edition."""
    from .. import schedule
    from ..state import subscribers

    if frequency is None and timezone is None:
        raise UsageError("say what to set: --frequency daily|weekly, --timezone ZONE, or both")
    cadence = schedule.cadence_of(state.config)
    frequency = schedule.checked_frequency(frequency, cadence.frequencies) if frequency else None
    timezone = schedule.checked_zone(timezone) if timezone else None
    with state.engine().begin() as conn:
        found = subscribers.get(conn, email)
        if found is None:
            raise UsageError(f"{email} is not on the list (add them: digest subscribers add)")
        subscribers.set_cadence(conn, found.id, _now(), frequency=frequency, timezone=timezone)
        now = subscribers.get_by_id(conn, found.id)
    assert now is not None
    hour = state.config.schedule.cron
    console.out.print(
        f"{now.email}: {cadence.frequency(now.frequency)}, at the schedule's hour "
        f"({hour!r}) in {cadence.zone(now.timezone)}."
    )


@subscribers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (keys: README).")
@click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriberStatus]),
    help="Only the subscribers with this status.",
)
@click.pass_obj
@handled
def subscribers_list(state: State, as_json: bool, status: str | None) -> None:
    """List subscribers."""
    from ..state import subscribers

    with state.engine().connect() as conn:
        rows = list(subscribers.all_subscribers(conn, status))
    if as_json:
        console.print_json([s.as_json() for s in rows])
        return
    console.records(
        ["email", "name", "status", "since"],
        [[s.email, s.name or "", str(s.status), f"{s.created_at:%Y-%m-%d}"] for s in rows],
    )
    console.out.print(f"[dim]{console.plural(len(rows), 'subscriber')}[/dim]", markup=True)


@subscribers_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resubscribe", is_flag=True, help="Also re-add addresses that unsubscribed.")
@click.pass_obj
@handled
def subscribers_import(state: State, file: Path, resubscribe: bool) -> None:
    """Import subscribers from a CSV file with an email,name header (and optionally
    frequency and timezone columns)."""
    from ..state import subscribers

    text = subscribers.read_file(file)
    with state.engine().begin() as conn:
        report = subscribers.import_csv(
            conn,
            text,
            _now(),
            resubscribe=resubscribe,
            rules=state.config.delivery.address_rules,
            frequencies=state.config.schedule.frequencies,
        )
    for line, why in report.rejected:
        console.err.print(f"{file}:{line}: rejected: {why}")
    for line, why in report.refused:
        console.err.print(f"{file}:{line}: skipped: {why}")
    for line, what in report.changed:
        console.out.print(f"{file}:{line}: updated {what}")
    if report.updated > len(report.changed):
        console.out.print(f"… and {report.updated - len(report.changed):,} more updated")
    console.out.print(
        f"{report.added} added, {report.updated} updated, "
        f"{report.unchanged} already there, {len(report.refused)} unsubscribed "
        f"(skipped), {len(report.rejected)} rejected."
    )
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@subscribers_group.command("export")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of stdout.",
)
@click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriberStatus]),
    help="Only the subscribers with this status.",
)
@click.pass_obj
@handled
def subscribers_export(state: State, out_path: Path | None, status: str | None) -> None:
    """Export subscribers as CSV."""
    from ..state import permissions, subscribers

    with state.engine().connect() as conn:
        if out_path is None:
            subscribers.export_csv(conn, sys.stdout, status)
            return
        with permissions.open_private(out_path) as f:  # the whole list: owner-only
            n = subscribers.export_csv(conn, f, status)
    console.err.print(f"{n} subscribers written to {out_path}")


# -- feeds and the database ---------------------------------------------------------------


@main.group(invoke_without_command=True)
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


@main.group(name="db")
def db_group() -> None:
    """The database schema."""


@db_group.command("upgrade")
@click.pass_obj
@handled
def db_upgrade(state: State) -> None:
    """Bring the schema up to date (back the database up first)."""
    from ..state import db

    engine = db.connect(state.config.storage_url, auto_upgrade=True)
    try:
        console.out.print(f"schema at {db.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("status")
@click.pass_obj
@handled
def db_status(state: State) -> None:
    """Show the schema revision and what this version needs."""
    from ..state import db

    engine = db.open_engine(state.config.storage_url)
    try:
        console.out.print(
            f"database: {engine.url!r}\nschema: {db.current_revision(engine) or 'none'}"
            f"\nneeded: {db.head_revision()}"
        )
    finally:
        engine.dispose()


# -- send-test ----------------------------------------------------------------------------


@main.command("send-test")
@click.argument("email")
@click.option(
    "--sample", "use_sample", is_flag=True, help="The sample edition instead of the feeds."
)
@click.pass_obj
@handled
def send_test(state: State, email: str, use_sample: bool) -> None:
    """Send the next edition to one address, marked as a test; nothing is recorded."""
    from .. import pipeline
    from ..mail.addresses import normalize
    from . import previews

    config = state.config
    address = normalize(email, config.delivery.address_rules)
    services = pipeline.build(config, engine=state.engine(), readonly=True)
    upcoming = previews.next_edition(services, use_sample)
    composed = services.renderer.compose(upcoming.edition_id, upcoming.selection, _now())
    sent = previews.send_test(services.backend, composed, address)
    if sent.rejected:
        raise DeliveryError(f"{address} was refused: {'; '.join(sent.rejected.values())}")
    what = "the sample edition" if use_sample else f"edition {composed.edition_id}"
    if upcoming.selection.empty and not use_sample:
        what += " (nothing new in the feeds: --sample sends the sample edition)"
    console.out.print(
        f"Test of {what} sent to {address} via {config.delivery.backend}"
        f"{f' ({sent.provider_id})' if sent.provider_id else ''}: subject "
        f"{'[TEST] ' + composed.subject!r}. Its unsubscribe and preferences links are "
        "not real; nothing was recorded."
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


@main.command(name="schedule")
@click.option("--count", "-n", default=5, show_default=True, help="How many fire times.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@handled
def schedule_command(state: State, count: int, as_json: bool) -> None:
    """The next fire times (in the configured zone and in UTC), the last edition, and
    what `digest serve` would do if started now."""
    from zoneinfo import ZoneInfo

    from .. import schedule, scheduler

    plan = schedule.schedule_of(state.config)
    with state.engine().connect() as conn:
        ahead = scheduler.outlook(conn, plan, _now(), count)
    times, last, sent, decision = ahead.times, ahead.last, ahead.last_sent, ahead.decision
    groups, releases = ahead.groups, ahead.releases
    if as_json:
        console.print_json(
            {
                "cron": plan.cron,
                "timezone": plan.timezone,
                "catch_up_seconds": int(plan.catch_up.total_seconds()),
                "next": [console.moment(t, plan.zone) for t in times],
                "last_edition": None
                if last is None
                else {
                    "id": last.id,
                    "created_at": last.created_at.isoformat(),
                    "status": last.status,
                    "recipients": last.recipients,
                    "delivered": last.delivered,
                    "slot": last.slot.isoformat() if last.slot else None,
                },
                "last_sent": sent.isoformat() if sent else None,
                "now": {"action": str(decision.action), "reason": decision.reason},
                "zone_groups": [
                    {
                        "zone": zone,
                        "subscribers": groups[zone],
                        "next": console.moment(releases[zone], ZoneInfo(zone)),
                    }
                    for zone in releases
                ],
            }
        )
        return
    from ..durations import format_duration

    console.out.print(
        f"Schedule: {plan.cron!r} in {plan.timezone}, catch-up window "
        f"{format_duration(plan.catch_up)}"
    )
    console.out.print(f"Next {len(times)} edition time(s):")
    for t in times:
        console.out.print(f"  {plan.local(t):<28} {t:%a %Y-%m-%d %H:%M} UTC")
    if last is None:
        console.out.print("Last edition: none yet.")
    else:
        console.out.print(
            f"Last edition: {last.id}, made {plan.local(last.created_at)} "
            f"({last.created_at:%Y-%m-%d %H:%M} UTC), {last.status}, "
            f"{last.delivered}/{last.recipients} delivered"
        )
    if releases:
        console.out.print("Next delivery hour per zone group (subscribers):")
        for zone, at in releases.items():
            console.out.print(
                f"  {zone:<24} {at.astimezone(ZoneInfo(zone)):%a %Y-%m-%d %H:%M %Z}  "
                f"{at:%a %H:%M} UTC  ({groups[zone]})"
            )
    verb = {"run": "would send now", "resume": "would resume", "skip": "would wait"}
    console.out.print(f"Started now, digest serve {verb[str(decision.action)]}: {decision.reason}.")


# The commands in their own modules join the group here (they import this module).
from . import feedlist, init, overview  # noqa: E402, F401
