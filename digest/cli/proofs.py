"""``digest preview`` and ``digest send-test``: the next edition as a proof, rendered
here (a file, the plain text, or served on 127.0.0.1) or sent to one address, marked as
a test; nothing is recorded. ``previews.py`` does the work, imported when they run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ..clock import utcnow as _now
from ..errors import DeliveryError, UsageError
from . import console
from .base import State, handled


@click.command()
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


@click.command("send-test")
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
