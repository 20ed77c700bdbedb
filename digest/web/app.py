"""The subscriber-facing web app (Starlette): unsubscribe, preferences, sign-up, archive,
SendGrid's event webhook and a health check. ``docs/web.md`` lists every endpoint.

Handlers are thin: they read the request, call ``work.py`` in a worker thread (the
database is synchronous), which calls the modules that decide (``signup``,
``webhook``, ``archive``, ``subscribers``), and render a small page from
``templates/web/``. Links that act on a
subscriber carry signed tokens (``tokens.py``); a page reached through one is never
cached, never indexed and never sends a Referer, so the token stays in the mail.
"""

from __future__ import annotations

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
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from .. import subscribers, tokens
from ..personal import Skips
from ..render import default_templates_dir
from ..tokens import Signer
from . import signup, webhook, work
from .limits import RateLimiter

log = logging.getLogger(__name__)

ONE_CLICK = "List-Unsubscribe=One-Click"
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
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
    per_ip: RateLimiter = field(
        default_factory=lambda: RateLimiter(signup.PER_IP, signup.PER_IP_WINDOW)
    )

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
        body = self.html.get_template(template).render(
            title=self.settings.title,
            url=self.url,
            postal_address=self.settings.postal_address,
            archive=self.settings.archive,
            **context,
        )
        return HTMLResponse(body, status, headers=_headers(PAGE_CSP, private, headers))

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


MAX_FORM = 64 * 1024


def _too_large(request: Request, limit: int) -> bool:
    try:
        return int(request.headers.get("content-length", "0")) > limit
    except ValueError:
        return True


async def _form(request: Request) -> dict[str, str]:
    """The posted form (urlencoded or multipart), as strings; {} when unreadable or
    larger than any form of ours could be."""
    if _too_large(request, MAX_FORM):
        return {}
    try:
        form = await request.form(max_files=0, max_fields=100)
    except Exception:  # a malformed body is a bad request, never a traceback
        return {}
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- handlers -----------------------------------------------------------------------------


