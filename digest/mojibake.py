"""Undo UTF-8 mojibake: UTF-8 bytes that were decoded through a single-byte code page.

Approach
--------
For every supported code page we build two reverse maps, character -> byte, one for the
bytes that can *start* a multi-byte UTF-8 sequence (0xC2-0xF4) and one for continuation
bytes (0x80-0xBF).  "Sloppy" decodings are folded in: a byte that the code page leaves
undefined may appear as the C1 control U+0080-U+009F (latin-1 style) or as the
windows-1252 character for that byte (as in windows-874 text with windows-1252 quotes).
Because the maps are position-aware, a character that stands for two bytes (one lead, one
continuation) still round-trips.  From the maps we compile one regex per code page that
matches *runs* of complete, valid UTF-8 sequences spelled in that code page's characters,
and repair run by run, so correct text around a damaged segment is left alone.

A run is only replaced when its decoding is plausible and the evidence outweighs the risk:

* vetoes: the decoded text contains unassigned/private/surrogate characters or only rare
  characters (NKo, Braille, CJK extension A, ...); the run touches a letter of the same
  code page that is not part of any run (so "Італії" or "Вёрстка" is never touched);
* strong runs (a 3- or 4-byte sequence such as ``â€™``/``โ€œ``/``ðŸ˜€``, or two or more
  chained sequences such as ``Ð¿Ñ€``) are repaired unless the text as a whole reads as
  legitimate text in that code page's script (many code-page letters outside any run);
* any run is repaired when it looks wrong in context: C1 controls, characters that are
  practically only seen in mojibake (``¤ ¦ ¨ ‰ ƒ``...), a symbol glued inside a word
  (``cafÃ©``), lowercase followed by an accented capital, an accented letter followed by
  a currency sign, or another script glued to a word (``Patrรญcia``);
* a lone two-byte run without such signs (``ย\\xa0`` for a no-break space) is repaired only
  when the same text holds other confirmed damage from that code page.

The search repeats (at most three passes) to undo double mojibake.  A ``â€`` prefix whose
third byte was dropped (0x9D is undefined in windows-1252 and is often lost) becomes ``”``.
A fast pre-check (``str.isascii`` and one regex over lead/continuation characters of all
code pages) returns clean text unchanged.  ftfy is not used: its other fixers change more
than mojibake and it does not know windows-874.

Limits
------
It does not repair: mojibake through code pages not listed in ``CODEPAGES`` (e.g. KOI8-R,
Shift-JIS, windows-1255/1256); text whose damaged bytes were replaced or dropped (``?`` or
U+FFFD in place of a byte, a no-break space turned into a space), except the ``â€`` + lost
0x9D case; mojibake written as HTML entities; isolated two-byte runs that are also plausible
words (``รถ`` is both Thai "car" and mojibake of "ö") and damaged text mixed with a lot of
correct text in the same script, where only runs that look wrong in context are repaired.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["CODEPAGES", "repair"]

#: Code pages tried, in order. latin-1 is folded into windows-1252 (C1 controls accepted).
CODEPAGES: tuple[str, ...] = (
    "windows-1252",
    "windows-1251",
    "windows-1250",
    "windows-1253",
    "windows-1254",
    "windows-1257",
    "iso-8859-2",
    "cp874",  # windows-874
    "mac-roman",
    "cp437",
)
_MAX_ROUNDS = 4  # double mojibake, or segments damaged through different code pages

# Characters that essentially only occur in mojibake, or at least never next to letters.
_BAD = frozenset("¤¦¨¯¸ˆ˜‰†‡ƒ¬⌐◊\ufffd")
_CURRENCY = frozenset("€£¥¢¤₧")
_SYMBOL_CATEGORIES = frozenset({"Sc", "Sk", "Sm", "So", "No"})
_SYMBOLISH = frozenset("ªº\xad")  # not symbols by category, but symbols in practice
_CLOSING = frozenset("\xa0”’»…–—")
_IN_WORD = frozenset("’'‘ʼ·-‐‑–—")  # punctuation that real words (or joined words) contain

# Code point ranges (inclusive) that real decoded mojibake plausibly produces. Anything
# else assigned is "rare": tolerated inside a run, but a run made only of rare characters
# is left alone (e.g. Ukrainian "вії" would otherwise decode to a Coptic letter).
_COMMON_RANGES: tuple[tuple[int, int], ...] = (
    (0x00A0, 0x033F), (0x0384, 0x03CE), (0x0400, 0x045F), (0x048A, 0x052F),
    (0x0531, 0x058A), (0x05B0, 0x05F4),
    (0x0600, 0x06FF), (0x0900, 0x0FFF), (0x1000, 0x109F), (0x10A0, 0x10FF),
    (0x1200, 0x139F), (0x13A0, 0x167F), (0x1780, 0x17FF), (0x1D00, 0x1DBF), (0x1E00, 0x1FFE),
    (0x2000, 0x27BF), (0x2B00, 0x2BFF), (0x2D30, 0x2D7F), (0x3000, 0x30FF),
    (0x3130, 0x318F), (0x3200, 0x33FF), (0x4E00, 0x9FFF), (0xA720, 0xA7FF), (0xAC00, 0xD7A3),
    (0xFB00, 0xFB06), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFF01, 0xFFEF),
    (0xFFFD, 0xFFFD), (0x10000, 0x3FFFF), (0xE0000, 0xE01EF),
)  # fmt: skip
_COMMON_STARTS = [lo for lo, _ in _COMMON_RANGES]
# The most frequent of those; used to choose between code pages that both fit.
_FREQUENT_RANGES: tuple[tuple[int, int], ...] = (
    (0x00A0, 0x017F), (0x02BB, 0x02BC), (0x0386, 0x03CE), (0x0400, 0x045F), (0x05D0, 0x05EA),
    (0x0620, 0x064A), (0x0E01, 0x0E5B), (0x2010, 0x2122), (0x3040, 0x30FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
)  # fmt: skip
_FREQUENT_STARTS = [lo for lo, _ in _FREQUENT_RANGES]

# Coarse script of a letter, enough to notice Thai or Cyrillic glued to a Latin word.
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x02FF, "latin"), (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"),
    (0x0530, 0x058F, "armenian"), (0x0590, 0x05FF, "hebrew"), (0x0600, 0x077F, "arabic"),
    *((lo, lo + 0x7F, f"indic{lo:x}") for lo in range(0x0900, 0x0E00, 0x80)),
    (0x0E00, 0x0E7F, "thai"), (0x1E00, 0x1EFF, "latin"), (0x1F00, 0x1FFF, "greek"),
    (0x2C60, 0x2C7F, "latin"), (0xA720, 0xA7FF, "latin"), (0xAB30, 0xAB6F, "latin"),
    (0x3040, 0x9FFF, "cjk"), (0xAC00, 0xD7A3, "cjk"), (0xFF00, 0xFFEF, "cjk"),
)  # fmt: skip
_SCRIPT_STARTS = [lo for lo, _, _ in _SCRIPT_RANGES]


def _script(ch: str) -> str:
    """Script of a letter, mark or digit; punctuation and symbols are "other" (shared)."""
    cp = ord(ch)
    i = bisect_right(_SCRIPT_STARTS, cp) - 1
    if i < 0 or cp > _SCRIPT_RANGES[i][1]:
        return "other"
    if not ch.isalpha() and unicodedata.category(ch) not in ("Mn", "Mc", "Nd"):
        return "other"
    return _SCRIPT_RANGES[i][2]


def _case(text: str) -> str:
    """ "upper", "lower", "" (no cased letters) or "mixed"."""
    upper = any(ch.isupper() for ch in text)
    lower = any(ch.islower() for ch in text)
    return "mixed" if upper and lower else "upper" if upper else "lower" if lower else ""


def _in(ranges: tuple[tuple[int, int], ...], starts: list[int], ch: str) -> bool:
    cp = ord(ch)
    i = bisect_right(starts, cp) - 1
    return i >= 0 and cp <= ranges[i][1]


def _frequency(ch: str) -> int:
    """2 for frequent characters, 1 for capitals of frequent scripts, 0 for the rest."""
    if not _in(_FREQUENT_RANGES, _FREQUENT_STARTS, ch):
        return 0
    return 1 if ch.isupper() else 2


def _is_valid_char(ch: str, prev: str) -> bool:
    """Whether ``ch`` may appear in repaired text (``prev`` is the character before it)."""
    cat = unicodedata.category(ch)
    if cat in ("Cs", "Co") or (cat == "Cn" and not 0x1F000 <= ord(ch) <= 0x1FFFF):
        return False
    if cat[0] == "M":  # a combining mark needs a base, of its own script if it has one
        script = _script(ch)
        return bool(prev) and not prev.isspace() and script in ("other", _script(prev))
    return not (cat == "Cc" and not 0x80 <= ord(ch) <= 0x9F)


def _char_class(chars: Iterable[str]) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(set(chars))) + "]"


class _CodePage:
    """Reverse maps and run regex for UTF-8 read through one (sloppy) code page."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lead: dict[str, int] = {}  # characters for bytes 0xC2-0xF4
        self.cont: dict[str, int] = {}  # characters for bytes 0x80-0xBF
        variants: list[tuple[int, str]] = []
        for b in range(0x80, 0x100):
            raw = bytes([b])
            try:
                variants.append((b, raw.decode(name)))
            except UnicodeDecodeError:
                variants.append((b, chr(b)))  # latin-1 style: C1 control or latin-1 char
                with contextlib.suppress(UnicodeDecodeError):
                    variants.append((b, raw.decode("windows-1252")))
            if name == "windows-1252" and b < 0xA0:
                variants.append((b, chr(b)))  # latin-1: C1 controls for 0x80-0x9F
        for b, ch in variants:  # defined characters come first and win any clash
            target = self.cont if b < 0xC0 else self.lead if 0xC2 <= b <= 0xF4 else None
            if target is not None and ch not in target:
                target[ch] = b
        self.high_letters = frozenset(
            ch for _, ch in variants if unicodedata.category(ch)[0] in "LM" and not ch.isascii()
        )
        self.lead_chars = frozenset(self.lead)
        self.cont_chars = frozenset(self.cont)
        self.run_re = re.compile(self._run_pattern())
        self.pair_re = re.compile(self._lead(0xC2, 0xF4) + self._cont(0x80, 0xBF))
        self.letter_re = re.compile(_char_class(self.high_letters))
        # The third byte of U+201D (0x9D) may have been dropped if the page lacks it.
        lossy = [c for c, b in self.cont.items() if b == 0x9D] == ["\x9d"]
        e2 = self._lead(0xE2, 0xE2)
        self.lost_re = (
            re.compile(f"{e2}{self._cont(0x80, 0x80)}\ufffd?(?!{self._cont(0x80, 0xBF)})")
            if lossy
            else None
        )
        self.f0 = frozenset(c for c, b in self.lead.items() if b == 0xF0)

    def _cont(self, lo: int, hi: int) -> str:
        return _char_class(c for c, b in self.cont.items() if lo <= b <= hi)

    def _lead(self, lo: int, hi: int) -> str:
        return _char_class(c for c, b in self.lead.items() if lo <= b <= hi)

    def _run_pattern(self) -> str:
        """Runs of valid UTF-8 sequences. Each starts with one lead-character class (which
        lets the regex engine skip ahead fast); a lookbehind then picks the tail's shape."""
        c = self._cont(0x80, 0xBF)
        tails = {
            (0xC2, 0xDF): c,
            (0xE0, 0xE0): self._cont(0xA0, 0xBF) + c,
            (0xE1, 0xEC): c * 2,
            (0xED, 0xED): self._cont(0x80, 0x9F) + c,
            (0xEE, 0xEF): c * 2,
            (0xF0, 0xF0): self._cont(0x90, 0xBF) + c * 2,
            (0xF1, 0xF3): c * 3,
            (0xF4, 0xF4): self._cont(0x80, 0x8F) + c * 2,
        }
        alternatives = "|".join(f"(?<={self._lead(*lead)}){tail}" for lead, tail in tails.items())
        seq = f"{self._lead(0xC2, 0xF4)}(?:{alternatives})"
        return f"{seq}(?:{seq})*"

    def fix_lost_bytes(self, text: str) -> str:
        """Replace ``â€`` (in this page's letters) whose third byte was lost: usually ``”``."""
        return text if self.lost_re is None else self.lost_re.sub(self._lost_byte, text)

    def _lost_byte(self, m: re.Match[str]) -> str:
        s = m.string
        prev = s[m.start() - 1] if m.start() else ""
        nxt = s[m.end()] if m.end() < len(s) else ""
        if prev in self.high_letters or prev in self.lead_chars or nxt.isalnum():
            return m.group()
        if nxt in self.f0 or (prev and unicodedata.category(prev) == "So"):
            return "\u200d"  # zero-width joiner inside an emoji sequence
        return "\u201d"

    def decode(self, run: str) -> tuple[str, list[int]]:
        """UTF-8-decode a matched run; also return the byte length of each code point."""
        data = bytearray()
        lengths: list[int] = []
        pending = 0
        for ch in run:
            if pending:
                data.append(self.cont[ch])
                pending -= 1
            else:
                b = self.lead[ch]
                data.append(b)
                pending = 1 if b < 0xE0 else 2 if b < 0xF0 else 3
                lengths.append(pending + 1)
        return data.decode("utf-8"), lengths


