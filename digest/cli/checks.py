"""``digest check``: the config and the templates validated; with ``--online`` every
feed fetched and the delivery login tried, with ``--deliverability`` the SPF, DKIM and
DMARC records of digest.from's domain looked up (``deliver/dnscheck.py``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from ..clock import utcnow as _now
from ..config import Config, warnings_for
from ..errors import DeliveryError, RenderError, UsageError
from . import console
from .base import EXIT_FAILED, EXIT_USAGE, State, handled

if TYPE_CHECKING:  # imported by the command when it runs: --help stays quick
    from ..services import Services


@click.command()
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
