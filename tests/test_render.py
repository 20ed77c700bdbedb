from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import RenderError
from digest.model import Entry, FeedSource, Selection
from digest.render import (
    Renderer,
    RenderSettings,
    header_safe,
    personalize,
    substitutions,
    unused_markers,
)

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
SOURCE = FeedSource("https://a.example/feed", "A <Feed>", category="News")
VALUES = {
    "unsubscribe_url": "https://d.example/unsubscribe/1.abc?x=1&y=2",
    "preferences_url": "https://d.example/preferences/1.abc",
    "email": "ada@example.org",
    "name": "Ada <Lovelace>",
}


def entry(title: str, link: str | None = "https://a.example/1", summary: str = "S") -> Entry:
    return Entry(
        source=SOURCE,
        source_title="A <Feed>",
        identity=title,
        title=title,
        link=link,
        canonical_link=link,
        summary=summary,
        content_html="",
        published=NOW,
        dated=True,
    )


def renderer(tmp: Path | None = None, **kw: object) -> Renderer:
    settings = RenderSettings(
        title="Daily", base_url="https://d.example", postal_address="1 Street", templates=tmp, **kw
    )  # type: ignore[arg-type]
    return Renderer(settings)


def test_titles_are_escaped_in_html_and_plain_in_text() -> None:
    nasty = 'Tom & Jerry <script>alert("x")</script>'
    composed = renderer().compose(7, Selection((entry(nasty),), (), ()), NOW, "n0nce")
    assert "<script>" not in composed.html
    assert "Tom &amp; Jerry &lt;script&gt;" in composed.html
    assert nasty in composed.text
    assert "https://d.example/archive/7" in composed.html


def test_personal_parts_are_markers_until_personalized() -> None:
    composed = renderer().compose(1, Selection((entry("T"),), (), ()), NOW, "abcd")
    assert unused_markers([composed.html, composed.text], "abcd")
    html, text = personalize(composed, VALUES)
    assert not unused_markers([html, text], "abcd")
    assert 'href="https://d.example/unsubscribe/1.abc?x=1&amp;y=2"' in html
    assert "https://d.example/unsubscribe/1.abc?x=1&y=2" in text
    subs = substitutions(composed, VALUES)
    assert len(subs) == 8 and all(k.startswith("%%abcd.") for k in subs)


def test_more_stories_listed_as_headlines() -> None:
    sel = Selection((entry("Shown"),), (entry("Extra one"), entry("Extra two", link=None)), ())
    composed = renderer().compose(1, sel, NOW)
    assert "More new stories" in composed.html and "Extra two" in composed.html
    assert "Extra one" in composed.text


def test_subject_is_one_bounded_line() -> None:
    long = "Breaking:\r\nBcc: victim@example.org " + "word " * 60
    subject = renderer().subject(Selection((entry(long),), (entry("b"),), ()), NOW)
    assert "\r" not in subject and "\n" not in subject
    assert len(subject) <= 150 and subject.endswith("…")
    assert subject.startswith("Daily: Breaking: Bcc: victim@example.org")


def test_subject_template_from_config() -> None:
    r = renderer(subject="{{ count }} new in {{ title }} on {{ date.strftime('%d %b') }}")
    assert r.subject(Selection((entry("a"),), (), ()), NOW) == "1 new in Daily on 28 Nov"


def test_header_safe() -> None:
    assert header_safe("a\r\nb\tc\x00d\u2028e", 100) == "a b c d e"


def test_operator_templates_override_one_file(tmp_path: Path) -> None:
    (tmp_path / "digest.txt.j2").write_text("CUSTOM {{ edition.title }} {{ recipient.email }}\n")
    composed = renderer(tmp_path).compose(1, Selection((entry("T"),), (), ()), NOW, "xyz")
    assert composed.text.startswith("CUSTOM Daily %%xyz.email.t%%")
    assert "<table" in composed.html  # the default HTML template still applies


def test_broken_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.txt.j2").write_text("line one\n{{ edition.nope }}\n")
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).compose(1, Selection((entry("T"),), (), ()), NOW)
    assert info.value.template and info.value.template.endswith("digest.txt.j2")
    assert info.value.line == 2
    (tmp_path / "digest.txt.j2").write_text("{% for x in %}\n")
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).compose(1, Selection((entry("T"),), (), ()), NOW)
    assert info.value.line == 1


def test_empty_edition_renders() -> None:
    composed = renderer().compose(1, Selection((), (), ()), NOW)
    assert "Nothing new" in composed.text
