from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.errors import RenderError
from digest.mail.headers import header_safe
from digest.mail.markers import personalize, substitutions, unused_markers
from digest.model import UNTITLED, Entry, FeedSource, Selection
from digest.render import sample
from digest.render.edition import (
    EditionView,
    GroupView,
    HeadlineGroup,
    ItemView,
    RecipientView,
    Renderer,
    RenderSettings,
    default_templates_dir,
)

from .helpers import NOW, ROOT
from .html_tree import Html

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
    # contents: every item, linked to the story itself (no in-message anchors)
    contents = [e for e in soup.first("ol", "toc-list").walk() if e.tag == "li"]
    assert [li.text for li in contents] == [e.title for e in _shown_order()]
    assert not [a for a in soup.all("a") if a.attrs.get("href", "").startswith("#")]
    by_title = {e.title: e.link for e in sample.selection(NOW).entries}
    for li in contents:
        links = [e for e in li.walk() if e.tag == "a"]
        assert [a.attrs["href"] for a in links] == (
            [by_title[li.text]] if by_title[li.text] else []
        )
    ids = [td.attrs["id"] for td in soup.all("td") if "id" in td.attrs]
    assert ids == [f"item-{n}" for n in range(1, 8)] + ["headlines"]
    # the lead first, then the other items in groups, in order of their newest entry;
    # a feed without a category comes last
    (lead,) = [e for e in soup.all("h2", "item-title") if "lead-title" in e.classes]
    assert lead.text == "The new crane schedule, explained"
    assert "Top story" in soup.first("td", "lead").text
    assert [h.text for h in soup.all("h2", "group-name")] == [
        "Technology",
        "Science",
        "Gardening",
        "Other",
    ]
    assert [h.text for h in soup.all("h3", "item-title")][:2] == [
        "Tides & <tidal> power: the numbers behind the barrage",
        "Counting glaciers from orbit: what ten years of images show",
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


def _shown_order() -> list[Entry]:
    """The sample's items in the order the e-mail shows them: the lead, then by group."""
    items = sample.selection(NOW).items
    groups = ["Technology", "Science", "Gardening", None]  # by each group's newest entry
    return [items[0], *sorted(items[1:], key=lambda e: groups.index(e.source.category))]


def test_thumbnails_have_alt_and_width_and_can_be_turned_off() -> None:
    soup = Html(sample_parts()[0])
    images = soup.all("img")
    assert len(images) == 3
    for img in images:
        assert img.attrs["src"].startswith("https://images.example.org/")
        # decorative: the headline beside it says what it is (read once, shown once)
        assert img.attrs["alt"] == "" and img.attrs["width"] == "112"
        assert "max-width:100%" in img.attrs["style"]
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
        (HeadlineGroup, "group"),
        (ItemView, "item"),
        (RecipientView, "recipient"),
    ):
        names = [f.name for f in dataclasses.fields(view)]
        names += [n for n, v in vars(view).items() if isinstance(v, property)]
        for name in names:
            assert f"`{prefix}.{name}`" in doc, f"{prefix}.{name}"
    for template in default_templates_dir().glob("*.j2"):
        assert f"`{template.name}`" in doc, template.name


# -- issue 11: working in every client -----------------------------------------------------

HEX = re.compile(r"#([0-9a-fA-F]{6})\b")


def _colour(value: str | None) -> tuple[float, float, float] | None:
    m = HEX.search(value or "")
    return tuple(int(m.group(1)[i : i + 2], 16) / 255 for i in (0, 2, 4)) if m else None  # type: ignore[return-value]


def _declared(element: object, prop: str) -> str | None:
    style = getattr(element, "attrs", {}).get("style", "")
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() == prop:
            return value
    return None


def _pairs(html: str) -> list[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """(text, colour, background) of every visible piece of text, from the inline styles:
    what a client that drops <style> (and inverts on its own) starts from."""
    out = []

    def visit(element: object, fg: object, bg: object) -> None:
        attrs = getattr(element, "attrs", {})
        if "preheader" in attrs.get("class", "") or getattr(element, "tag", "") in (
            "style",
            "head",
        ):
            return
        fg = _colour(_declared(element, "color")) or fg
        bg = _colour(_declared(element, "background-color")) or _colour(attrs.get("bgcolor")) or bg
        for part in getattr(element, "parts", []):
            if isinstance(part, str):
                if part.strip():
                    out.append((part.strip()[:40], fg, bg))
            else:
                visit(part, fg, bg)

    visit(Html(html).root, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return out  # type: ignore[return-value]


def _luminance(rgb: tuple[float, ...]) -> float:
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)))
    return (lb + 0.05) / (la + 0.05)


