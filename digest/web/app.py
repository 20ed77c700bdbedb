"""The subscriber-facing web app (Starlette): unsubscribe, preferences, sign-up, archive,
SendGrid's event webhook and a health check. ``docs/web.md`` lists every endpoint.

Handlers are thin: they read the request, call ``work.py`` in a worker thread (the
database is synchronous), which calls the modules that decide (``signup``,
``webhook``, ``archive``, ``subscribers``), and render a small page from
``templates/web/``. What holds on every route (only POST acts, bodies bounded by the
bytes read, security headers on every response) is ``guard.Guard``, in front of it
all. Links that act on a subscriber carry signed tokens (``tokens.py``); a page
reached through one is never cached, never indexed and never sends a Referer, so the
token stays in the mail.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from python_multipart.exceptions import FormParserError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Scope

from ..errors import UsageError, WebhookRejected
from ..model import SubscriberStatus
from ..personal import Skips
from ..render.edition import default_templates_dir
from ..reputation import Thresholds
from ..schedule import FREQUENCIES, Cadence, zone_names
from ..state import subscribers, tokens
from ..state.db.schema import MAX_ID
from ..state.tokens import Signer
from . import signup, webhook, work
from .guard import Guard

log = logging.getLogger(__name__)

ONE_CLICK = "List-Unsubscribe=One-Click"
#: The pages' only script: the time zone field takes the browser's zone when empty (the
#: page works without it). Allowed by its hash, so no other script can run.
ZONE_SCRIPT = (
    "(function(){var f=document.getElementById('timezone');if(!f||f.value)return;var z;"
    "try{z=Intl.DateTimeFormat().resolvedOptions().timeZone}catch(e){return}"
    "var l=document.getElementById('zones');"
    "for(var i=0;l&&i<l.options.length;i++){if(l.options[i].value===z){f.value=z;return}}})();"
)
_ZONE_HASH = base64.b64encode(hashlib.sha256(ZONE_SCRIPT.encode()).digest()).decode()
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    f"script-src 'sha256-{_ZONE_HASH}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True, slots=True)
class Topic:
    """Something a subscriber can choose not to receive: a category, or a feed."""

    kind: str  # "category" | "feed"
    value: str  # the category's name, or the feed's URL
    label: str


@dataclass(frozen=True)
class WebSettings:
    title: str
    base_url: str
    postal_address: str
    timezone: str = "UTC"
    archive: bool = True
    public_key: ec.EllipticCurvePublicKey | None = None
    webhook_max_age: timedelta = timedelta(minutes=10)
    topics: tuple[Topic, ...] = ()
    max_confirmations_per_hour: int = 100
    #: The complaint and bounce breaker's limits: /healthz says when it holds.
    thresholds: Thresholds = Thresholds()
    #: What subscribers may choose of how often (``schedule.frequencies``), and the day.
    frequencies: tuple[str, ...] = FREQUENCIES
    weekly_day: str = "monday"

    @property
    def prefix(self) -> str:
        """The path of ``base_url`` ("" or like "/digest"): the app serves under it."""
        return urlsplit(self.base_url).path.rstrip("/")


@dataclass
class Web:
    """What the handlers work with."""

    settings: WebSettings
    engine: sa.Engine
    signer: Signer
    mailer: signup.Mailer
    clock: Callable[[], datetime]
    health: Callable[[], dict[str, Any]] = field(default=lambda: {})
    followups: work.Followups = field(default_factory=work.Followups)

    def __post_init__(self) -> None:
        loader = jinja2.FileSystemLoader(str(default_templates_dir() / "web"))
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
        }
        self.html = jinja2.Environment(autoescape=True, **common)
        self.text = jinja2.Environment(autoescape=False, keep_trailing_newline=True, **common)
        zone = ZoneInfo(self.settings.timezone)
        self.html.filters["localdate"] = lambda d: f"{d.astimezone(zone):%Y-%m-%d}"

    # -- rendering ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.settings.prefix + path

    def page(
        self,
        template: str,
        status: int = 200,
        *,
        private: bool = True,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        sent = _headers(PAGE_CSP, private, headers)
        body = self.html.get_template(template).render(
            title=self.settings.title,
            zone_script=ZONE_SCRIPT,
            zones=zone_names(),
            frequencies=self.settings.frequencies,
            weekly_day=self.settings.weekly_day.capitalize(),
            default_zone=self.settings.timezone,
            url=self.url,
            postal_address=self.settings.postal_address,
            archive=self.settings.archive,
            referrer_policy=sent["Referrer-Policy"],  # the page's <meta> says the same
            **context,
        )
        return HTMLResponse(body, status, headers=sent)

    def error(self, status: int, heading: str, message: str) -> HTMLResponse:
        return self.page("error.html.j2", status, heading=heading, message=message)

    # -- tokens ---------------------------------------------------------------------------

    def holder(self, token: str) -> subscribers.Subscriber | None:
        """The subscriber a manage token names, if the token is genuine."""
        s = self._named(token)
        return s if s is not None and self.signer.verify(token, s.id, s.email) else None

    def confirming(self, token: str) -> subscribers.Subscriber | None:
        """The subscriber a confirmation token names, if genuine and not expired."""
        s = self._named(token)
        max_age = signup.CONFIRM_MAX_AGE.total_seconds()
        now = self.clock().timestamp()
        if s is None or not self.signer.verify_timed(token, s.id, s.email, "confirm", max_age, now):
            return None
        return s

    def _named(self, token: str) -> subscribers.Subscriber | None:
        """The subscriber a token names (not yet verified)."""
        subscriber_id = tokens.subscriber_id(token)
        if subscriber_id is None:
            return None
        with self.engine.connect() as conn:
            return subscribers.get_by_id(conn, subscriber_id)

    def bad_link(self) -> HTMLResponse:
        return self.error(
            400,
            "This link does not work",
            "The link is incomplete, was changed, or has expired. Use the link in the most "
            "recent mail you received from us; copying it in full may help.",
        )

    def manage_token(self, s: subscribers.Subscriber) -> str:
        return self.signer.token(s.id, s.email)

    def mail(self, kind: str, **context: Any) -> signup.Mail:
        values = {
            "title": self.settings.title,
            "postal_address": self.settings.postal_address,
            "base_url": self.settings.base_url,
            **context,
        }
        subject = (
            f"Confirm your subscription to {self.settings.title}"
            if kind == "confirm"
            else f"You are already subscribed to {self.settings.title}"
        )
        return signup.Mail(
            subject=subject,
            text=self.text.get_template(f"mail_{kind}.txt.j2").render(values),
            html=self.html.get_template(f"mail_{kind}.html.j2").render(values),
        )


def _headers(csp: str, private: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    if private:
        out["Cache-Control"] = "no-store"
        out["X-Robots-Tag"] = "noindex, nofollow"
    if extra:
        out.update(extra)
    return out


MAX_FORM = 64 * 1024  # bytes: far more than any form of ours sends
MAX_FIELDS = 1000
#: The sign-up form's page lets the browser send its origin with the form (``Origin``
#: is ``null`` under ``no-referrer``), which ``signup.same_site`` checks.
FORM_HEADERS = {"Referrer-Policy": "same-origin"}
CROSS_SITE = (
    "This sign-up came from another web site. Open the sign-up page and send the form from there."
)


async def _form(request: Request) -> FormData:
    """The posted form (urlencoded or multipart); a 400 when it cannot be read: malformed,
    a file in it, or more than ``MAX_FIELDS`` fields. (The body is complete and at most
    ``MAX_FORM`` bytes: ``guard.Guard`` read it.)"""
    try:
        return await request.form(max_files=0, max_fields=MAX_FIELDS)
    except (HTTPException, FormParserError, ValueError) as exc:
        raise HTTPException(400, "The form could not be read.") from exc


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _number(text: str) -> int | None:
    """A positive id or page number from a URL, or None (also beyond any id we store)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    n = int(text)
    return n if 0 < n <= MAX_ID else None


