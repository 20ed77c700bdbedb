"""WordPress-like RSS feeds for the benchmarks: deterministic, a few KB per entry.

Each entry looks like what WordPress 6 writes: a title with typographic entities, a
``?p=`` guid, ``dc:creator``, categories, an excerpt ending in ``[&#8230;]`` and a
``content:encoded`` body of paragraphs, links, a figure with ``srcset``, a list and a
quote, with some non-ASCII text.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

WORDS = tuple(
    " ".join(
        (
            "the garden council river build window market winter station library harbour",
            "morning project budget engine signal orchard bridge volunteer kitchen archive",
            "planning network forecast village review museum season concert battery theory",
            "we found that most of it was quietly better than expected and nobody minded",
            "café naïve résumé façade Zoë Łódź Müller",
        )
    ).split(" ")
)
NAMES = ("Margaret Okonkwo", "Dev Raman", "Zoë Müller", "Jan Kowalski", "Aiko Tanaka")
CATEGORIES = ("News", "Events", "Soil", "Planting", "Opinion", "Tech", "Travel")
EPOCH = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize()


def _paragraph(rng: random.Random, site: str) -> str:
    parts = []
    for _ in range(rng.randint(3, 6)):
        s = _sentence(rng, rng.randint(8, 18))
        if rng.random() < 0.25:
            s += f' (<a href="https://{site}/{rng.choice(WORDS)}/">{rng.choice(WORDS)}</a>)'
        if rng.random() < 0.2:
            s = f"&#8220;{s}&#8221;"
        parts.append(s + ".")
    return "<p>" + " ".join(parts) + "</p>"


def entry_xml(feed: int, n: int, rng: random.Random, site: str) -> str:
    post = 1000 + n
    when = EPOCH - timedelta(hours=n * 7 + feed % 5)
    title = f"{_sentence(rng, rng.randint(4, 9))} &#8211; part {n}"
    slug = f"post-{feed}-{n}"
    year = f"{when:%Y/%m/%d}"
    body = [_paragraph(rng, site), _paragraph(rng, site)]
    body.append(
        f'<figure class="wp-block-image size-large"><img decoding="async" loading="lazy" '
        f'src="https://{site}/wp-content/uploads/{year}/{slug}.jpg" alt="{rng.choice(WORDS)}" '
        f'width="1024" height="683" class="wp-image-{post + 1}" '
        f'srcset="https://{site}/wp-content/uploads/{year}/{slug}-300x200.jpg 300w, '
        f'https://{site}/wp-content/uploads/{year}/{slug}.jpg 1024w" '
        f'sizes="(max-width: 1024px) 100vw, 1024px" /><figcaption>'
        f"{_sentence(rng, 6)}</figcaption></figure>"
    )
    body.append(_paragraph(rng, site))
    items = "".join(f"<li>{_sentence(rng, 5)}</li>" for _ in range(rng.randint(2, 4)))
    body.append(f"<ul>{items}</ul>")
    body.append(f"<blockquote><p>{_sentence(rng, 15)}.</p></blockquote>")
    body.append(_paragraph(rng, site))
    body.append(
        f'<p><a href="https://{site}/{year}/{slug}/#more-{post}" class="more-link">'
        f'Continue reading <span class="screen-reader-text">{slug}</span></a></p>'
    )
    excerpt = _sentence(rng, 40)
    cats = "".join(
        f"<category><![CDATA[{c}]]></category>" for c in rng.sample(CATEGORIES, rng.randint(1, 3))
    )
    return f"""
  <item>
    <title>{title}</title>
    <link>https://{site}/{year}/{slug}/</link>
    <comments>https://{site}/{year}/{slug}/#respond</comments>
    <dc:creator><![CDATA[{rng.choice(NAMES)}]]></dc:creator>
    <pubDate>{format_datetime(when)}</pubDate>
    {cats}
    <guid isPermaLink="false">https://{site}/?p={post}</guid>
    <description><![CDATA[{excerpt} [&#8230;]]]></description>
    <content:encoded><![CDATA[{"".join(body)}]]></content:encoded>
    <wfw:commentRss>https://{site}/{year}/{slug}/feed/</wfw:commentRss>
    <slash:comments>{rng.randint(0, 9)}</slash:comments>
  </item>"""


def feed_xml(feed: int, entries: int, first: int = 0) -> bytes:
    """Feed number ``feed`` with ``entries`` entries, newest first, numbered from ``first``.
    Entry n of a feed is the same bytes whatever ``first`` is (the daily case: a feed
    the day before is the same feed with ``first`` two higher); the envelope's
    ``lastBuildDate`` is entry ``first``'s date, as WordPress writes it."""
    site = f"blog-{feed}.example"
    items = "".join(
        entry_xml(feed, n, random.Random(feed * 100_003 + n), site)
        for n in range(first, first + entries)
    )
    built = EPOCH - timedelta(hours=first * 7 + feed % 5)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:wfw="http://wellformedweb.org/CommentAPI/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:atom="http://www.w3.org/2005/Atom"
  xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
  xmlns:slash="http://purl.org/rss/1.0/modules/slash/">
<channel>
  <title>Blog number {feed}</title>
  <atom:link href="https://{site}/feed/" rel="self" type="application/rss+xml" />
  <link>https://{site}</link>
  <description>Posts about things, number {feed}</description>
  <lastBuildDate>{format_datetime(built)}</lastBuildDate>
  <language>en-GB</language>
  <sy:updatePeriod>hourly</sy:updatePeriod>
  <sy:updateFrequency>1</sy:updateFrequency>
  <generator>https://wordpress.org/?v=6.9</generator>{items}
</channel>
</rss>
""".encode()