_PAGES = tuple(_CodePage(name) for name in CODEPAGES)
_BYTE_KINDS = bytes.maketrans(
    bytes(range(256)), b"a" * 0x80 + b"c" * 0x40 + b"l" * 0x40
)  # ASCII, continuation, lead
_PRECHECK = re.compile(
    _char_class(c for p in _PAGES for c in p.lead_chars)
    + _char_class(c for p in _PAGES for c in p.cont_chars)
)


class _Verdict(NamedTuple):
    fixed: str
    strong: bool  # enough evidence on its own, unless the text is real code-page text
    weird: bool  # looks wrong in context: repair even inside real code-page text
    weak_ok: bool  # may be repaired when other damage from the same code page is confirmed
    frequent: int  # how ordinary the repaired text is, to choose between code pages


def _looks_wrong(mangled: str, prev: str, nxt: str) -> bool:
    """Signs that ``mangled`` (between ``prev`` and ``nxt``) is not text anyone wrote."""
    if any(ch in _BAD or "\x80" <= ch <= "\x9f" for ch in mangled):
        return True
    glued = prev.isalpha() or nxt.isalpha()
    if mangled[0] == "Â" or (mangled[0] == "Ã" and not (prev.isupper() and mangled[1] in _CLOSING)):
        return True  # "Â©", "Ã©": only legitimate after a Portuguese capital, as "IRMÃ”"
    window = prev + mangled + nxt
    for i, ch in enumerate(window):
        if not prev and i == 0 or i >= len(prev) + len(mangled):
            continue  # look at the run's own characters, with their neighbours
        left = window[i - 1] if i else ""
        right = window[i + 1] if i + 1 < len(window) else ""
        cat = unicodedata.category(ch)
        if ch.isupper() and left.islower():
            return True  # "cafÃ©", "naÃ¯ve", "РїСЂ"
        if ch in _CURRENCY and left.isalpha() and not left.isascii() and not left.isupper():
            return True  # "â€", "โ€"
        if (cat in _SYMBOL_CATEGORIES or ch in _SYMBOLISH) and glued:
            return True  # a symbol stuck to a word: "cafÃ©", "caf√©"
        if cat[0] in "PS" and left.isalpha() and right.isalpha() and ch not in _IN_WORD:
            return True  # punctuation inside a word: "KĂ¶lsch", "Ã§a"
    return False