# -- handlers -----------------------------------------------------------------------------
#
# Each reads what it works with from the app (``request.app.state.web``). Only POST
# acts. Handlers never see HEAD (``guard.Guard`` turns it into a GET), and each one that
# acts checks ``request.method == "POST"`` itself as well.


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def _form_page(web: Web, status: int = 200, **context: Any) -> HTMLResponse:
    stamp = signup.form_stamp(web.signer, web.clock())
    offered = web.settings.frequencies
    context.setdefault("chosen_frequency", "daily" if "daily" in offered else offered[0])
    context.setdefault("chosen_zone", "")
    return web.page(
        "subscribe.html.j2", status, private=False, headers=FORM_HEADERS, stamp=stamp, **context
    )


def _later(web: Web, status: int, heading: str, why: str, wait: float) -> HTMLResponse:
    return web.page(
        "error.html.j2",
        status,
        headers={"Retry-After": str(int(wait) + 1)},
        heading=heading,
        message=f"{why} Please try again in {int(wait // 60) + 1} minutes.",
    )


async def home(request: Request) -> Response:
    return await subscribe(request)


async def subscribe(request: Request) -> Response:
    web = _web(request)
    now = web.clock()
    if request.method != "POST":
        return _form_page(web)
    headers = request.headers
    if not signup.same_site(
        headers.get("origin"),
        headers.get("referer"),
        headers.get("sec-fetch-site"),
        web.settings.base_url,
    ):
        log.info("sign-up refused: posted from another site")
        return web.error(403, "Please use the form on this site", CROSS_SITE)
    form = await _form(request)
    email, name = _field(form, "email").strip(), _field(form, "name").strip() or None
    if _field(form, "website"):  # the honeypot: people never see it, bots fill it
        log.info("sign-up ignored: the honeypot field was filled")
        return web.page("subscribe_sent.html.j2")
    if not signup.stamp_ok(web.signer, _field(form, "stamp"), now):
        return _form_page(
            web, 400, email=email, problem="The form had expired. Please send it again."
        )
    try:
        frequency, timezone = work.chosen_cadence(web, form)
    except UsageError as exc:
        return _form_page(
            web,
            400,
            email=email,
            problem=str(exc),
            chosen_frequency=_field(form, "frequency"),
            chosen_zone=_field(form, "timezone")[:64],
        )
    result = await run_in_threadpool(
        work.subscribe, web, email, name, _client_ip(request), now, frequency, timezone
    )
    match result.outcome:
        case signup.Outcome.INVALID:
            return _form_page(web, 400, email=email, problem=result.message)
        case signup.Outcome.LIMITED:
            why = "Too many sign-ups came from your network."
            return _later(web, 429, "Too many sign-ups", why, result.wait)
        case signup.Outcome.BUSY:
            why = "We have sent as many confirmation mails as we can this hour."
            return _later(web, 503, "Please try again later", why, result.wait)
    return web.page("subscribe_sent.html.j2")  # PLANNED or QUIET: the same answer


