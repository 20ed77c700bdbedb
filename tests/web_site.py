"""The site the web tests work on: a project with three feeds and two subscribers, one
edition sent, the web app served by uvicorn on 127.0.0.1 (``site``), and signed SendGrid
events (``key``, ``signed``, ``event``). ``conftest.py`` makes the fixtures everyone's."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from digest import pipeline, web
from digest.services import Services
from digest.state import subscribers

from .helpers import SAMPLES_NOW as NOW
from .helpers import Clock, Project
from .live import live


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


class Site:
    web: web.Web

    def __init__(
        self, project: Project, clock: Clock, services: Services, client: httpx.Client
    ) -> None:
        self.project = project
        self.clock = clock
        self.services = services
        self.client = client

    @property
    def engine(self) -> sa.Engine:
        return self.services.engine

    def settle(self) -> None:
        """Wait for the work done after answering (sign-up mails)."""
        assert self.web.followups.wait(60), "sign-up mails still going out after a minute"

    def subscriber(self, address: str) -> subscribers.Subscriber:
        self.settle()
        with self.engine.connect() as conn:
            s = subscribers.get(conn, address)
        assert s is not None
        return s

    def token(self, address: str) -> str:
        s = self.subscriber(address)
        return self.web.signer.token(s.id, s.email)

    def run(self) -> pipeline.RunReport:
        return pipeline.run(self.services)

    def mails(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in self.project.outbox()
        ]

    def stamp(self) -> str:
        page = self.client.get("/subscribe").text
        m = re.search(r'name="stamp" value="([^"]+)"', page)
        assert m
        return m.group(1)


@pytest.fixture
def site(project: Project, samples: Path, key: ec.EllipticCurvePrivateKey) -> Iterator[Site]:
    project.feed("samples/harbour-tech.rss", first_run_window="all", category="Technology")
    project.feed("samples/field-notes.atom", first_run_window="all", category="Science")
    project.feed("samples/allotment-diary.rss", first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.subscriber("grace@example.org")
    project.data["web"] = {"sendgrid_public_key": public_b64(key)}
    clock = Clock(NOW)
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=clock, sleep=lambda s: None
    )
    app = web.build(project.config(), services)
    with live(web.create_app(app)) as client:
        s = Site(project, clock, services, client)
        s.web = app
        s.run()  # edition 1, to both
        yield s
    services.engine.dispose()


def text_of(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def signed(
    key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]], at: datetime
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    timestamp = str(int(at.timestamp()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def event(kind: str, address: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": address,
        "event": kind,
        "sg_event_id": event_id,
        "timestamp": int(NOW.timestamp()),
        **extra,
    }