def _assess(page: _CodePage, mangled: str, prev: str, nxt: str, legit: bool) -> _Verdict | None:
    """Judge one run (between ``prev`` and ``nxt``); None means it must not be touched.

    ``legit`` says the text reads as real text in this code page's script; then script
    mixing is not taken as a sign of damage.
    """
    fixed, lengths = page.decode(mangled)
    before = prev
    common = 0
    long_seq = False
    for ch, n in zip(fixed, lengths, strict=True):
        if not _is_valid_char(ch, before):
            return None
        if _in(_COMMON_RANGES, _COMMON_STARTS, ch):
            common += 1
            long_seq = long_seq or n > 2
        before = ch
    if not common:
        return None
    if len({_script(ch) for ch in fixed if ch.isalpha()}) > 1 and not page.run_re.search(fixed):
        return None  # a script switch inside one run of letters, and not double mojibake
    # One 3-byte sequence spelled only with letters may be a real Thai, Greek or Cyrillic
    # word ("แบบ", "лії"); three accented Latin letters in a row are not.
    word = all(ch.isalpha() for ch in mangled) and "latin" not in map(_script, mangled)
    strong = common >= 2 or (long_seq and not word)
    neighbours = "".join(ch for ch in (prev, nxt) if ch.isalpha())
    neighbour_scripts = {_script(ch) for ch in neighbours}
    mismatch = bool(neighbour_scripts) and bool(
        {_script(ch) for ch in fixed} - neighbour_scripts - {"other"}
    )
    if mismatch and (not strong or len(fixed) == 1):
        return None  # "mangé\xa0»" is not "mang頻", "ZESPÓŁ" not Cyrillic "ZESPӣ"
    if _case(neighbours) == "upper" and _case(mangled) != "lower" and _case(fixed) == "lower":
        return None  # "CAFÉ®" is a capital É before a mark, not "CAFɮ"
    mangled_scripts = {_script(ch) for ch in mangled if ch.isalpha()}
    weird = _looks_wrong(mangled, prev, nxt) or (
        not legit and len(mangled_scripts | neighbour_scripts) > 1  # "Patrรญcia"
    )
    return _Verdict(fixed, strong, weird, not mismatch, sum(map(_frequency, fixed)))


