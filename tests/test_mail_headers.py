"""Nothing from outside becomes a header: the two attacks of issue 10, end to end.

RFC 2047 encoded-words decode to CR/LF, and the ``email`` package of the Pythons this
project allows (3.11.7, 3.12.1) wrote the decoded line breaks out raw. A feed title and
a sign-up name carrying one added headers (and a body) to real messages. The general
rule is tested by properties in ``test_mail_properties.py``.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest import pipeline, web

from .helpers import NOW, Clock, Project
from .live import live
from .mailcheck import exact_shape


def encoded_word(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


INJECTED = "\r\nBcc: victim@evil.example\r\nReply-To: attacker@evil.example"
PHISH = (
    "\r\nReply-To: attacker@evil.example\r\nContent-Type: text/html\r\n\r\n"
    "<h1>Your account is locked</h1>"
)


def rss(title: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Hostile</title><link>https://hostile.example/</link>"
        f"<item><title>{title}</title><link>https://hostile.example/1</link>"
        "<guid>hostile-1</guid><pubDate>Sat, 28 Nov 2026 06:00:00 +0000</pubDate>"
        "<description>A story.</description></item></channel></rss>"
    )


def test_a_feed_title_with_an_encoded_line_break_adds_no_header(
    project: Project, cli_env: dict[str, str]
) -> None:
    feed = project.folder / "hostile.rss"
    feed.write_text(rss(f"Hi {encoded_word(INJECTED)}"), encoding="utf-8")
    project.feed(str(feed), first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.subscriber("grace@example.org")
    project.write()
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), "run", "--json"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    files = project.outbox()
    assert len(files) == 2
    for path in files:
        msg = exact_shape(path.read_bytes())
        assert msg["Bcc"] is None and msg["Reply-To"] is None
        # decoded, then flattened onto the subject's one line: the words, not the header
        assert msg["Subject"].strip() == (
            "Test Digest: Hi Bcc: victim@evil.example Reply-To: attacker@evil.example"
        )


@pytest.fixture
def site(project: Project, tmp_path: Path) -> Iterator[tuple[Project, object, web.Web]]:
    feed = tmp_path / "quiet.rss"
    feed.write_text(rss("A quiet story"), encoding="utf-8")
    project.feed(str(feed), first_run_window="all")
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=Clock(NOW), sleep=lambda s: None
    )
    app = web.build(project.config(), services)
    with live(web.create_app(app)) as client:
        yield project, client, app
    services.engine.dispose()


def test_a_sign_up_name_with_an_encoded_line_break_writes_no_header_or_body(
    site: tuple[Project, object, web.Web],
) -> None:
    project, client, app = site
    page = client.get("/subscribe").text  # type: ignore[attr-defined]
    stamp = re.search(r'name="stamp" value="([^"]+)"', page)
    assert stamp
    name = encoded_word(PHISH)
    r = client.post(  # type: ignore[attr-defined]
        "/subscribe",
        data={"email": "victim@example.org", "name": name, "stamp": stamp.group(1)},
    )
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert app.followups.wait(30)  # the mail goes out after the answer
    (path,) = project.outbox()
    msg = exact_shape(path.read_bytes())
    assert msg["Reply-To"] is None
    assert msg["To"].addresses[0].addr_spec == "victim@example.org"
    # decoded and flattened; too long to keep its quotes through folding on this Python,
    # so written without the punctuation that needs them (it would otherwise name
    # attacker@evil.example as a recipient)
    assert msg["To"].addresses[0].display_name == (
        "Reply-To attacker evil example Content-Type text/html h1 Your account is locked /h1"
    )
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<h1>Your account" not in html
    assert "Confirm your subscription" in msg["Subject"]


def test_a_base_url_on_more_than_one_line_is_a_config_error(project: Project) -> None:
    """Python's urlsplit drops CR, LF and tab quietly; the links in every mail (and the
    List-Unsubscribe header) would still carry them."""
    from digest.errors import ConfigError

    project.feed("https://example.org/feed.xml")
    project.data["digest"]["base_url"] = "https://d.example/\r\nBcc: x@evil.example"
    with pytest.raises(ConfigError) as info:
        project.config()
    (problem,) = info.value.problems
    assert problem.startswith("digest.base_url:") and "without spaces or line breaks" in problem