def _invert_lightness(rgb: tuple[float, ...]) -> tuple[float, ...]:
    import colorsys

    h, lightness, s = colorsys.rgb_to_hls(*rgb)
    return colorsys.hls_to_rgb(h, 1 - lightness, s)


#: How clients without prefers-color-scheme darken a mail (docs/templates.md, "Dark mode"):
INVERSIONS = {
    "none": lambda fg, bg: (fg, bg),
    # Gmail for iOS, Outlook.com: every colour's lightness inverted
    "full": lambda fg, bg: (_invert_lightness(fg), _invert_lightness(bg)),
    # Gmail for Android, Outlook for Windows: light backgrounds darkened, dark text lightened
    "partial": lambda fg, bg: (
        _invert_lightness(fg) if sum(fg) / 3 < 0.5 else fg,
        _invert_lightness(bg) if sum(bg) / 3 > 0.5 else bg,
    ),
    # the whole page run through a colour-inverting filter (some Android mail apps)
    "filter": lambda fg, bg: (tuple(1 - c for c in fg), tuple(1 - c for c in bg)),
}


@pytest.mark.parametrize("inversion", sorted(INVERSIONS))
def test_every_text_stays_readable_when_a_client_inverts_the_colours(inversion: str) -> None:
    html, _ = sample_parts()
    pairs = _pairs(html)
    assert len(pairs) > 40
    invert = INVERSIONS[inversion]
    low = []
    for text, fg, bg in pairs:
        ratio = _contrast(*invert(fg, bg))
        if ratio < 4.5:
            low.append((text, round(ratio, 2)))
    assert low == [], f"text below WCAG AA (4.5:1) with {inversion} inversion"


def test_the_preheader_is_hidden_without_text_coloured_like_the_page() -> None:
    """SpamAssassin's HTML_FONT_LOW_CONTRAST: text the colour of its background."""
    html, _ = sample_parts()
    pre = Html(html).first("div", "preheader")
    assert _declared(pre, "color") is None
    for way in ("display:none", "max-height:0", "overflow:hidden", "opacity:0", "mso-hide:all"):
        assert way in pre.attrs["style"]
    assert ".preheader" not in html.split("prefers-color-scheme", 1)[1]  # no dark colour either
    for _text, fg, bg in _pairs(html):
        assert fg != bg


def test_text_is_at_least_14px_and_the_footer_links_are_easy_to_tap() -> None:
    html, _ = sample_parts()
    soup = Html(html)
    for element in soup.root.walk():
        size = _declared(element, "font-size")
        if size is None or "preheader" in element.classes or "bar" in element.classes:
            continue  # the hidden preheader, and the coloured bar (no text)
        assert float(size.strip().removesuffix("px")) >= 14, (element.tag, element.classes)
    narrow = html.split("max-width: 620px", 1)[1].split("@media", 1)[0]
    assert all(int(px) >= 14 for px in re.findall(r"font-size:\s*(\d+)px", narrow))
    actions = [a for a in soup.all("a") if "action" in a.classes]
    assert [a.text for a in actions] == ["Unsubscribe", "Preferences", "View in browser"]
    for a in actions:  # a fingertip's 44 px: 20 px of line and 2 × 11 px padding, and a border
        assert "padding:11px 14px" in a.attrs["style"] and "line-height:20px" in a.attrs["style"]
        assert "display:inline-block" in a.attrs["style"]
    assert re.search(r"\.action \{[^}]*display: block !important", narrow)  # phones: full width


def test_meta_charset_comes_first_in_head_after_inlining() -> None:
    for html in (sample_parts()[0], renderer().page(3, sample.selection(NOW), NOW, "n")):
        head = html.index("<head>") + len("<head>")
        assert html[head:].startswith('<meta charset="utf-8">')
        assert html.count("<meta charset") == 1
        assert html.index("<style>") > head


