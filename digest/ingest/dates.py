"""Dates feedparser cannot read: RFC 822-style and textual dates in other languages.

feedparser reads RFC 822, RFC 3339/ISO 8601 and a few regional formats, all with
English month names. Feeds written by other software put the site's language in the
date: ``Seg, 24 Set 2018 19:42:40 -0300`` (UOL, Portuguese), ``Mo, 24 Dez 2018``,
``lun., 24 sept. 2018 19h42``, ``24 de septiembre de 2018``, ``Пн, 24 сен 2018``.
``parse`` reads those with the month and day names of the Unicode CLDR, through Babel:
the text is cut into words, numbers, a time and a UTC offset; every word must be a
month, a day of the week, a zone abbreviation or a known filler ("de", "um", "à"...),
exactly one must be a month, and a four-digit year must be there (a two-digit one only
after the month, RFC 822's form). Anything else is not a date: an entry whose date
cannot be read is better undated (placed by feed order) than misdated.

A word that names different months in two languages means the month of the language
listed first in ``LANGUAGES``; a word that is both a month and a day of the week
(``mar``: March, and Tuesday in French) is the month only when no other word is one.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

#: Languages whose month and day names are read, first ones first when a word is
#: ambiguous. English first: feedparser reads most English dates, not all (``Sept``).
LANGUAGES = (
    "en", "pt", "es", "fr", "de", "it", "nl", "ru",
    "pl", "sv", "da", "nb", "fi", "cs", "tr", "ca", "ro", "uk", "hu", "id", "el",
)  # fmt: skip
#: Languages whose month names are also read by their first three or four letters (the
#: abbreviations feeds write, which CLDR does not always give: ``сен``, ``Sept``).
PREFIXED = frozenset({"en", "pt", "es", "fr", "de", "it", "nl", "ru"})
#: Words that join the parts of a date: "24 de setembro de 2018 às 19:42".
FILLERS = frozenset(
    {
        "de", "del", "d", "à", "a", "às", "as", "le", "el", "the", "of", "at", "on", "um",
        "uhr", "om", "alle", "ore", "h", "kl", "klo", "o", "в", "г", "года", "y", "et",
        "den", "der", "am", "pm", "t",
    }
)  # fmt: skip
#: Zone abbreviations and their UTC offsets in hours (RFC 822's, and common ones).
ZONES: Mapping[str, float] = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0, "wet": 0,
    "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
    "akst": -9, "akdt": -8, "hst": -10, "ast": -4, "adt": -3, "nst": -3.5, "ndt": -2.5,
    "bst": 1, "west": 1, "cet": 1, "mez": 1, "cest": 2, "mesz": 2, "eet": 2, "eest": 3,
    "msk": 3, "мск": 3, "brt": -3, "brst": -2, "art": -3, "jst": 9, "kst": 9, "hkt": 8,
    "sgt": 8, "awst": 8, "acst": 9.5, "aest": 10, "aedt": 11, "nzst": 12, "nzdt": 13,
}  # fmt: skip
_TOKEN = re.compile(
    r"(?P<time>\d{1,2}(?::|h\s?)\d{2}(?::\d{2})?(?:[.,]\d+)?)"
    r"|(?P<offset>(?<![\w])[+-]\d{2}:?\d{2}\b)"
    r"|(?P<number>\d+)"
    r"|(?P<word>[^\W\d_]+)"
)
#: Longer than any date a feed writes: a longer text is not a date.
MAX_CHARS = 120


@functools.cache
def names() -> tuple[Mapping[str, int], frozenset[str]]:
    """Word → month number (1-12), and the words that name a day of the week, from
    CLDR: wide and abbreviated, "format" (genitive: ``сентября``) and "stand-alone"."""
    from babel import Locale  # loaded once per process, when a date needs it

    months: dict[str, int] = {}
    days: set[str] = set()
    for code in LANGUAGES:
        locale = Locale.parse(code)
        for context in ("format", "stand-alone"):
            for width in ("wide", "abbreviated"):
                for number, name in locale.months[context][width].items():
                    for word in _words(name):
                        months.setdefault(word, number)
                for name in locale.days[context][width].values():
                    days.update(w for w in _words(name) if len(w) > 1)
            if code in PREFIXED:
                for number, name in locale.months[context]["wide"].items():
                    word = _fold(name)
                    for size in (3, 4):
                        if len(word) > size:
                            months.setdefault(word[:size], number)
    return months, frozenset(days) - FILLERS


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _words(name: str) -> list[str]:
    """The words of a CLDR name that say which month or day it is ("de gener" → "gener")."""
    return [w for w in re.findall(r"[^\W\d_]+", _fold(name)) if w not in FILLERS]


def parse(text: str | None) -> datetime | None:
    """The UTC date ``text`` means, or None when it is not a date this module reads.
    Without a zone, UTC (as feedparser does)."""
    if not text or len(text) > MAX_CHARS:
        return None
    months, days = names()
    month: list[int] = []
    weekday_months: list[int] = []
    numbers: list[str] = []
    clock: str | None = None
    offset: timedelta | None = None
    pm: bool | None = None
    for token in _TOKEN.finditer(_fold(text)):
        kind, value = token.lastgroup, token.group()
        if kind == "time" and clock is None:
            clock = value
        elif kind == "offset" and offset is None:
            offset = _offset(value)
            if offset is None:
                return None
        elif kind == "number":
            numbers.append(value)
        elif kind == "word" and value in ("am", "pm"):
            pm = value == "pm"
        elif kind == "word" and value in months:
            (weekday_months if value in days else month).append(months[value])
        elif kind == "word" and value in ZONES and offset is None:
            offset = timedelta(hours=ZONES[value])
        elif kind != "word" or (value not in days and value not in FILLERS):
            return None  # a word that is no part of a date, a second time or offset
    if not month:  # "Mar, 25 Mar 2025": Tuesday and March, or March twice
        month = list(set(weekday_months))
    if len(month) != 1:
        return None
    return _build(month[0], numbers, clock, pm, offset)


def _build(
    month: int, numbers: list[str], clock: str | None, pm: bool | None, offset: timedelta | None
) -> datetime | None:
    """The date from its parts; None when they do not make one."""
    years = [n for n in numbers if len(n) == 4]
    small = [n for n in numbers if len(n) <= 2]
    if len(years) == 1 and len(small) == 1 and len(numbers) == 2:
        year, day = int(years[0]), int(small[0])
    elif not years and len(small) == 2 and len(numbers) == 2:
        day, year = int(small[0]), int(small[1])  # RFC 822: "24 Sep 18"
        year += 2000 if year < 70 else 1900  # RFC 5322's reading of a two-digit year
    else:
        return None
    hour = minute = second = 0
    if clock is not None:
        parts = re.split(r"[:h]\s?", clock.split(".")[0].split(",")[0])
        hour, minute = int(parts[0]), int(parts[1])
        second = int(parts[2]) if len(parts) > 2 else 0
    if pm is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if pm else 0)
    zone = timezone(offset) if offset is not None else UTC
    try:
        local = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):  # no such day or time; beyond year 1 or 9999 in UTC
        return None


def _offset(value: str) -> timedelta | None:
    digits = value[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 14 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if value[0] == "-" else delta
