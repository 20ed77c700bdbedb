"""The digest's language: dates and numbers through Babel, template strings through gettext.

Templates mark their words with ``_()`` / ``ngettext()`` (Jinja2's i18n extension).
Catalogs are plain gettext ``.po`` files, read at start-up (no compile step), from
``locale/<lang>/LC_MESSAGES/digest.po`` in the operator's templates folder first, then
in the default templates; a string no catalog translates stays in English.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.numbers import format_decimal
from babel.support import Translations

from ..errors import RenderError

DOMAIN = "digest"


def parse_locale(value: str) -> Locale:
    """``"en"``, ``"en_GB"`` or ``"en-GB"`` → a Babel Locale; ValueError when unknown."""
    text = value.strip().replace("-", "_")
    try:
        return Locale.parse(text)
    except (UnknownLocaleError, ValueError) as exc:
        raise ValueError(
            f'{value!r} is not a locale: write a language, or language_TERRITORY, like "en", '
            '"en_GB", "de" or "pt_BR"'
        ) from exc


class Formats:
    """Locale-aware formatting in the digest's time zone (the templates' filters)."""

    def __init__(self, locale: Locale, zone: ZoneInfo) -> None:
        self.locale = locale
        self.zone = zone

    @property
    def lang(self) -> str:
        """The BCP 47 tag for ``<html lang>``: ``en-GB``."""
        return "-".join(
            p for p in (self.locale.language, self.locale.script, self.locale.territory) if p
        )

    @property
    def direction(self) -> str:
        return "rtl" if self.locale.character_order == "right-to-left" else "ltr"

    def date(self, when: datetime, style: str = "full") -> str:
        """The edition's date: "Saturday, 28 November 2026" (``style``: full, long,
        medium or short)."""
        return format_date(when.astimezone(self.zone), style, locale=self.locale)

    def moment(self, when: datetime, relative_to: datetime | None = None) -> str:
        """An entry's date and time: "28 Nov, 07:05"; the year only when it differs from
        ``relative_to``'s (or always, without it)."""
        local = when.astimezone(self.zone)
        same_year = relative_to is not None and relative_to.astimezone(self.zone).year == local.year
        day = format_skeleton("MMMd" if same_year else "yMMMd", local, locale=self.locale)
        time = format_time(local, "short", locale=self.locale)
        return str(self.locale.datetime_formats["short"]).format(time, day)

    def number(self, value: int | float) -> str:
        return format_decimal(value, locale=self.locale)


def catalogs(folders: Sequence[Path], locale: Locale) -> gettext.NullTranslations:
    """The translations for ``locale``: every catalog found, the first folder's first,
    each falling back to the next, and in the end to the English in the templates."""
    names = dict.fromkeys([str(locale), locale.language])  # "de_AT", then "de"
    found: list[gettext.NullTranslations] = []
    for folder in folders:
        for name in names:
            po = folder / "locale" / name / "LC_MESSAGES" / f"{DOMAIN}.po"
            if po.is_file():
                found.append(_load_po(po, locale))
    if not found:
        return gettext.NullTranslations()
    first = found[0]
    for more in found[1:]:
        first.add_fallback(more)
    return first


def _load_po(path: Path, locale: Locale) -> Translations:
    try:
        with path.open("rb") as f:
            catalog = read_po(f, locale=locale, domain=DOMAIN, abort_invalid=True)
    except (OSError, PoFileError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise RenderError(f"cannot read the translations: {exc}", str(path), line) from exc
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)
