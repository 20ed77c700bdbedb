"""``digest preview --serve``: the next edition on 127.0.0.1, rendered again on every reload.

The feeds are read once, when the server starts; the config and the templates are read
again on every request, so an operator can edit a template (or the ``[email]``
section) and refresh the browser. A broken template or config shows its error, with
the file and line, in place of the page. Nothing is sent or recorded.

Routes: ``/`` the HTML part, ``/text`` the subject and the plain-text part.

``explain`` says why each story of the next edition is where it is (``preview --explain``).
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import pipeline, rank
from ..config import load_config
from ..deliver.base import Backend, Sent
from ..errors import DigestError
from ..mail.markers import personalize
from ..model import Batch, Composed, FeedReport, Placed, Recipient, Score, Selection
from ..render import sample
from ..render.edition import Renderer
from ..services import Services, render_settings
from ..state import record

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One edition as a reader would get it (personalized with stand-in values)."""

    subject: str
    html: str
    text: str


Render = Callable[[], Rendered]


def error_page(exc: Exception) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>digest preview: error</title></head>"
        '<body style="font-family:system-ui,sans-serif;max-width:720px;margin:40px auto;'
        'padding:0 16px;line-height:1.5">'
        '<h1 style="color:#b42318;font-size:22px">The edition could not be rendered</h1>'
        '<pre style="white-space:pre-wrap;background:#f6f6f6;padding:12px;border-radius:6px">'
        f"{html.escape(str(exc))}</pre>"
        "<p>Fix it and reload this page.</p></body></html>"
    )


def handler(render: Render) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "digest-preview"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in ("/", "/text"):
                self._send(404, "text/plain", "not found: try / or /text\n")
                return
            try:
                page = render()
            except DigestError as exc:
                if path == "/text":
                    self._send(500, "text/plain", f"error: {exc}\n")
                else:
                    self._send(500, "text/html", error_page(exc))
                return
            if path == "/text":
                self._send(200, "text/plain", f"Subject: {page.subject}\n\n{page.text}")
            else:
                self._send(200, "text/html", page.html)

        def _send(self, status: int, kind: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.info("%s %s", self.address_string(), format % args)

    return Handler


def server(render: Render, port: int = 8025, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free one); call ``serve_forever``."""
    httpd = ThreadingHTTPServer((host, port), handler(render))
    httpd.daemon_threads = True
    return httpd


def serve_in_thread(httpd: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return thread


# -- what the preview and send-test commands show -----------------------------------------


@dataclass(frozen=True, slots=True)
class Next:
    """The next edition, as it would be made now: nothing written anywhere."""

    edition_id: int
    selection: Selection
    reports: tuple[FeedReport, ...] = ()  # the feeds read (none for the sample)


def next_edition(services: Services, use_sample: bool = False) -> Next:
    """What is new in the feeds now (or the sample edition), and the id it would get."""
    with services.engine.connect() as conn:
        edition_id = record.next_edition_id(conn)
    if use_sample:
        return Next(edition_id, sample.selection(services.clock()))
    gathered = pipeline.gather(services, pipeline.NoProgress(), dry_run=True)
    return Next(edition_id, gathered.selection, gathered.reports)


def explain(upcoming: Next) -> str:
    """Why each story of ``upcoming`` is where it is: ``digest preview --explain``.

    One block per story, best first: its place, its score factor by factor
    (``rank.score``), its sources and the reason for its place, in words."""
    selection = upcoming.selection
    if not selection.ranking:
        if selection.empty:
            return f"Edition {upcoming.edition_id}: nothing new, nothing to rank.\n"
        return f"Edition {upcoming.edition_id}: the sample edition is fixed, not ranked.\n"
    also = len(selection.recorded) - len(selection.entries)
    lines = [
        f"Edition {upcoming.edition_id}: {len(selection.entries)} stories "
        f"({len(selection.items)} in full, {len(selection.more)} headlines), "
        f'{also} more entries shown as "Also in".',
        f"score = sources × weight × recency × flood: recency halves every "
        f"{rank.HALF_LIFE_HOURS:g} h of age (an undated entry: from when digest first saw "
        f"it, × {rank.UNDATED:g}); flood × {rank.FLOOD:g} for each story of the same feed "
        "ranked above.",
        "",
    ]
    for number, placed in enumerate(selection.ranking, 1):
        lines += _explained(number, placed)
    return "\n".join(lines) + "\n"


def _explained(number: int, placed: Placed) -> list[str]:
    entry, score = placed.entry, placed.score
    age = (
        f"{score.age_hours:g} h old"
        if entry.dated
        else f"undated, first seen {score.age_hours:g} h ago"
    )
    sources = entry.source_title
    if entry.also:
        sources += "; also in " + ", ".join(e.source_title for e in entry.also)
    return [
        f"{number:>3}. {placed.place.value.upper():<8} {entry.title}",
        f"     from {sources}",
        f"     score {_value(score)} = {score.sources} source{'s' if score.sources > 1 else ''}"
        f" × weight {score.weight:g} × recency {score.recency:.3g} ({age})"
        f" × flood {score.flood:.3g}",
        f"     why: {placed.reason}",
    ]


def _value(score: Score) -> str:
    """A score as a number, or as a power of e when too small to show."""
    return f"{score.value:.3f}" if score.value >= 0.001 else f"e^{score.log:.1f}"


@dataclass(frozen=True, slots=True)
class AsSent:
    """An edition as it went out, personalized for a stand-in subscriber."""

    edition_id: int
    created: datetime
    page: Rendered


def last_sent(services: Services, base_url: str) -> AsSent | None:
    """The latest edition that went out, as a sample subscriber got it (what ``digest
    preview`` shows when nothing is new since, instead of an empty edition)."""
    with services.engine.connect() as conn:
        edition_id = record.last_sent_id(conn)
        if edition_id is None:
            return None
        composed = record.load_composed(conn, edition_id)
    html_part, text_part = personalize(composed, sample_values(base_url))
    return AsSent(edition_id, composed.created, Rendered(composed.subject, html_part, text_part))


def fixed(page: Rendered) -> Render:
    """A render that always shows ``page`` (an edition as it was sent)."""
    return lambda: page


def live(
    config_path: str | os.PathLike[str] | None, upcoming: Next, clock: Callable[[], datetime]
) -> Render:
    """Render ``upcoming`` with the config and templates as they are at each call."""

    def render() -> Rendered:
        config = load_config(config_path)
        renderer = Renderer(render_settings(config))
        composed = renderer.compose(upcoming.edition_id, upcoming.selection, clock())
        html_part, text_part = personalize(composed, sample_values(config.digest.base_url))
        return Rendered(composed.subject, html_part, text_part)

    return render


def sample_values(base_url: str) -> dict[str, str]:
    """Stand-in personal values for previews: links that go nowhere personal."""
    return {
        "unsubscribe_url": f"{base_url}/unsubscribe/preview",
        "preferences_url": f"{base_url}/preferences/preview",
        "email": "reader@example.org",
        "name": "Reader",
    }


def send_test(backend: Backend, composed: Composed, address: str) -> Sent:
    """Send ``composed`` to one address through ``backend``, marked as a test (``[TEST]``
    subject, its own Message-ID). Nothing is recorded: no edition, no delivery."""
    sender = backend.open(replace(composed, test=True))
    try:
        return sender.send(Batch(composed.edition_id, 0, (Recipient(0, address),)))
    finally:
        sender.close()