async def confirm(request: Request) -> Response:
    web = _web(request)
    token = request.path_params["token"]
    s = await run_in_threadpool(web.confirming, token)
    if s is None:
        return web.error(
            400,
            "This confirmation link does not work",
            "It is incomplete or older than "
            f"{signup.CONFIRM_MAX_AGE.days} days. Please sign up again.",
        )
    if s.status == SubscriberStatus.SUPPRESSED:
        return web.error(
            400,
            "This address cannot be subscribed",
            "Mail to it bounced or was reported as spam. Please write to the sender.",
        )
    if request.method != "POST":
        if s.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
            return web.page("confirmed.html.j2", email=s.email, manage=web.manage_token(s))
        return web.page("confirm.html.j2", email=s.email)
    await run_in_threadpool(work.confirm, web, s)
    log.info("subscriber %s confirmed", s.id)
    return web.page("confirmed.html.j2", email=s.email, manage=web.manage_token(s))


async def unsubscribe(request: Request) -> Response:
    web = _web(request)
    token = request.path_params["token"]
    s = await run_in_threadpool(web.holder, token)
    if s is None:
        return web.bad_link()
    if request.method != "POST":  # never acts: link scanners follow links
        return web.page("unsubscribe.html.j2", subscriber=s, token=token)
    body = await request.body()
    form = await _form(request)  # parsed from the body kept
    if _field(form, "List-Unsubscribe") != "One-Click" and ONE_CLICK.encode() not in body:
        return web.error(
            400, "Not unsubscribed", "The request did not ask to unsubscribe (RFC 8058)."
        )
    reason = (
        "unsubscribed on the web page"
        if _field(form, "via") == "page"
        else "one-click unsubscribe from the mail program (RFC 8058)"
    )
    changed = await run_in_threadpool(work.unsubscribe, web, s, reason)
    if changed:
        log.info("subscriber %s unsubscribed: %s", s.id, reason)
    return web.page("unsubscribed.html.j2", subscriber=s, token=token)