def _legit(page: _CodePage, text: str, covered: int) -> bool:
    """Whether many code-page letters stand outside the ``covered`` ones in runs: then
    ``text`` is real text in that code page's script (Thai, Greek, Cyrillic...)."""
    enough = covered + max(2, (covered + 1) // 2)
    return any(i >= enough for i, _ in enumerate(page.letter_re.finditer(text), 1))


Plan = list[tuple[int, int, str, int]]  # start, end, replacement, frequency


def _plan(page: _CodePage, text: str) -> Plan:
    """The runs of ``text`` that should be repaired as mojibake through ``page``."""
    # A neighbouring code-page letter (or dangling lead character) outside any run means
    # the surrounding bytes are not UTF-8: this is real text in that code page.
    letters, leads = page.high_letters, page.lead_chars
    matches = [
        m
        for m in page.run_re.finditer(text)
        if not (m.start() and (text[m.start() - 1] in letters or text[m.start() - 1] in leads))
        and text[m.end() : m.end() + 1] not in letters
    ]
    if not matches:
        return []
    covered = sum(ch in page.high_letters for m in matches for ch in m.group())
    legit = _legit(page, text, covered)
    verdicts: dict[tuple[str, str, str], _Verdict | None] = {}
    runs: list[tuple[re.Match[str], _Verdict]] = []
    for m in matches:
        start, end = m.span()
        key = (m.group(), text[start - 1 : start], text[end : end + 1])
        if key not in verdicts:
            verdicts[key] = _assess(page, *key, legit)
        if (verdict := verdicts[key]) is not None:
            runs.append((m, verdict))
    confirmed = any(v.weird or (v.strong and not legit) for _, v in runs)
    return [
        (m.start(), m.end(), v.fixed, v.frequent)
        for m, v in runs
        if v.weird or (v.strong and not legit) or (confirmed and not legit and v.weak_ok)
    ]


def _apply(page: _CodePage, text: str, plan: Plan) -> str:
    pieces: list[str] = []
    pos = 0
    for start, end, fixed, _ in plan:
        pieces += [text[pos:start], fixed]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _suspect(text: str) -> bool:
    """Fast pre-check: could ``text`` hold UTF-8 mojibake from any supported code page?"""
    if text.isascii():
        return False
    # Mojibake needs two adjacent non-ASCII characters: in UTF-8, a continuation byte
    # directly followed by a lead byte. Classifying bytes with translate() runs at C speed.
    kinds = text.encode("utf-8", "surrogatepass").translate(_BYTE_KINDS)
    return b"cl" in kinds and _PRECHECK.search(text) is not None


def repair(text: str) -> str:
    """Return text with UTF-8-through-a-single-byte-code-page mojibake undone; anything else unchanged."""  # noqa: E501
    if not _suspect(text):
        return text
    used: list[_CodePage] = []
    for _ in range(_MAX_ROUNDS):  # apply the code page that explains the most damage first
        plans = [
            (sum(e - s for s, e, _, _ in plan), sum(f for *_, f in plan), -i, page, plan)
            for i, page in enumerate(_PAGES)
            if page.pair_re.search(text) and (plan := _plan(page, text))
        ]
        if not plans:
            break
        *_, best, plan = max(plans, key=lambda x: x[:3])
        text = _apply(best, text, plan)
        used.append(best)
    for page in used:  # confirmed damage: also fix "â€" whose third byte was lost
        text = page.fix_lost_bytes(text)
    return text
