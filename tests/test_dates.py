"""Dates in other languages (``ingest/dates.py``): a table per language, what is not a
date, and properties over every language's CLDR names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from babel import Locale
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.ingest import dates
from digest.ingest.parse import parse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        # Portuguese: UOL's RFC 822 with Portuguese names, and a textual date
        ("pt", "Seg, 24 Set 2018 19:42:40 -0300", utc(2018, 9, 24, 22, 42, 40)),
        ("pt", "Sáb, 01 Dez 2018 08:00:00 -0200", utc(2018, 12, 1, 10, 0)),
        ("pt", "24 de setembro de 2018 às 19h42", utc(2018, 9, 24, 19, 42)),
        ("pt", "qua., 3 fev. 2021 10:00:00 BRT", utc(2021, 2, 3, 13, 0)),
        # Spanish
        ("es", "lun, 24 sept 2018 19:42:40 +0200", utc(2018, 9, 24, 17, 42, 40)),
        ("es", "martes, 24 de septiembre de 2019 10:00", utc(2019, 9, 24, 10, 0)),
        ("es", "Mié, 02 Ene 2019 12:00:00 GMT", utc(2019, 1, 2, 12, 0)),
        # French (19h42, "mar." is Tuesday and March: a month only when nothing else is)
        ("fr", "lun., 24 sept. 2018 19h42 +0200", utc(2018, 9, 24, 17, 42)),
        ("fr", "mar., 25 mars 2025", utc(2025, 3, 25)),
        ("fr", "Mar, 25 Mar 2025 10:00:00 GMT", utc(2025, 3, 25, 10, 0)),
        ("fr", "jeu. 1 août 2019 à 07:30 CEST", utc(2019, 8, 1, 5, 30)),
        # German
        ("de", "Mo, 24 Dez 2018 19:42:40 +0100", utc(2018, 12, 24, 18, 42, 40)),
        ("de", "Di, 24. Sep. 2019 10:00 MESZ", utc(2019, 9, 24, 8, 0)),
        ("de", "3. März 2020 um 14:05 Uhr", utc(2020, 3, 3, 14, 5)),
        ("de", "Do, 30 Mai 2019 09:00:00 MEZ", utc(2019, 5, 30, 8, 0)),
        # Italian
        ("it", "lun, 24 set 2018 19:42:40 +0200", utc(2018, 9, 24, 17, 42, 40)),
        ("it", "24 settembre 2019 ore 10:00", utc(2019, 9, 24, 10, 0)),
        ("it", "ven 31 gen 2020 23:59:59 +0100", utc(2020, 1, 31, 22, 59, 59)),
        # Dutch
        ("nl", "di 24 sep 2019 10:00:00 +0200", utc(2019, 9, 24, 8, 0)),
        ("nl", "zo, 1 mrt 2020", utc(2020, 3, 1)),
        ("nl", "15 oktober 2021 om 09:15", utc(2021, 10, 15, 9, 15)),
        # Russian: abbreviations CLDR has ("сент."), those feeds write ("сен"), genitive
        ("ru", "Пн, 24 сен 2018 19:42:40 +0300", utc(2018, 9, 24, 16, 42, 40)),
        ("ru", "24 сентября 2018 г. 19:42", utc(2018, 9, 24, 19, 42)),
        ("ru", "чт, 07 нояб. 2019 12:00:00 МСК", utc(2019, 11, 7, 9, 0)),
        # others CLDR brings for free
        ("pl", "wt., 24 wrz 2019", utc(2019, 9, 24)),
        ("hu", "2018. szeptember 24. 10:00", utc(2018, 9, 24, 10, 0)),
        ("ca", "24 de març de 2019", utc(2019, 3, 24)),
        ("sv", "mån 4 mars 2024 08:00 CET", utc(2024, 3, 4, 7, 0)),
        # English that feedparser misses
        ("en", "September 24, 2018", utc(2018, 9, 24)),
        ("en", "Sept 24, 2018 7:00 PM", utc(2018, 9, 24, 19, 0)),
        ("en", "Mon, 24 Sep 18 19:42:40 EST", utc(2018, 9, 25, 0, 42, 40)),
    ],
)
def test_dates_per_language(language: str, text: str, expected: datetime) -> None:
    assert dates.parse(text) == expected, language


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "24 Set",  # no year: which one?
        "Set 2018",  # no day
        "hello 24 Sep 2018",  # a word that is no part of a date
        "24 Sep 2018 +9900",  # no such offset
        "31 Fev 2018",  # no such day
        "24 Sep Oct 2018",  # two months
        "24/09/2018",  # no month name: the order of day and month is anyone's guess
        "13:00 PM 24 Sep 2018",
        "24 Sep 2018 25:00",
        "24 Sep 0000",
        "31 Dec 9999 23:00 -0500",  # after year 9999 in UTC
        "1 Jan 0001 00:30 +0100",  # before year 1 in UTC
        "24 Sep 2018 " + "x" * 200,
    ],
)
def test_what_is_not_a_date(text: str) -> None:
    assert dates.parse(text) is None


def test_uol_feed_is_dated_in_2018() -> None:
    """The feed of issue 12, cut down: its stories are from 2018, not undated (newest)."""
    body = (
        b'<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel>'
        b"<title>UOL Noticias</title><item><title>Ibope</title>"
        b"<link>https://noticias.uol.com.br/a.htm</link>"
        b"<pubDate>Seg, 24 Set 2018 19:42:40 -0300</pubDate></item></channel></rss>"
    )
    (entry,) = parse(body, "https://rss.uol.com.br/feed/noticias.xml").entries
    assert entry.published == utc(2018, 9, 24, 22, 42, 40)


def test_no_word_means_two_months_among_the_first_languages() -> None:
    """The languages the issue names read each of their month names as that month."""
    months, _ = dates.names()
    for code in ("pt", "es", "fr", "de", "it", "nl", "ru"):
        locale = Locale.parse(code)
        for context in ("format", "stand-alone"):
            for width in ("wide", "abbreviated"):
                for number, name in locale.months[context][width].items():
                    for word in dates._words(name):
                        assert months[word] == number, (code, name)


LANGUAGES = st.sampled_from(("en", "pt", "es", "fr", "de", "it", "nl", "ru"))
MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=300, deadline=None)
@given(LANGUAGES, MOMENTS, st.booleans(), st.sampled_from(("wide", "abbreviated")))
def test_any_date_written_with_cldr_names_reads_back(
    code: str, when: datetime, weekday: bool, width: str
) -> None:
    """RFC 822's shape with a language's month (and day) names reads back exactly."""
    locale = Locale.parse(code)
    month = locale.months["format"][width][when.month]
    day = locale.days["format"]["abbreviated"][when.weekday()] + ", " if weekday else ""
    text = f"{day}{when.day:02d} {month} {when.year} {when:%H:%M:%S} +0000"
    assert dates.parse(text) == when, text


WORDS = st.sampled_from(["Seg", "Set", "mar", "Dez", "de", "GMT", "pm", "г", "сен", ",", "."])
DATE_LIKE = st.lists(
    st.one_of(WORDS, st.from_regex(r"[+-]?\d{1,4}(:\d{2}){0,2}", fullmatch=True)), max_size=8
).map(" ".join)


@given(st.one_of(st.text(max_size=80), DATE_LIKE))
def test_any_text_is_a_utc_date_or_none(text: str) -> None:
    found = dates.parse(text)
    assert found is None or found.utcoffset() is not None and found.tzinfo is UTC