async def resubscribe(request: Request) -> Response:
    web = _web(request)
    token = request.path_params["token"]
    s = await run_in_threadpool(web.holder, token)
    if s is None:
        return web.bad_link()
    if s.status != SubscriberStatus.UNSUBSCRIBED:  # suppressed, removed by the operator
        return web.error(
            400,
            "This address cannot be subscribed again here",
            "Please sign up again with the form, or write to the sender.",
        )
    await run_in_threadpool(work.resubscribe, web, s)
    log.info("subscriber %s resubscribed", s.id)
    return RedirectResponse(web.url(f"/preferences/{token}?done=resubscribed"), 303)


async def preferences(request: Request) -> Response:
    web = _web(request)
    token = request.path_params["token"]
    s = await run_in_threadpool(web.holder, token)
    if s is None:
        return web.bad_link()
    if request.method == "POST":
        form = await _form(request)
        done = await run_in_threadpool(work.preferences, web, s, form)
        return RedirectResponse(web.url(f"/preferences/{token}?done={done}"), 303)
    skips = Skips.of(s.preferences)
    topics = [
        (t, t.value not in (skips.categories if t.kind == "category" else skips.feeds))
        for t in web.settings.topics
    ]
    return web.page(
        "preferences.html.j2",
        subscriber=s,
        token=token,
        topics=topics,
        pauses=[(k, v[0]) for k, v in work.PAUSES.items()],
        chosen_frequency=Cadence(frequencies=web.settings.frequencies).frequency(s.frequency),
        chosen_zone=s.timezone or "",
        done=request.query_params.get("done", ""),
    )


async def help_page(request: Request) -> Response:
    return _web(request).page("manage_help.html.j2", private=False)


async def archive_list(request: Request) -> Response:
    web = _web(request)
    if not web.settings.archive:
        raise HTTPException(404)
    number = _number(request.query_params.get("page", "1"))
    if number is None:
        raise HTTPException(404)
    editions, more = await run_in_threadpool(work.listing, web, number)
    if not editions and number > 1:
        raise HTTPException(404)
    return web.page("archive.html.j2", private=False, editions=editions, page=number, more=more)


async def archive_edition(request: Request) -> Response:
    web = _web(request)
    edition_id = _number(request.path_params["id"])
    if not web.settings.archive or edition_id is None:
        raise HTTPException(404)
    html = await run_in_threadpool(work.edition, web, edition_id)
    if html is None:
        raise HTTPException(404)
    return HTMLResponse(html, headers=_headers(ARCHIVE_CSP, private=False))


async def archive_feed(request: Request) -> Response:
    web = _web(request)
    if not web.settings.archive:
        raise HTTPException(404)
    xml = await run_in_threadpool(work.atom, web)
    return Response(xml, media_type="application/atom+xml; charset=utf-8")


