from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import RenderError
from digest.mail.headers import header_safe
from digest.mail.markers import personalize, substitutions, unused_markers
from digest.model import UNTITLED, Entry, FeedSource, Selection
from digest.render import sample
from digest.render.edition import (
    EditionView,
    GroupView,
    ItemView,
    RecipientView,
    Renderer,
    RenderSettings,
    default_templates_dir,
)

from .conftest import ROOT
from .html_tree import Html

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


# -- the e-mail ------------------------------------------------------------------------------

SAMPLE_VALUES = {
    "unsubscribe_url": "https://d.example/unsubscribe/7.token",
    "preferences_url": "https://d.example/preferences/7.token",
    "email": "reader@example.org",
    "name": "Reader",
}


def sample_parts(**kw: object) -> tuple[str, str]:
    composed = renderer(**kw).compose(5, sample.selection(NOW), NOW, "nonce1")
    return personalize(composed, SAMPLE_VALUES)


def test_css_is_inlined_and_only_media_rules_stay_in_style() -> None:
    html, _ = sample_parts()
    soup = Html(html)
    styles = soup.all("style")
    assert styles and all(s.text.lstrip().startswith("@media") for s in styles)
    assert "prefers-color-scheme: dark" in html and "max-width: 620px" in html
    title = soup.first("h1")
    assert "font-size:30px" in title.attrs["style"]
    assert "<link" not in html and "<script" not in html.lower() and "@import" not in html
    assert 'name="color-scheme" content="light dark"' in html
    assert 'name="supported-color-schemes" content="light dark"' in html


def test_layout_tables_are_presentation_and_600_wide() -> None:
    soup = Html(sample_parts()[0])
    tables = soup.all("table")
    assert tables and all(t.attrs.get("role") == "presentation" for t in tables)
    assert any(
        t.attrs.get("width") == "600" and "max-width:600px" in t.attrs["style"] for t in tables
    )


def test_structure_preheader_title_contents_groups_items_footer() -> None:
    html, text = sample_parts()
    soup = Html(html)
    body = html.split("<body", 1)[1]
    pre = soup.first("div", "preheader")
    assert body.index('class="preheader"') < body.index("<table")  # the first thing in the body
    assert pre.text.startswith("The new crane schedule, explained · Tides & <tidal> power")
    assert "display:none" in pre.attrs["style"]
    assert soup.first("h1").text == "Daily"
    assert "Saturday, November 28, 2026" in html and "10 new stories" in html
    # contents: every item, linked to its anchor
    toc = [a.attrs["href"] for a in soup.all("a") if a.attrs.get("href", "").startswith("#")]
    ids = [td.attrs["id"] for td in soup.all("td") if "id" in td.attrs]
    assert ids == [f"item-{n}" for n in range(1, 8)]
    assert toc == ["#" + i for i in ids]
    # groups in order of their newest entry; a feed without a category comes last
    assert [h.text for h in soup.all("h2", "group-name")] == [
        "Technology",
        "Science",
        "Gardening",
        "Other",
    ]
    assert [h.text for h in soup.all("h3")][:2] == [
        "The new crane schedule, explained",
        "Tides & <tidal> power: the numbers behind the barrage",
    ]
    assert 'href="https://harbour.example.org/2026/barrage?utm=none&amp;page=2"' in html
    assert "Harbour Tech Notes · Nov 28, 5:30\u202fAM · by M. Quayle" in html
    # the footer: why, preferences, unsubscribe, view in browser, postal address
    footer = soup.first("td", "footer").text
    assert "You get this because reader@example.org subscribed to Daily." in footer
    links = {a.text: a.attrs["href"] for a in soup.all("a")}
    assert links["Unsubscribe"] == SAMPLE_VALUES["unsubscribe_url"]
    assert links["Preferences"] == SAMPLE_VALUES["preferences_url"]
    assert links["View in browser"] == "https://d.example/archive/5"
    assert "1 Street" in footer
    assert "More new stories" in html and "Mending a water butt" in html
    assert "Mending a water butt (Allotment Diary)" in text


def test_thumbnails_have_alt_and_width_and_can_be_turned_off() -> None:
    soup = Html(sample_parts()[0])
    images = soup.all("img")
    assert len(images) == 3
    for img in images:
        assert img.attrs["src"].startswith("https://images.example.org/")
        assert img.attrs["alt"] and img.attrs["width"] == "112"
        assert "max-width:100%" in img.attrs["style"]
    assert {i.attrs["alt"] for i in images} >= {"The new crane schedule, explained"}
    assert not Html(sample_parts(thumbnails=False)[0]).all("img")