def test_items_carry_dir_auto_and_the_feeds_language() -> None:
    urdu = "پاکستان میں بارش کا نیا ریکارڈ"
    items = (
        replace(entry(urdu, "https://a.example/ur"), language="ur-PK"),
        entry("Plain English"),
        replace(entry("Deutsche Schlagzeile", "https://a.example/de"), language="de"),
    )
    more = (replace(entry(urdu + " ۲", "https://a.example/ur2"), language="ur-PK"),)
    composed = renderer(contents_from=1).compose(1, Selection(items, more, ()), NOW, "n")
    soup = Html(composed.html)
    titles = {h.text: h for h in soup.all("h2") + soup.all("h3") if "item-title" in h.classes}
    assert titles[urdu].attrs["dir"] == "auto" and titles[urdu].attrs["lang"] == "ur-PK"
    assert titles["Deutsche Schlagzeile"].attrs["lang"] == "de"
    assert (
        titles["Plain English"].attrs["dir"] == "auto"
        and "lang" not in titles["Plain English"].attrs
    )
    summaries = [p for p in soup.all("p", "summary")]
    assert all(p.attrs["dir"] == "auto" for p in summaries)
    linked = {a.text: a for a in soup.all("a")}
    assert linked[urdu + " ۲"].attrs == {
        "href": "https://a.example/ur2",
        "dir": "auto",
        "lang": "ur-PK",
    } | {k: v for k, v in linked[urdu + " ۲"].attrs.items() if k == "style"}
    # the text part: right-to-left words isolated, the numbering and links left alone
    lines = composed.text.splitlines()
    assert " 1. \u2068" + urdu + "\u2069" in lines
    assert "- \u2068" + urdu + " ۲ (A <Feed>)\u2069" in lines
    assert "    https://a.example/ur" in lines
    assert " 2. Plain English" in lines


def test_wrap_isolates_right_to_left_lines_and_stays_in_width() -> None:
    from digest.render.edition import wrap

    hebrew = " ".join(["שלום"] * 30)
    out = wrap(hebrew, 72, "    ", " 1. ")
    lines = out.split("\n")
    assert len(lines) > 1
    assert lines[0].startswith(" 1. \u2068") and all(line.endswith("\u2069") for line in lines)
    assert all(line.startswith("    \u2068") for line in lines[1:])
    assert all(len(line) <= 72 for line in lines)
    assert wrap("plain words", 72, "  ", "- ") == "- plain words"


def test_wrap_breaks_chinese_and_japanese_between_characters_in_columns() -> None:
    from digest.render.edition import wrap

    zh = "投资资讯网交易在线流通纪念币最新二十篇论坛主题全文建国三十五周年纪念华表和平鸽" * 2
    ja = "「詳細は後日」と述べた。これは長い文章であり、七十二桁で折り返されるべきです。" * 2
    link = "https://example.com/" + "a" * 70
    out = wrap(f"{zh} {ja} {link}", 72, "    ", " 1. ")
    lines = out.split("\n")
    assert len(lines) >= 5
    assert all(_columns(line) <= 72 for line in lines[:-1]), out
    assert lines[-1] == "    " + link  # a link is never broken, Chinese or not
    assert not any(line.lstrip().startswith(("。", "」", "、")) for line in lines)  # UAX #14
    # Korean has spaces between words: they stay whole
    ko = wrap("안녕하세요 여러분 오늘의 뉴스를 전해 드리겠습니다 " * 4, 40)
    assert set(ko.split()) == {"안녕하세요", "여러분", "오늘의", "뉴스를", "전해", "드리겠습니다"}
    assert all(_columns(line) <= 40 for line in ko.split("\n"))


