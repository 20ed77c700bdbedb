"""The web app, in-process (Starlette's test client) on a real SQLite database and a real
outbox: unsubscribe, preferences, double opt-in, archive, the SendGrid webhook."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from digest import pipeline, web
from digest.state import record, subscribers
from digest.state.db import schema
from digest.state.tokens import Signer
from digest.web import signup, webhook

from .helpers import Clock, Project, add_post
from .live import live
from .web_site import NOW, Site, event, signed, text_of

# -- one-click unsubscribe ----------------------------------------------------------------


def test_one_click_post_unsubscribes_with_200_and_no_redirect(site: Site) -> None:
    token = site.token("ada@example.org")
    r = site.client.post(
        f"/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "location" not in r.headers
    ada = site.subscriber("ada@example.org")
    assert ada.status == "unsubscribed" and "RFC 8058" in (ada.reason or "")
    again = site.client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200  # idempotent


def test_one_click_as_multipart_is_accepted(site: Site) -> None:
    token = site.token("grace@example.org")
    r = site.client.post(f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert r.status_code == 200
    assert site.subscriber("grace@example.org").status == "unsubscribed"


def test_get_shows_a_button_and_never_unsubscribes(site: Site) -> None:
    token = site.token("ada@example.org")
    for _ in range(3):  # a link scanner, twice, then the person
        r = site.client.get(f"/unsubscribe/{token}")
        assert r.status_code == 200
    assert site.subscriber("ada@example.org").status == "active"
    assert '<button type="submit" class="danger">Unsubscribe</button>' in r.text
    assert 'name="List-Unsubscribe" value="One-Click"' in r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_bad_and_forged_tokens_get_a_400_page(site: Site) -> None:
    ada, grace = site.subscriber("ada@example.org"), site.subscriber("grace@example.org")
    genuine = site.token("ada@example.org")
    other_key = Signer(b"k" * 32).token(ada.id, ada.email)
    borrowed = f"{genuine.split('.')[0]}.{site.token('grace@example.org').split('.')[1]}"
    for bad in ("nonsense", "zz.zz", other_key, borrowed, genuine[:-2], "%00", "a" * 5000):
        for method in ("GET", "POST"):
            r = site.client.request(
                method, f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"}
            )
            assert r.status_code in (400, 404), (bad, method)
            assert "Traceback" not in r.text
    r = site.client.post(f"/unsubscribe/{other_key}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 400 and "This link does not work" in r.text
    assert {site.subscriber(a.email).status for a in (ada, grace)} == {"active"}


def test_post_without_the_one_click_body_does_nothing(site: Site) -> None:
    token = site.token("ada@example.org")
    r = site.client.post(f"/unsubscribe/{token}", data={"something": "else"})
    assert r.status_code == 400
    assert site.subscriber("ada@example.org").status == "active"


def test_unsubscribed_can_resubscribe_from_the_page(site: Site) -> None:
    token = site.token("ada@example.org")
    page = site.client.post(
        f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click", "via": "page"}
    )
    assert "Subscribe again" in page.text
    assert site.subscriber("ada@example.org").reason == "unsubscribed on the web page"
    r = site.client.post(f"/resubscribe/{token}")
    assert r.status_code == 303
    assert site.subscriber("ada@example.org").status == "active"


# -- preferences --------------------------------------------------------------------------


def test_preferences_store_topics_and_pause_excludes_from_editions(
    site: Site, samples: Path
) -> None:
    token = site.token("ada@example.org")
    page = site.client.get(f"/preferences/{token}")
    assert page.status_code == 200
    for label in ("Technology", "Science", "allotment-diary.rss"):
        assert label in page.text or "Allotment" in page.text
    allotment = next(t for t in site.web.settings.topics if t.kind == "feed")
    r = site.client.post(
        f"/preferences/{token}",
        data={"action": "topics", "topic": ["Technology", allotment.value]},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("done=saved")
    prefs = site.subscriber("ada@example.org").preferences
    assert prefs["skip_categories"] == ["Science"] and prefs["skip_feeds"] == []
    assert "Saved" in site.client.get(r.headers["location"]).text
    assert "Nothing is ticked" not in site.client.get(r.headers["location"]).text
    site.client.post(f"/preferences/{token}", data={"action": "topics"})  # all unticked
    assert "Nothing is ticked: no edition will reach you" in page_after(site, token)
    site.client.post(
        f"/preferences/{token}",
        data={"action": "topics", "topic": ["Technology", allotment.value]},
    )

    site.client.post(f"/preferences/{token}", data={"action": "pause", "for": "1w"})
    ada = site.subscriber("ada@example.org")
    assert ada.status == "paused" and ada.paused_until == NOW + timedelta(weeks=1)
    add_post(samples, "during-the-break")
    site.clock.now = NOW + timedelta(days=1)
    (edition,) = site.run().editions
    assert edition.recipients == 1  # grace only
    # the break ends by itself
    add_post(samples, "after-the-break")
    site.clock.now = NOW + timedelta(days=8)
    (edition,) = site.run().editions
    assert edition.recipients == 2 and site.subscriber("ada@example.org").status == "active"


def page_after(site: Site, token: str) -> str:
    return site.client.get(f"/preferences/{token}").text


def test_pause_until_resumed(site: Site) -> None:
    token = site.token("grace@example.org")
    site.client.post(f"/preferences/{token}", data={"action": "pause", "for": "on"})
    grace = site.subscriber("grace@example.org")
    assert grace.status == "paused" and grace.paused_until is None
    # the config lists grace: a run does not undo her choice
    site.clock.now = NOW + timedelta(days=30)
    site.run()
    assert site.subscriber("grace@example.org").status == "paused"
    site.client.post(f"/preferences/{token}", data={"action": "resume"})
    assert site.subscriber("grace@example.org").status == "active"


# -- double opt-in ------------------------------------------------------------------------


def signup_mails(site: Site, address: str) -> list[EmailMessage]:
    """Mails sent by the web app (not editions) to ``address``, oldest first."""
    site.settle()
    files = sorted(site.project.outbox(), key=lambda p: p.stat().st_mtime_ns)
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in files
    ]
    return [
        m for m in mails if m["X-Digest-Edition"] == "0" and address.lower() in str(m["To"]).lower()
    ]


def confirmation_link(site: Site, address: str) -> str:
    mails = signup_mails(site, address)
    assert mails, f"no mail to {address}"
    m = re.search(r"https://digest\.example\.org(/confirm/\S+)", text_of(mails[-1]))
    assert m
    return m.group(1)


def test_sign_up_is_pending_until_confirmed_by_a_button(site: Site, samples: Path) -> None:
    r = site.client.post(
        "/subscribe", data={"email": "Lin@Example.org", "name": "Lin", "stamp": site.stamp()}
    )
    assert r.status_code == 200 and "Check your inbox" in r.text
    lin = site.subscriber("lin@example.org")
    assert (lin.status, lin.source) == ("pending", "web")
    (msg,) = signup_mails(site, "lin@example.org")
    assert msg["Subject"] == "Confirm your subscription to Test Digest"
    link = confirmation_link(site, "Lin@Example.org")

    add_post(samples, "before-confirming")  # pending: not a recipient
    site.clock.now = NOW + timedelta(hours=1)
    (edition,) = site.run().editions
    assert edition.recipients == 2

    page = site.client.get(link)  # a scanner, or the person: shows a button
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert site.subscriber("lin@example.org").status == "pending"
    done = site.client.post(link)
    assert done.status_code == 200 and "You are subscribed" in done.text
    lin = site.subscriber("lin@example.org")
    assert lin.status == "active" and lin.confirmed_at == site.clock.now
    with site.engine.connect() as conn:
        row = conn.execute(sa.select(schema.signups)).one()
    assert row.mailed and row.confirmed_at is not None and row.ip == "127.0.0.1"

    add_post(samples, "after-confirming")
    site.clock.now = NOW + timedelta(hours=2)
    (edition,) = site.run().editions
    assert edition.recipients == 3


def test_confirmation_links_expire_and_cannot_be_forged(site: Site) -> None:
    site.client.post("/subscribe", data={"email": "lin@example.org", "stamp": site.stamp()})
    link = confirmation_link(site, "lin@example.org")
    forged = link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb")
    assert site.client.post(forged).status_code == 400
    site.clock.now = NOW + signup.CONFIRM_MAX_AGE + timedelta(minutes=1)
    r = site.client.post(link)
    assert r.status_code == 400 and "older than 7 days" in r.text
    assert site.subscriber("lin@example.org").status == "pending"


def test_honeypot_and_missing_stamp_send_nothing(site: Site) -> None:
    before = len(site.mails())
    r = site.client.post(
        "/subscribe",
        data={"email": "bot@example.org", "website": "http://spam", "stamp": site.stamp()},
    )
    assert r.status_code == 200 and "Check your inbox" in r.text  # a bot learns nothing
    r = site.client.post("/subscribe", data={"email": "bot@example.org"})
    assert r.status_code == 400 and "expired" in r.text
    assert len(site.mails()) == before
    with site.engine.connect() as conn:
        assert subscribers.get(conn, "bot@example.org") is None


def test_invalid_address_is_explained(site: Site) -> None:
    r = site.client.post("/subscribe", data={"email": "not an address", "stamp": site.stamp()})
    assert r.status_code == 400 and "does not look like an e-mail address" in r.text
    assert 'value="not an address"' in r.text


def test_per_address_limit_survives_and_tells_nothing(site: Site) -> None:
    def ask() -> None:
        r = site.client.post("/subscribe", data={"email": "x@example.org", "stamp": site.stamp()})
        assert r.status_code == 200 and "Check your inbox" in r.text

    ask()
    ask()  # within 10 minutes: same answer, no second mail
    assert len(signup_mails(site, "x@example.org")) == 1
    with site.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.signups.c.mailed, schema.signups.c.error)).all()
    assert [r.mailed for r in rows] == [True, False] and "10 minutes" in rows[1].error
    for hours in (1, 2, 3, 4):  # at most three a day
        site.clock.now = NOW + timedelta(hours=hours)
        ask()
    site.settle()
    with site.engine.connect() as conn:
        mailed = conn.execute(
            sa.select(sa.func.count()).where(schema.signups.c.mailed)
        ).scalar_one()
    assert mailed == 3


def test_per_ip_limit_answers_429(site: Site) -> None:
    codes = [
        site.client.post(
            "/subscribe", data={"email": f"p{i}@example.org", "stamp": site.stamp()}
        ).status_code
        for i in range(signup.PER_NETWORK.limit + 1)
    ]
    assert codes[:-1] == [200] * signup.PER_NETWORK.limit and codes[-1] == 429


def test_suppressed_is_never_mailed_and_subscribed_gets_a_note(site: Site) -> None:
    with site.engine.begin() as conn:
        subscribers.unsubscribe(
            conn, site.subscriber("grace@example.org").id, NOW, "bounced", "suppressed"
        )
    before = len(site.mails())
    site.client.post("/subscribe", data={"email": "grace@example.org", "stamp": site.stamp()})
    assert len(site.mails()) == before
    site.client.post("/subscribe", data={"email": "ada@example.org", "stamp": site.stamp()})
    (note,) = signup_mails(site, "ada@example.org")
    assert "already subscribed" in note["Subject"]
    assert "/preferences/" in text_of(note) and "/confirm/" not in text_of(note)


def test_an_unsubscribed_address_comes_back_only_by_confirming(site: Site) -> None:
    token = site.token("ada@example.org")
    site.client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    site.client.post("/subscribe", data={"email": "ada@example.org", "stamp": site.stamp()})
    assert site.subscriber("ada@example.org").status == "unsubscribed"
    site.client.post(confirmation_link(site, "ada@example.org"))
    assert site.subscriber("ada@example.org").status == "active"


# -- archive ------------------------------------------------------------------------------


def test_archive_shows_editions_without_personal_links(site: Site) -> None:
    listing = site.client.get("/archive")
    assert listing.status_code == 200 and "/archive/1" in listing.text
    page = site.client.get("/archive/1")
    assert page.status_code == 200
    assert "Why our build went from 9 minutes to 70 seconds" in page.text
    with site.engine.connect() as conn:
        nonce = record.load_composed(conn, 1).nonce
    for private in ("ada@example.org", "grace@example.org", nonce, site.token("ada@example.org")):
        assert private not in page.text
    assert 'https://digest.example.org/unsubscribe"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert site.client.get("/archive/2").status_code == 404
    assert site.client.get("/archive/nope").status_code == 404


def test_archive_feed_is_atom(site: Site) -> None:
    r = site.client.get("/archive/feed.xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = ET.fromstring(r.content)
    (entry,) = feed.findall("a:entry", ns)
    assert entry.findtext("a:id", namespaces=ns) == "https://digest.example.org/archive/1"
    assert "Why our build" in (entry.findtext("a:content", namespaces=ns) or "")


def test_archive_can_be_turned_off(project: Project, samples: Path) -> None:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.data["web"] = {"archive": False}
    services = pipeline.build(project.config(), engine=project.engine())
    with live(web.create_app(web.build(project.config(), services))) as client:
        assert client.get("/archive").status_code == 404
        assert client.get("/archive/feed.xml").status_code == 404
    services.engine.dispose()


# -- the SendGrid webhook -----------------------------------------------------------------


def events_table(site: Site) -> list[tuple[str, str | None]]:
    with site.engine.connect() as conn:
        return [
            (r.kind, r.event_id)
            for r in conn.execute(sa.select(schema.events).order_by(schema.events.c.id))
        ]


def test_signed_events_are_recorded_once_and_suppress(
    site: Site, key: ec.EllipticCurvePrivateKey
) -> None:
    events = [
        event("delivered", "ada@example.org", "e1"),
        event("bounce", "ada@example.org", "e2", type="bounce", reason="550 5.1.1 no such user"),
        event("spamreport", "grace@example.org", "e3"),
        event("open", "stranger@example.org", "e4"),
    ]
    body, headers = signed(key, events, NOW)
    r = site.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {
        "received": 4,
        "recorded": 4,
        "duplicates": 0,
        "ignored": 0,
        "suppressed": 2,
        "unsubscribed": 0,
    }
    ada, grace = site.subscriber("ada@example.org"), site.subscriber("grace@example.org")
    assert ada.status == grace.status == "suppressed"
    assert "550 5.1.1" in (ada.reason or "") and "spam" in (grace.reason or "")
    again = site.client.post("/webhooks/sendgrid", content=body, headers=headers)  # a retry
    assert again.json()["duplicates"] == 4 and again.json()["recorded"] == 0
    assert len(events_table(site)) == 4
    # suppressed addresses get no more editions, and the config cannot bring them back
    add_post(site.project.folder / "samples", "after-the-bounce")
    site.clock.now = NOW + timedelta(days=1)
    report = site.run()
    assert report.skipped is not None and "no active subscribers" in report.skipped


@pytest.mark.parametrize(
    ("kind", "extra", "status"),
    [
        ("bounce", {"type": "blocked", "reason": "blocked by policy"}, "active"),
        ("dropped", {"reason": "Invalid"}, "suppressed"),
        ("dropped", {"reason": "Bounced Address"}, "suppressed"),
        ("dropped", {"reason": "Spam Content"}, "active"),
        ("deferred", {"response": "try later"}, "active"),
        ("unsubscribe", {}, "unsubscribed"),
        ("group_unsubscribe", {"asm_group_id": 7}, "unsubscribed"),
    ],
)
def test_which_events_act(
    site: Site, key: ec.EllipticCurvePrivateKey, kind: str, extra: dict[str, Any], status: str
) -> None:
    body, headers = signed(key, [event(kind, "ada@example.org", f"x-{kind}", **extra)], NOW)
    assert site.client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200
    assert site.subscriber("ada@example.org").status == status
    assert events_table(site) == [(kind, f"x-{kind}")]


def test_bad_signature_is_403_and_changes_nothing(
    site: Site, key: ec.EllipticCurvePrivateKey
) -> None:
    events = [event("spamreport", "ada@example.org", "e9")]
    body, headers = signed(key, events, NOW)
    other = ec.generate_private_key(ec.SECP256R1())
    _, forged = signed(other, events, NOW)
    tampered = body.replace(b"ada@", b"grace@")
    cases = [
        (tampered, headers),  # body changed after signing
        (body, forged),  # signed by someone else
        (
            body,
            {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(NOW.timestamp()) + 1)},
        ),
        (body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": "!!not base64!!"}),
        (body, {"Content-Type": "application/json"}),  # unsigned
        (json.dumps(events, indent=1).encode(), headers),  # re-serialized JSON
    ]
    for content, h in cases:
        r = site.client.post("/webhooks/sendgrid", content=content, headers=h)
        assert r.status_code == 403, h
    assert events_table(site) == []
    assert site.subscriber("ada@example.org").status == "active"


def test_stale_timestamps_are_refused(site: Site, key: ec.EllipticCurvePrivateKey) -> None:
    body, headers = signed(key, [event("spamreport", "ada@example.org", "e5")], NOW)
    site.clock.now = NOW + timedelta(minutes=11)
    r = site.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert r.status_code == 403 and "stale" in r.json()["error"]
    assert events_table(site) == []


def test_without_a_key_the_webhook_refuses_everything(
    site: Site, key: ec.EllipticCurvePrivateKey
) -> None:
    site.web.settings = replace(site.web.settings, public_key=None)
    body, headers = signed(key, [event("spamreport", "ada@example.org", "e6")], NOW)
    r = site.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert r.status_code == 403 and "sendgrid_public_key" in r.json()["error"]
    assert events_table(site) == []


def test_a_signed_body_that_is_not_events_is_400(
    site: Site, key: ec.EllipticCurvePrivateKey
) -> None:
    body = b'{"not": "a list"}'
    timestamp = str(int(NOW.timestamp()))
    sig = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    r = site.client.post(
        "/webhooks/sendgrid",
        content=body,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )
    assert r.status_code == 400


def test_a_bad_public_key_is_a_config_error(project: Project) -> None:
    from digest.errors import ConfigError

    project.feed("samples/x.rss")
    project.data["web"] = {"sendgrid_public_key": "not-a-key"}
    with pytest.raises(ConfigError, match=r"web\.sendgrid_public_key: not a public key"):
        project.config()


# -- the rest -----------------------------------------------------------------------------


def test_healthz_and_pages_without_tracebacks(site: Site) -> None:
    r = site.client.get("/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["database"] == "ok"
    missing = site.client.get("/no/such/page")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text
    wrong = site.client.delete("/subscribe")
    assert wrong.status_code == 405
    home = site.client.get("/")
    assert home.status_code == 200 and 'type="email"' in home.text
    assert "http" not in re.sub(r'(href|action)="[^"]*"', "", home.text.split("<style>")[0])


def test_served_under_the_path_of_base_url(project: Project, samples: Path) -> None:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.data["digest"]["base_url"] = "https://example.org/news"
    services = pipeline.build(project.config(), engine=project.engine())
    with live(web.create_app(web.build(project.config(), services))) as client:
        page = client.get("/news/subscribe")
        assert page.status_code == 200 and 'action="/news/subscribe"' in page.text
        assert client.get("/healthz").status_code == 200
    services.engine.dispose()


def test_healthz_says_the_database_failed(site: Site) -> None:
    """The database refusing (digest's DatabaseFailed) is a 503 that names it, not a 500."""

    def refuse(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement == "SELECT 1":
            raise sqlite3.OperationalError("unable to open database file")

    sa.event.listen(site.engine, "before_cursor_execute", refuse)
    try:
        r = site.client.get("/healthz")
    finally:
        sa.event.remove(site.engine, "before_cursor_execute", refuse)
    assert r.status_code == 503
    assert r.json()["ok"] is False and r.json()["database"] == "unreachable: OperationalError"
    assert site.client.get("/healthz").status_code == 200


def test_two_apps_share_the_handlers_and_each_reads_its_own_state(site: Site) -> None:
    """The handlers are module-level (``app.ROUTES``) and read ``request.app.state``:
    two apps in one process answer each with their own settings."""
    closed = replace(site.web, settings=replace(site.web.settings, archive=False))
    with live(web.create_app(closed)) as other:
        assert other.get("/archive").status_code == 404
        assert site.client.get("/archive").status_code == 200
        assert other.get("/archive/feed.xml").status_code == 404
        assert site.client.get("/archive/feed.xml").status_code == 200


def _record_twice(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        subscribers.add(conn, "Ada@Example.org", None, "cli", NOW)
    batch = [
        event("bounce", "ADA@example.org", "a1", type="bounce", reason="gone"),
        event("bounce", "ada@example.org", "a1", type="bounce", reason="gone"),  # twice
        {"email": "ada@example.org", "event": "processed"},  # no sg_event_id
        event("spamreport", "nobody@example.org", "a2"),
    ]
    with engine.begin() as conn:
        first = webhook.record_events(conn, batch, NOW)
    with engine.begin() as conn:
        second = webhook.record_events(conn, batch[:2] + batch[3:], NOW)
        ada = subscribers.get(conn, "ada@example.org")
        kinds = [r.kind for r in conn.execute(sa.select(schema.events.c.kind))]
    assert (first.recorded, first.duplicates, first.suppressed) == (3, 1, 1)
    assert (second.recorded, second.duplicates, second.suppressed) == (0, 3, 0)
    assert ada is not None and ada.status == "suppressed" and "gone" in (ada.reason or "")
    assert sorted(kinds) == ["bounce", "processed", "spamreport"]


def test_record_events_dedupes_within_and_across_batches(engine: sa.Engine) -> None:
    _record_twice(engine)


@pytest.mark.postgres
def test_record_events_on_postgresql() -> None:
    import os
    import uuid

    from digest.state import db

    url = os.environ.get("DIGEST_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        engine = db.connect(
            admin.url.set(database=name).render_as_string(hide_password=False), auto_upgrade=True
        )
        try:
            _record_twice(engine)
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_only_an_unsubscribe_can_be_undone_from_a_link(site: Site) -> None:
    token = site.token("ada@example.org")
    with site.engine.begin() as conn:
        subscribers.remove(conn, "ada@example.org", NOW)
    r = site.client.post(f"/resubscribe/{token}")
    assert r.status_code == 400
    assert site.subscriber("ada@example.org").status == "removed"


def test_the_archive_lists_stories_the_mail_had_no_room_for(engine: sa.Engine) -> None:
    from digest.web import archive

    with engine.begin() as conn:
        feed_id = conn.execute(
            sa.insert(schema.feeds).values(url="https://f.example/feed", consecutive_failures=0)
        ).inserted_primary_key[0]  # type: ignore[index]
        edition_id = record.begin_edition(conn, NOW, "n0nce")
        for i, link in enumerate(["https://f.example/a?x=1&y=2", "https://f.example/b"]):
            conn.execute(
                sa.insert(schema.entries).values(
                    feed_id=feed_id,
                    identity=f"e{i}",
                    title=f"Story <{i}>",
                    link=link,
                    published_at=NOW,
                    first_seen_at=NOW,
                    edition_id=edition_id,
                )
            )
        shown = '<html><body><a href="https://f.example/a?x=1&amp;y=2">A</a></body></html>'
        out = archive.with_hidden_stories(conn, edition_id, shown)
    assert out.startswith(shown[: -len("</body></html>")])
    assert 'href="https://f.example/b">Story &lt;1&gt;</a>' in out
    assert "Story &lt;0&gt;" not in out and out.endswith("</body></html>")


def test_oversized_posts_are_refused_without_acting(site: Site) -> None:
    token = site.token("ada@example.org")
    huge = b"List-Unsubscribe=One-Click&pad=" + b"x" * (200 * 1024)
    r = site.client.post(
        f"/unsubscribe/{token}",
        content=huge,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    assert site.subscriber("ada@example.org").status == "active"
    r = site.client.post("/webhooks/sendgrid", content=b"[" + b" " * (6 * 1024 * 1024) + b"]")
    assert r.status_code == 413


def test_confirmation_mails_go_through_sendgrid_too(
    project: Project, samples: Path, sendgrid_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .sendgrid_server import DEFAULT_API_KEY

    monkeypatch.setenv("WEB_TEST_SENDGRID_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.data["delivery"] = {
        "backend": "sendgrid",
        "retry_backoff": "1ms",
        "sendgrid": {"api_key_env": "WEB_TEST_SENDGRID_KEY", "api_url": sendgrid_server.url},
    }
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=Clock(NOW), sleep=lambda s: None
    )
    app = web.build(project.config(), services)
    with live(web.create_app(app)) as client:
        page = client.get("/subscribe").text
        stamp = re.search(r'name="stamp" value="([^"]+)"', page)
        assert stamp
        r = client.post("/subscribe", data={"email": "sg@example.org", "stamp": stamp.group(1)})
        assert r.status_code == 200 and "Check your inbox" in r.text
        assert app.followups.wait(60)
        (sent,) = [q for q in sendgrid_server.requests if q.accepted]
        assert sent.recipients == ["sg@example.org"]
        text = next(c["value"] for c in sent.body["content"] if c["type"] == "text/plain")
        link = re.search(r"https://digest\.example\.org(/confirm/\S+)", text)
        assert link and "Confirm your subscription" in sent.body["subject"]
        assert client.post(link.group(1)).status_code == 200
    with services.engine.connect() as conn:
        s = subscribers.get(conn, "sg@example.org")
    assert s is not None and s.status == "active"
    services.engine.dispose()


# -- issue 12: every story of an edition on its archive page, inside its layout -------------


def big_feed(path: Path, stories: int, category_every: int = 0) -> None:
    items = "".join(
        f"<item><title>Story {i:03d} &amp; more</title><link>https://big.example/s/{i}</link>"
        f"<guid>s{i}</guid><pubDate>Mon, 15 Mar 2027 {i // 60 % 24:02d}:{i % 60:02d}:00 +0000"
        "</pubDate></item>"
        if i % 10
        else f"<item><title>Story {i:03d} &amp; more</title><guid>s{i}</guid>"
        "<description>no link, no date</description></item>"  # linkless: listed by title
        for i in range(stories)
    )
    path.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Big</title>'
        f"<link>https://big.example/</link><description>d</description>{items}</channel></rss>"
    )


def test_the_archive_page_lists_every_story_of_a_700_story_edition(
    project: Project, tmp_path: Path
) -> None:
    big_feed(tmp_path / "big.rss", 700)
    project.feed(str(tmp_path / "big.rss"), first_run_window="all", category="Technology")
    project.subscriber("ada@example.org")
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=Clock(NOW), sleep=lambda s: None
    )
    (edition,) = pipeline.run(services).editions
    assert edition.entries == 700
    (message,) = (project.folder / "outbox").glob("*.eml")
    mail = email.message_from_bytes(message.read_bytes(), policy=email.policy.default)
    html_part = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    more = re.search(r'href="([^"]+)"[^>]*>(\d+) more from Technology', html_part)
    assert more and more.group(1) == "https://digest.example.org/archive/1#more-technology"
    assert 5 + 10 + int(more.group(2)) == 700  # 5 in full (one feed), 10 headlines, the rest
    with live(web.create_app(web.build(project.config(), services))) as client:
        page = client.get("/archive/1").text
    titles = re.findall(r"Story (\d{3}) &amp; more", page)
    assert sorted(set(titles)) == [f"{i:03d}" for i in range(700)]
    assert 'id="more-technology"' in page and "more from Technology" not in page
    footer = page.index('class="footer"')
    assert all(page.index(f"Story {i:03d} &amp;") < footer for i in range(700))
    assert "The rest of this edition" not in page  # inside the layout, not after it
    assert "%%" not in page and "ada@example.org" not in page