def test_grouping_by_feed_or_not_at_all() -> None:
    by_feed = Html(sample_parts(group_by="feed")[0])
    assert [h.text for h in by_feed.all("h2", "group-name")] == [
        "Harbour Tech Notes",
        "Field Notes",
        "Allotment Diary",
        "Letters to the Editor",
    ]
    flat = Html(sample_parts(group_by="none")[0])
    assert not flat.all("h2", "group-name") and not flat.all("h3")
    titles = [h.text for h in flat.all("h2", "item-title")]
    assert titles[:2] == [
        "The new crane schedule, explained",
        "Counting glaciers from orbit: what ten years of images show",
    ]  # newest first


def test_contents_only_from_enough_items() -> None:
    assert "In this edition" in sample_parts(contents_from=7)[0]
    assert "In this edition" not in sample_parts(contents_from=8)[0]
    assert "In this edition" not in sample_parts(contents_from=0)[0]


def test_dates_and_words_follow_locale_and_time_zone() -> None:
    html, text = sample_parts(locale="en_GB", timezone="Europe/Berlin")
    assert '<html lang="en-GB" dir="ltr">' in html
    assert "Saturday, 28 November 2026" in html
    assert "Harbour Tech Notes · 28 Nov, 06:30" in html  # 05:30 UTC in Berlin
    html, text = sample_parts(locale="de", timezone="Europe/Berlin")
    assert '<html lang="de"' in html
    assert "Samstag, 28. November 2026 · 10 neue Beiträge" in text
    assert "28. Nov., 06:30" in text and "von M. Quayle" in text
    assert "In dieser Ausgabe" in html and "Abbestellen" in html and "Weiteres" in html
    assert "Sie erhalten diese E-Mail, weil reader@example.org „Daily“ abonniert hat." in html
    assert renderer(locale="de").subject(sample.selection(NOW), NOW).endswith("(+9 weitere)")
    assert 'dir="rtl"' in sample_parts(locale="ar")[0]


def test_numbers_follow_the_locale() -> None:
    many = tuple(entry(f"T{i}") for i in range(1200))
    sel = Selection(many[:3], many[3:], ())
    assert "1,200 new stories" in renderer().compose(1, sel, NOW).text
    assert "1.200 neue Beiträge" in renderer(locale="de").compose(1, sel, NOW).text


def test_unknown_locale_is_a_clear_error() -> None:
    with pytest.raises(RenderError, match="'klingon' is not a locale"):
        renderer(locale="klingon")


def test_operator_catalog_overrides_one_string_and_falls_back(tmp_path: Path) -> None:
    folder = tmp_path / "locale" / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "digest.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Unsubscribe"\nmsgstr "Abmelden"\n',
        encoding="utf-8",
    )
    html, _ = personalize(
        renderer(tmp_path, locale="de_AT").compose(1, sample.selection(NOW), NOW), SAMPLE_VALUES
    )
    assert "Abmelden" in html and "Abbestellen" not in html
    assert "Im Browser ansehen" in html  # from the shipped catalog


def test_every_template_string_has_a_german_translation() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    wanted = {
        m if isinstance(m, str) else m[0]
        for _f, _l, m, _c, _x in extract_from_dir(
            str(default_templates_dir()), method_map=[("**.j2", "jinja2")]
        )
    }
    assert len(wanted) >= 12
    po = default_templates_dir() / "locale" / "de" / "LC_MESSAGES" / "digest.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in catalog
        if m.id and all(m.string if isinstance(m.string, tuple) else (m.string,))
    }
    assert wanted - translated == set()


def test_text_part_is_for_people() -> None:
    _, text = sample_parts()
    assert not re.search(r"<[a-zA-Z/][^>]*>", text.replace("<tidal>", ""))  # no tags
    assert not re.search(r"&(#\d+|[a-z]+);", text)  # no entities
    assert "%%" not in text and "\r" not in text
    for line in text.splitlines():
        assert len(line) <= 72 or re.fullmatch(r"\s*(\S+: )?https?://\S+", line), line
    assert "Tides & <tidal> power" in text  # plain text stays plain
    assert "   From Monday the two container cranes on the north quay work in\n" in text
    assert "Unsubscribe: https://d.example/unsubscribe/7.token" in text
    assert "View in browser: https://d.example/archive/5" in text