def _columns(line: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


_TEXT = st.lists(
    st.sampled_from([*"ab 。、「」東京都日本語中文字한국어 ", "https://x.example/q", "\u05e9"]),
    max_size=300,
).map("".join)


@given(_TEXT, st.integers(20, 100))
def test_wrap_keeps_every_character_in_order_within_the_width(text: str, width: int) -> None:
    from digest.render.edition import wrap

    out = wrap(text, width, "  ", "- ")
    kept = "".join(out.replace("\u2068", "").replace("\u2069", "").split())
    assert kept.removeprefix("-") == "".join(text.split())
    for line in out.split("\n")[1:]:
        assert line.startswith("  ")
    for line in out.split("\n"):
        body = line[2:].strip().replace("\u2068", "").replace("\u2069", "")  # after "- "
        whole = (
            body.startswith("https://")
            or " " not in body
            and not any(c in body for c in "東京都日本語中文字")
        )
        assert _columns(line) <= width or whole, (line, width)


# -- issue 12: a lead, stories in full, then capped headline groups --------------------------


def _feed_entry(feed: str, category: str | None, n: int) -> Entry:
    source = FeedSource(f"https://{feed}.example/feed", feed, category)
    return replace(
        entry(f"{feed} {n}", f"https://{feed}.example/{n}"), source=source, source_title=feed
    )


def test_headlines_are_grouped_like_the_items_capped_and_linked_online() -> None:
    tech = [_feed_entry("flood", "Technology", n) for n in range(30)]
    tech += [_feed_entry("quiet", "Technology", n) for n in range(3)]
    other = [_feed_entry("loose", None, n) for n in range(4)]
    science = [_feed_entry("lab", "Science & Nature", n) for n in range(2)]
    items = (_feed_entry("lead", "Science & Nature", 0), _feed_entry("lab", "Science & Nature", 9))
    selection = Selection(items, (*tech, *other, *science), ())
    r = renderer(headlines_per_group=4)
    composed = r.compose(9, selection, NOW, "n")
    soup = Html(composed.html)
    assert soup.first("td", "lead").text.startswith("Top story lead 0")
    assert [h.text for h in soup.all("h3", "more-group")] == [
        "Technology",
        "Science & Nature",
        "Other",
    ]
    lists = [[li.text for li in ul.walk() if li.tag == "li"] for ul in soup.all("ul", "more-list")]
    # the feeds of a group take turns: one flooding feed does not fill the group alone
    assert lists[0] == ["flood 0 · flood", "quiet 0 · quiet", "flood 1 · flood", "quiet 1 · quiet"]
    assert lists[1] == ["lab 0 · lab", "lab 1 · lab"] and len(lists[2]) == 4
    links = {
        a.text: a.attrs["href"]
        for p in soup.all("p", "more-link")
        for a in p.walk()
        if a.tag == "a"
    }
    assert links == {"29 more from Technology →": "https://d.example/archive/9#more-technology"}
    assert "29 more from Technology: https://d.example/archive/9#more-technology" in composed.text
    assert "Every story of this edition, 41 in all, is" in soup.first("p", "note").text
    assert (
        "Every story of this edition, 41 in all, is online:\nhttps://d.example/archive/9#headlines"
        in composed.text
    )
    # the archive page: every headline under its group's id, nothing counted
    page = Html(r.page(9, selection, NOW, "n"))
    assert [h.attrs["id"] for h in page.all("h3", "more-group")] == [
        "more-technology",
        "more-science-nature",
        "more-other",
    ]
    listed = [li.text for ul in page.all("ul", "more-list") for li in ul.walk() if li.tag == "li"]
    assert len(listed) == len(selection.more) and not page.all("p", "more-link")
    assert "View in browser" not in page.root.text


def test_group_anchors_are_readable_unique_and_the_same_in_every_part() -> None:
    from digest.render.views import anchors

    names = ["Technology", "technology", "Économie", "中文", None, "Other"]
    ids = anchors(names)
    assert ids["Technology"] == "more-technology" and ids["technology"] == "more-technology-2"
    assert ids["Économie"] == "more-economie" and ids["Other"] == "more-other"
    assert ids[None] == "more-other-2" and re.fullmatch(r"more-[0-9a-f]{8}", ids["中文"])
    assert len(set(ids.values())) == len(names)
    assert anchors(list(reversed(names))) == ids  # whatever the order they come in
    for anchor in ids.values():
        assert re.fullmatch(r"[a-z0-9-]+", anchor)


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
        '<p class="summary" dir="auto" style="' in composed.html
        and "First paragraph &amp; more.</p>" in composed.html
        and "Second &lt;one&gt;<br>its next line</p>" in composed.html
    )
    assert "    First paragraph & more.\n\n    Second <one>\n    its next line\n" in composed.text


def test_untitled_entries_never_make_the_subject() -> None:
    untitled = entry(UNTITLED)
    sel = Selection((untitled, entry("A real title")), (), ())
    assert renderer().subject(sel, NOW) == "Daily: A real title (+1 more)"
    assert renderer().subject(Selection((untitled,), (), ()), NOW) == "Daily"