async def sendgrid_webhook(request: Request) -> Response:
    web = _web(request)
    body = await request.body()  # at most webhook.MAX_BODY: guard.Guard read it
    try:
        webhook.verify(
            web.settings.public_key,
            body,
            request.headers.get(webhook.SIGNATURE_HEADER),
            request.headers.get(webhook.TIMESTAMP_HEADER),
            web.clock(),
            web.settings.webhook_max_age,
        )
        events = webhook.parse(body)
    except WebhookRejected as exc:
        log.warning("SendGrid webhook refused (%s): %s", exc.status, exc.reason)
        return JSONResponse({"error": exc.reason}, exc.status)
    handled = await run_in_threadpool(work.record, web, events)
    log.info(
        "SendGrid webhook: %s events, %s new, %s repeated, %s ignored, %s suppressed, "
        "%s unsubscribed",
        handled.received,
        handled.recorded,
        handled.duplicates,
        handled.ignored,
        handled.suppressed,
        handled.unsubscribed,
    )
    return JSONResponse(vars(handled))


#: ``/healthz?probe=NAME``: the answer's field whose truth makes it a 200 (docs/web.md).
PROBES = ("ok", "ready", "live")


async def healthz(request: Request) -> Response:
    """200 when all is well, else 503; ``?probe=ready`` or ``?probe=live``: 200 when that
    field is true (a load balancer's or Kubernetes' probe). The same JSON either way."""
    field = request.query_params.get("probe", "ok")
    if field not in PROBES:
        return JSONResponse({"error": f"probe must be one of {', '.join(PROBES)}"}, 400)
    status = await run_in_threadpool(work.health, _web(request))
    return JSONResponse(status, 200 if status[field] else 503)


WEBHOOK = "/webhooks/sendgrid"
BOTH = ["GET", "POST"]
#: Every page, under ``digest.base_url``'s path.
ROUTES = [
    Route("/", home),
    Route("/subscribe", subscribe, methods=BOTH),
    Route("/confirm/{token}", confirm, methods=BOTH),
    Route("/unsubscribe", help_page),
    Route("/preferences", help_page),
    Route("/unsubscribe/{token}", unsubscribe, methods=BOTH),
    Route("/resubscribe/{token}", resubscribe, methods=["POST"]),
    Route("/preferences/{token}", preferences, methods=BOTH),
    Route("/archive", archive_list),
    Route("/archive/feed.xml", archive_feed),
    Route("/archive/{id}", archive_edition),
    Route(WEBHOOK, sendgrid_webhook, methods=["POST"]),
    Route("/healthz", healthz),
]
ERRORS = {
    400: ("Bad request", "This request could not be read."),
    404: ("Not found", "There is no page here."),
    405: ("Not allowed", "This page does not accept that request."),
    413: ("Too large", "That is more than this page accepts."),
}


async def http_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    code = code if code in ERRORS else 404
    heading, message = ERRORS[code]
    headers = getattr(exc, "headers", None)  # 405: Allow
    return _web(request).page(
        "error.html.j2", code, headers=headers, heading=heading, message=message
    )


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("error answering %s %s", request.method, request.url.path)
    return _web(request).error(500, "Something went wrong", "Please try again in a moment.")


# -- the app ------------------------------------------------------------------------------


class _Guarded(Starlette):
    """Starlette with ``guard.Guard`` outside everything, its error handling included."""

    guard: Callable[[ASGIApp], ASGIApp]

    def build_middleware_stack(self) -> ASGIApp:
        return self.guard(super().build_middleware_stack())


def create_app(web: Web) -> Starlette:
    """The app for ``web``: ``ROUTES`` under ``digest.base_url``'s path, and ``/healthz``
    at the root as well, for supervisors."""
    prefix = web.settings.prefix
    app = _Guarded(
        routes=[Mount(prefix, routes=ROUTES), Route("/healthz", healthz)] if prefix else ROUTES,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.web = web

    def too_large(scope: Scope) -> ASGIApp:
        if scope["path"] == web.url(WEBHOOK):
            return JSONResponse({"error": "too large"}, 413)
        return web.error(413, *ERRORS[413])

    app.guard = lambda stack: Guard(
        stack,
        headers=_headers(PAGE_CSP, private=False),
        limit=lambda path: webhook.MAX_BODY if path == web.url(WEBHOOK) else MAX_FORM,
        too_large=too_large,
    )
    return app