def test_personal_markers_survive_inlining_and_are_all_filled() -> None:
    composed = renderer().compose(1, sample.selection(NOW), NOW, "n1")
    assert 'href="%%n1.unsubscribe_url.h%%"' in composed.html
    html, text = personalize(composed, VALUES)
    assert not unused_markers([html, text], "n1")
    assert "ada@example.org" in html and "Ada &lt;Lovelace&gt;" not in text


def test_check_renders_a_sample_edition_with_items(tmp_path: Path) -> None:
    assert renderer().check(NOW) == []
    # a mistake inside the item partial: an empty edition would never reach it
    (tmp_path / "_item.html.j2").write_text("<tr><td>\n{{ item.titel }}\n</td></tr>\n")
    broken = renderer(tmp_path)
    broken.compose(1, Selection((), (), ()), NOW)  # renders: no item, no error
    with pytest.raises(RenderError) as info:
        broken.check(NOW)
    assert info.value.template and info.value.template.endswith("_item.html.j2")
    assert info.value.line == 2 and "titel" in str(info.value)


def test_check_reports_a_missing_unsubscribe_link_and_address(tmp_path: Path) -> None:
    (tmp_path / "_footer.html.j2").write_text("<p>bye</p>\n")
    problems = renderer(tmp_path).check(NOW)
    assert problems == [
        "the HTML part has no unsubscribe link: add {{ recipient.unsubscribe_url }} "
        "(every mail must have one)",
        "the HTML part has no postal address: add {{ postal_address }}",
    ]


def test_the_shipped_templates_are_documented() -> None:
    """docs/templates.md lists every field of every view, and every default template."""
    import dataclasses

    doc = (ROOT / "docs" / "templates.md").read_text()
    for view, prefix in (
        (EditionView, "edition"),
        (GroupView, "group"),
        (ItemView, "item"),
        (RecipientView, "recipient"),
    ):
        names = [f.name for f in dataclasses.fields(view)]
        names += [n for n, v in vars(view).items() if isinstance(v, property)]
        for name in names:
            assert f"`{prefix}.{name}`" in doc, f"{prefix}.{name}"
    for template in default_templates_dir().glob("*.j2"):
        assert f"`{template.name}`" in doc, template.name


# -- issue 12: old stories show their year, summaries their paragraphs, subjects a title


def test_a_date_outside_the_editions_year_shows_its_year() -> None:
    """In the HTML part (which the archive page stores and shows) and in the text part."""
    old = replace(entry("Old news"), published=datetime(2018, 9, 24, 7, 0, tzinfo=UTC))
    recent = replace(entry("Recent news"), published=datetime(2026, 9, 24, 7, 0, tzinfo=UTC))
    composed = renderer().compose(1, Selection((old, recent), (), ()), NOW, "n")
    for part in (composed.html, composed.text):
        assert "Sep 24, 2018, 7:00" in part
        assert "Sep 24, 7:00" in part and "Sep 24, 2026" not in part
    new_year = datetime(2027, 1, 1, 7, 0, tzinfo=UTC)  # last night's story is last year's
    late = replace(entry("Late"), published=datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    composed = renderer().compose(1, Selection((late,), (), ()), new_year, "n")
    assert "Dec 31, 2026, 11:00" in composed.text


def test_summaries_keep_their_paragraphs_in_both_parts() -> None:
    story = entry("Show", summary="First paragraph & more.\n\nSecond <one>\nits next line")
    composed = renderer().compose(1, Selection((story,), (), ()), NOW, "n")
    assert (
        '<p class="summary" style="' in composed.html
        and "First paragraph &amp; more.</p>" in composed.html
        and "Second &lt;one&gt;<br>its next line</p>" in composed.html
    )
    assert "    First paragraph & more.\n\n    Second <one>\n    its next line\n" in composed.text


def test_untitled_entries_never_make_the_subject() -> None:
    untitled = entry(UNTITLED)
    sel = Selection((untitled, entry("A real title")), (), ())
    assert renderer().subject(sel, NOW) == "Daily: A real title (+1 more)"
    assert renderer().subject(Selection((untitled,), (), ()), NOW) == "Daily"