def routes(web: Web) -> list[Route]:
    async def home(request: Request) -> Response:
        return await subscribe(request)

    async def subscribe(request: Request) -> Response:
        now = web.clock()
        if request.method == "GET":
            return web.page(
                "subscribe.html.j2", private=False, stamp=signup.form_stamp(web.signer, now)
            )
        form = await _form(request)
        email, name = form.get("email", "").strip(), form.get("name", "").strip() or None
        if form.get("website"):  # the honeypot: people never see it, bots fill it
            log.info("sign-up ignored: the honeypot field was filled")
            return web.page("subscribe_sent.html.j2")
        if not signup.stamp_ok(web.signer, form.get("stamp", ""), now):
            return web.page(
                "subscribe.html.j2",
                400,
                private=False,
                stamp=signup.form_stamp(web.signer, now),
                email=email,
                problem="The form had expired. Please send it again.",
            )
        wait = web.per_ip.hit(_client_ip(request))
        if wait is not None:
            return web.page(
                "error.html.j2",
                429,
                headers={"Retry-After": str(int(wait) + 1)},
                heading="Too many sign-ups",
                message="Too many sign-ups came from your network. Please try again in "
                f"{int(wait // 60) + 1} minutes.",
            )
        result = await run_in_threadpool(work.subscribe, web, email, name, _client_ip(request), now)
        if result.outcome is signup.Outcome.INVALID:
            return web.page(
                "subscribe.html.j2",
                400,
                private=False,
                stamp=signup.form_stamp(web.signer, now),
                email=email,
                problem=result.message,
            )
        if result.outcome is signup.Outcome.FAILED:
            return web.error(503, "Please try again later", result.message)
        return web.page("subscribe_sent.html.j2")

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        s = await run_in_threadpool(web.confirming, token)
        if s is None:
            return web.error(
                400,
                "This confirmation link does not work",
                "It is incomplete or older than "
                f"{signup.CONFIRM_MAX_AGE.days} days. Please sign up again.",
            )
        if s.status == subscribers.SUPPRESSED:
            return web.error(
                400,
                "This address cannot be subscribed",
                "Mail to it bounced or was reported as spam. Please write to the sender.",
            )
        if request.method == "GET":
            if s.status in (subscribers.ACTIVE, subscribers.PAUSED):
                return web.page("confirmed.html.j2", email=s.email, manage=web.manage_token(s))
            return web.page("confirm.html.j2", email=s.email)
        await run_in_threadpool(work.confirm, web, s)
        log.info("subscriber %s confirmed", s.id)
        return web.page("confirmed.html.j2", email=s.email, manage=web.manage_token(s))

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        s = await run_in_threadpool(web.holder, token)
        if s is None:
            return web.bad_link()
        if request.method == "GET":  # never acts: link scanners follow links
            return web.page("unsubscribe.html.j2", subscriber=s, token=token)
        body = b"" if _too_large(request, MAX_FORM) else await request.body()  # first:
        form = await _form(request)  # the form is then parsed from the kept body
        if form.get("List-Unsubscribe") != "One-Click" and ONE_CLICK.encode() not in body:
            return web.error(
                400, "Not unsubscribed", "The request did not ask to unsubscribe (RFC 8058)."
            )
        reason = (
            "unsubscribed on the web page"
            if form.get("via") == "page"
            else "one-click unsubscribe from the mail program (RFC 8058)"
        )
        changed = await run_in_threadpool(work.unsubscribe, web, s, reason)
        if changed:
            log.info("subscriber %s unsubscribed: %s", s.id, reason)
        return web.page("unsubscribed.html.j2", subscriber=s, token=token)

    async def resubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        s = await run_in_threadpool(web.holder, token)
        if s is None:
            return web.bad_link()
        if s.status != subscribers.UNSUBSCRIBED:  # suppressed, removed by the operator
            return web.error(
                400,
                "This address cannot be subscribed again here",
                "Please sign up again with the form, or write to the sender.",
            )
        await run_in_threadpool(work.resubscribe, web, s)
        log.info("subscriber %s resubscribed", s.id)
        return RedirectResponse(web.url(f"/preferences/{token}?done=resubscribed"), 303)

    async def preferences(request: Request) -> Response:
        token = request.path_params["token"]
        s = await run_in_threadpool(web.holder, token)
        if s is None:
            return web.bad_link()
        if request.method == "POST":
            if _too_large(request, MAX_FORM):
                return web.error(413, "Too large", "That is more than this form sends.")
            form = await request.form(max_files=0)
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
            done=request.query_params.get("done", ""),
        )

    async def help_page(request: Request) -> Response:
        return web.page("manage_help.html.j2", private=False)

    async def archive_list(request: Request) -> Response:
        if not web.settings.archive:
            raise HTTPException(404)
        try:
            number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            number = 1
        editions, more = await run_in_threadpool(work.listing, web, number)
        return web.page("archive.html.j2", private=False, editions=editions, page=number, more=more)

    async def archive_edition(request: Request) -> Response:
        if not web.settings.archive:
            raise HTTPException(404)
        html = await run_in_threadpool(work.edition, web, request.path_params["id"])
        if html is None:
            raise HTTPException(404)
        return HTMLResponse(html, headers=_headers(ARCHIVE_CSP, private=False))

    async def archive_feed(request: Request) -> Response:
        if not web.settings.archive:
            raise HTTPException(404)
        xml = await run_in_threadpool(work.atom, web)
        return Response(xml, media_type="application/atom+xml; charset=utf-8")

    async def sendgrid_webhook(request: Request) -> Response:
        if _too_large(request, webhook.MAX_BODY):
            return JSONResponse({"error": "too large"}, 413)
        body = await request.body()
        if len(body) > webhook.MAX_BODY:
            return JSONResponse({"error": "too large"}, 413)
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
        except webhook.Rejected as exc:
            log.warning("SendGrid webhook refused (%s): %s", exc.status, exc.reason)
            return JSONResponse({"error": exc.reason}, exc.status)
        handled = await run_in_threadpool(work.record, web, events)
        log.info(
            "SendGrid webhook: %s events, %s new, %s repeated, %s suppressed, %s unsubscribed",
            handled.received,
            handled.recorded,
            handled.duplicates,
            handled.suppressed,
            handled.unsubscribed,
        )
        return JSONResponse(vars(handled))

    async def healthz(request: Request) -> Response:
        status = await run_in_threadpool(work.health, web)
        return JSONResponse(status, 200 if status["ok"] else 503)

    both = ["GET", "POST"]
    return [
        Route("/", home),
        Route("/subscribe", subscribe, methods=both),
        Route("/confirm/{token}", confirm, methods=both),
        Route("/unsubscribe", help_page),
        Route("/preferences", help_page),
        Route("/unsubscribe/{token}", unsubscribe, methods=both),
        Route("/resubscribe/{token}", resubscribe, methods=["POST"]),
        Route("/preferences/{token}", preferences, methods=both),
        Route("/archive", archive_list),
        Route("/archive/feed.xml", archive_feed),
        Route("/archive/{id:int}", archive_edition),
        Route("/webhooks/sendgrid", sendgrid_webhook, methods=["POST"]),
        Route("/healthz", healthz),
    ]


# -- the app ------------------------------------------------------------------------------


def create_app(web: Web) -> Starlette:
    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        if code == 405:
            return web.error(405, "Not allowed", "This page does not accept that request.")
        return web.error(404, "Not found", "There is no page here.")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error answering %s %s", request.method, request.url.path)
        return web.error(500, "Something went wrong", "Please try again in a moment.")

    inner = routes(web)
    prefix = web.settings.prefix
    health = next(r for r in inner if r.path == "/healthz")  # also at the root, for supervisors
    mounted: list[Any] = [Mount(prefix, routes=inner), Route("/healthz", health.endpoint)]
    return Starlette(
        routes=mounted if prefix else inner,
        exception_handlers={HTTPException: not_found, Exception: server_error},
    )
