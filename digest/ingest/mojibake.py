"""Undo UTF-8 mojibake: UTF-8 bytes that were decoded through a single-byte code page.

Approach. Each code page in ``CODEPAGES`` gets two reverse maps, character -> byte: one for
bytes that start a UTF-8 sequence (0xC2-0xF4), one for continuation bytes (0x80-0xBF).
Sloppy decoders are folded in: a byte the page leaves undefined may come through as the C1
control of that number (latin-1 style; latin-1 itself is folded into windows-1252) or as
the windows-1252 character (windows-874 text with windows-1252 quotes, as ``โ€œ``). The
maps are position-aware, so a character standing for two bytes still round-trips. One
regex per page finds *runs* of complete, valid UTF-8 sequences in its characters that do
not touch a letter of that page outside the run ("Італії" is real windows-1251 text), and
repair goes run by run, so correct text around damaged segments stays as it is. A run is
replaced only when the evidence outweighs the risk, conservatively:

* vetoes: the repair holds unassigned or private characters, only rare ones (Syriac,
  Braille, CJK extension A...), a mark without a base, a switch of script, a lone
  character of another script than the adjacent letters ("mangé\xa0»" is not "mang頻"),
  or lowercase inside a word in capitals ("CAFÉ®" is not "CAFɮ");
* runs that look wrong in context are repaired: C1 controls, characters seen almost only
  in mojibake (``¤ ¦ ‰ ƒ``...), ``Â``/``Ã`` before a continuation character, a symbol or
  punctuation stuck inside a word (``cafÃ©``, ``KĂ¶lsch``), a capital after a small letter
  (``naÃ¯ve``), an accented letter before a currency sign (``â€``), another script glued
  to a word (``Patrรญcia``);
* other runs of three- or four-byte sequences (``โ€™``, ``ðŸ˜€``) or of chained sequences
  are repaired unless the text reads as real text of that page's script (many of its
  letters outside runs); a lone run of letters ("แบบ", "รถ") or a lone two-byte sequence
  only when damage through the same page is confirmed elsewhere in the text.

When several pages fit, the one covering the most damage wins, then the one whose repair
is more ordinary text, then the order of ``CODEPAGES``. Up to four rounds undo double
mojibake and segments damaged through different pages. Where damage is confirmed, ``â€``
whose third byte (0x9D, undefined in windows-1252) was dropped becomes ``”`` before a space
or punctuation. A pre-check returns clean text at C speed: mojibake needs two adjacent
non-ASCII characters, found by classifying the UTF-8 bytes with ``translate``, and then
one regex over all pages' lead and continuation characters. ftfy is not used: it does
not know windows-874 and its other fixers change more than mojibake.

Limits. Not repaired: other code pages (KOI8-R, windows-1255/1256, Shift-JIS...); bytes that
were replaced or dropped (``?``, U+FFFD, a no-break space turned into a space: ``Ã `` for
``à``), except the lost 0x9D above; mojibake written as HTML entities; rare scripts; more
than four layers; ambiguous cases left alone on purpose: a lone run that is also plausible
text ("รถ" is Thai "car" and mojibake of "ö"; "IRMÃ”" is Portuguese in capitals), a lone
two-byte run starting a word with no other damage in the text, and damage inside text that
is otherwise correct text of the same script, unless it looks wrong in context. Where two
pages decode the same run differently and fit equally (iso-8859-2 and windows-1250 differ
on a few letters), the earlier in ``CODEPAGES`` wins.
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
_SYMBOLISH = frozenset("ªº\xad¶§")  # not symbols by category, but symbols in practice
_AFTER_QUOTE = frozenset(".,;:!?)]}<'\"")
_AFTER_CAPITAL = frozenset("šžśźłżąęşţőűğıœƒŗµæø")  # small letters at 0x80-0xBF
_QUOTES = "«»“”‘’„‚‹›\"'"
_CLOSING = frozenset("\xa0”’»…–—")
_IN_WORD = frozenset("’'‘ʼ·-‐‑–—")  # punctuation that real words (or joined words) contain

# Code point ranges (inclusive) that real decoded mojibake plausibly produces. Anything
# else assigned is "rare": tolerated inside a run, but a run made only of rare characters
# is left alone (e.g. Ukrainian "вії" would otherwise decode to a Coptic letter).
_COMMON_RANGES: tuple[tuple[int, int], ...] = (
    (0x00A0, 0x017F), (0x0181, 0x0181), (0x0186, 0x0186), (0x018A, 0x018A),
    (0x018F, 0x0190), (0x0192, 0x0192), (0x0194, 0x0194), (0x0199, 0x0199),
    (0x01A0, 0x01A1), (0x01AF, 0x01B0), (0x01B2, 0x01B4), (0x01CD, 0x01DD),
    (0x0218, 0x021B), (0x0251, 0x0251), (0x0253, 0x0254), (0x0256, 0x0257),
    (0x0259, 0x0259), (0x025B, 0x025B), (0x0263, 0x0263), (0x026A, 0x026A),
    (0x0272, 0x0272), (0x0283, 0x0283), (0x028A, 0x028B), (0x0292, 0x0292),
    (0x02BB, 0x02BC), (0x02C6, 0x02C7), (0x02D8, 0x02DD), (0x0300, 0x033F),
    (0x0384, 0x03CE), (0x0400, 0x045F), (0x048A, 0x052F), (0x0531, 0x058A),
    (0x05B0, 0x05F4), (0x0600, 0x06FF), (0x0900, 0x0FFF), (0x1000, 0x109F),
    (0x10A0, 0x10FF), (0x1200, 0x139F), (0x13A0, 0x167F), (0x1780, 0x17FF),
    (0x1D00, 0x1DBF), (0x1E00, 0x1FFE), (0x2000, 0x27BF), (0x2B00, 0x2BFF),
    (0x2D30, 0x2D7F), (0x3000, 0x30FF), (0x3130, 0x318F), (0x3200, 0x33FF),
    (0x4E00, 0x9FFF), (0xA720, 0xA7FF), (0xAC00, 0xD7A3), (0xFB00, 0xFB06),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFF01, 0xFFEF), (0xFFFD, 0xFFFD),
    (0x1D400, 0x1D7FF), (0x1F000, 0x1FAFF), (0xE0000, 0xE007F),
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
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = tuple(sorted((
    (0x0041, 0x02FF, "latin"), (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"),
    (0x0530, 0x058F, "armenian"), (0x0590, 0x05FF, "hebrew"), (0x0600, 0x077F, "arabic"),
    *((lo, lo + 0x7F, f"indic{lo:x}") for lo in range(0x0900, 0x0E00, 0x80)),
    (0x0E00, 0x0E7F, "thai"), (0x1E00, 0x1EFF, "latin"), (0x1F00, 0x1FFF, "greek"),
    (0x2C60, 0x2C7F, "latin"), (0xA720, 0xA7FF, "latin"), (0xAB30, 0xAB6F, "latin"),
    (0x3040, 0x9FFF, "cjk"), (0xAC00, 0xD7A3, "cjk"), (0xFF00, 0xFFEF, "cjk"),
)))  # fmt: skip
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


def _frequency(text: str, prev: str, nxt: str) -> int:
    """2 per frequent character, less 1 per letter whose case does not fit: a capital after
    a small letter, a small letter between capitals."""
    score = 0
    for i, ch in enumerate(text):
        if _in(_FREQUENT_RANGES, _FREQUENT_STARTS, ch):
            before = text[i - 1] if i else prev
            lonely = ch.islower() and prev.isupper() and nxt.isupper()
            score += 1 if lonely or (ch.isupper() and before.islower()) else 2
    return score


def _is_valid_char(ch: str) -> bool:
    """Whether ``ch`` may appear in repaired text at all."""
    cat = unicodedata.category(ch)
    if cat in ("Cs", "Co") or (cat == "Cn" and not 0x1F000 <= ord(ch) <= 0x1FFFF):
        return False
    return not (cat == "Cc" and not 0x80 <= ord(ch) <= 0x9F)


def _is_odd(ch: str, prev: str) -> bool:
    """A combining mark without a base of its own script (if it has one), after ``prev``."""
    if unicodedata.category(ch)[0] != "M":
        return False
    return not prev or prev.isspace() or _script(ch) not in ("other", _script(prev))


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
        self.all_chars = self.high_letters | self.lead_chars | frozenset(self.cont)
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
        # A code-page letter (or a dangling lead character) next to a run means the bytes
        # around it are not UTF-8: this is real text in the code page ("Італії", "Вёрстка").
        before = _char_class(self.high_letters | self.lead_chars)
        return f"(?<!{before})(?>{seq}(?:{seq})*)(?!{_char_class(self.high_letters)})"

    def signature(self, present: set[str]) -> frozenset[tuple[str, int, int, bool]]:
        """What this page makes of the characters ``present``: pages that agree on them
        (windows-1252 and windows-1254 often do) make the same repairs."""
        return frozenset(
            (c, self.lead.get(c, -1), self.cont.get(c, -1), c in self.high_letters)
            for c in present & self.all_chars
        ) | {("", 0, 0, self.lost_re is None)}

    def fix_lost_bytes(self, text: str) -> str:
        """Replace ``â€`` (in this page's letters) whose third byte was lost: usually ``”``."""
        return text if self.lost_re is None else self.lost_re.sub(self._lost_byte, text)

    def _lost_byte(self, m: re.Match[str]) -> str:
        s = m.string
        prev = s[m.start() - 1] if m.start() else ""
        nxt = s[m.end()] if m.end() < len(s) else ""
        if prev in self.high_letters or prev in self.lead_chars:
            return m.group()
        if nxt and not nxt.isspace() and nxt not in _AFTER_QUOTE:
            return m.group()  # a closing quote is followed by space or punctuation
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
    textlike: bool  # letters with a no-break space or quote, like real text ("Ø\xa0")
    scripts: frozenset[str]  # of the repaired letters


def _same_word(left: str, right: str) -> bool:
    """Whether ``left`` and ``right`` are letters of one script (so one word)."""
    return left.isalpha() and right.isalpha() and _script(left) == _script(right)


def _looks_wrong(mangled: str, prev: str, nxt: str) -> bool:
    """Signs that ``mangled`` (between ``prev`` and ``nxt``) is not text anyone wrote."""
    if any(ch in _BAD or "\x80" <= ch <= "\x9f" for ch in mangled):
        return True
    glued = prev.isalpha() or nxt.isalpha()
    first, second = mangled[0], mangled[1]
    word_end = second == "\xa0" or second in _CLOSING and not _same_word(prev or first, nxt)
    if first in "ÂÃĂ" and not (prev.isupper() and word_end):
        return True  # "Â©", "Ã©": only legitimate at the end of a word in capitals: "IRMÃ”"
    odd = second in _AFTER_CAPITAL or second in _SYMBOLISH
    odd = odd or unicodedata.category(second) in _SYMBOL_CATEGORIES
    if _script(first) == "latin" and first.isupper() and odd and glued and not word_end:
        return True  # an accented capital, then a symbol or a caron letter: "Åživa", "Ä¡"
    window = prev + mangled + nxt
    for i in range(len(prev), len(prev) + len(mangled)):  # the run's own characters
        ch, left, right = window[i], window[i - 1 : i], window[i + 1 : i + 2]
        cat = unicodedata.category(ch)
        if ch.isupper() and (left.islower() or left.isupper() and right.islower()):
            return True  # "cafÃ©", "naÃ¯ve", "РїСЂ"; "ĂĽber"
        if ch in _CURRENCY and left.isalpha() and not left.isascii() and not left.isupper():
            return True  # "â€", "โ€"
        symbol = cat in _SYMBOL_CATEGORIES or ch in _SYMBOLISH
        if symbol and glued and (left.isalpha() or right.isalpha()):
            return True  # a symbol stuck to a word: "cafÃ©", "caf√©"
        if cat[0] in "PS" and ch not in _IN_WORD and _same_word(left, right):
            return True  # punctuation inside a word: "KĂ¶lsch", "Ã§a"
    return False


def _assess(page: _CodePage, mangled: str, before: str, nxt: str, legit: bool) -> _Verdict | None:
    """Judge one run, after the (up to three) characters ``before`` and before ``nxt``; None
    means it must not be touched.

    ``legit`` says the text reads as real text in this code page's script; then script
    mixing is not taken as a sign of damage.
    """
    prev = before[-1:]
    fixed, lengths = page.decode(mangled)
    common = 0
    long_seq = odd = False
    for i, (ch, n) in enumerate(zip(fixed, lengths, strict=True)):
        if not _is_valid_char(ch):
            return None
        odd = odd or _is_odd(ch, fixed[i - 1] if i else prev)
        if _in(_COMMON_RANGES, _COMMON_STARTS, ch):
            common += 1
            long_seq = long_seq or n > 2
    if not common:
        return None
    # The checks below on what the repair looks like are waived when it is mojibake again:
    # double mojibake, undone in the next round.
    again = len(fixed) > 1 and any(p.run_re.search(fixed) for p in _PAGES)
    # A mark without a base or a change of script inside one run of letters is not text.
    if (odd or len({_script(ch) for ch in fixed if ch.isalpha()}) > 1) and not again:
        return None
    # A run spelled with letters (maybe quoted) may be a real word: "แบบ", "лії", "«её»".
    # Only three or more chained sequences ("เธ\xa0เธฒเธฉเธฒ" for "ภาษา") outweigh that.
    word = all(ch.isalpha() or ch in _QUOTES or ch in "\xa0…–—" for ch in mangled)
    strong = common >= 3 if word else common >= 2 or long_seq
    neighbours = "".join(ch for ch in (prev, nxt) if ch.isalpha())
    scripts = {_script(ch) for ch in fixed} - {"other"}
    mismatch = any(_script(ch) not in scripts for ch in neighbours) if scripts else False
    if mismatch and (not strong or len(fixed) == 1) and not again:
        return None  # "mangé\xa0»" is not "mang頻", "ZESPÓŁ" not Cyrillic "ZESPӣ"
    # Inside a word in capitals (two capitals before, the first not the end of another run,
    # or capitals on both sides), a lowercase repair is unlikely.
    pp, ppp = before[-2:-1], before[-3:-2]
    pp_upper = pp.isupper() and not (pp in page.cont_chars and ppp in page.lead_chars)
    capitals = prev.isupper() and (pp_upper or nxt.isupper())
    if capitals and _case(mangled) != "lower" and _case(fixed) == "lower" and not again:
        return None  # in a word in capitals, "CAFÉ®" is a capital É and a mark, not "CAFɮ"
    # Letters of another script glued to a word: "Patrรญcia", "mayorโ€™s".
    inner = mangled.strip(_QUOTES + "…") or mangled
    ends = [(prev, inner[0]), (inner[-1], nxt)]
    glued = any(a.isalpha() and b.isalpha() and _script(a) != _script(b) for a, b in ends)
    weird = _looks_wrong(mangled, prev, nxt) or (glued and not legit)
    # A run spelled like text, with a no-break space or quote ("Ø\xa0"), is trusted less.
    textlike = word and any(ch in _QUOTES or ch == "\xa0" for ch in mangled)
    frequent = _frequency(fixed, prev, nxt)
    weak_ok = again or not mismatch
    return _Verdict(fixed, strong, weird, weak_ok, frequent, textlike, frozenset(scripts))


def _legit(page: _CodePage, text: str, covered: int) -> bool:
    """Whether many code-page letters stand outside the ``covered`` ones in runs: then
    ``text`` is real text in that code page's script (Thai, Greek, Cyrillic...)."""
    enough = covered + max(2, (covered + 1) // 2)
    return any(i >= enough for i, _ in enumerate(page.letter_re.finditer(text), 1))


_Plan = list[tuple[int, int, str, int]]  # start, end, replacement, frequency


def _plan(page: _CodePage, text: str, floor: int = 0) -> _Plan:
    """The runs of ``text`` that should be repaired as mojibake through ``page`` (nothing
    if they could not cover ``floor`` characters: another page does better)."""
    matches = list(page.run_re.finditer(text))
    if sum(m.end() - m.start() for m in matches) < max(floor, 1):
        return []
    covered = len(page.letter_re.findall("".join(m.group() for m in matches)))
    legit = _legit(page, text, covered)
    verdicts: dict[tuple[str, str, str], _Verdict | None] = {}
    runs: list[tuple[re.Match[str], _Verdict]] = []
    for m in matches:
        start, end = m.span()
        key = (m.group(), text[max(0, start - 3) : start], text[end : end + 1])
        if key not in verdicts:
            verdicts[key] = _assess(page, *key, legit)
        if (verdict := verdicts[key]) is not None:
            runs.append((m, verdict))
    sure = [v.weird or (v.strong and not legit) for _, v in runs]
    # Confirmed damage vouches for the other runs; for those spelled like text, only if they
    # repair to Latin or to a script the confirmed damage repairs to ("Ø\xa05" is no "ؠ5").
    scripts = frozenset({"latin"}).union(
        *(v.scripts for (_, v), ok in zip(runs, sure, strict=True) if ok)
    )
    vouched = any(sure) and not legit
    return [
        (m.start(), m.end(), v.fixed, v.frequent)
        for (m, v), ok in zip(runs, sure, strict=True)
        if ok or (vouched and v.weak_ok and (not v.textlike or v.scripts <= scripts))
    ]


def _apply(text: str, plan: _Plan) -> str:
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
        pages = [(i, page) for i, page in enumerate(_PAGES) if page.pair_re.search(text)]
        present: set[str] = set(text) if len(pages) > 1 else set()
        seen = set()
        best: tuple[int, int, int] = (0, 0, 0)  # characters covered, frequency, -order
        choice: tuple[_CodePage, _Plan] | None = None
        for i, page in pages:
            if (sig := page.signature(present)) in seen:
                continue
            seen.add(sig)
            if plan := _plan(page, text, best[0]):
                score = (sum(e - s for s, e, _, _ in plan), sum(f for *_, f in plan), -i)
                if choice is None or score > best:
                    best, choice = score, (page, plan)
        if choice is None:
            break
        text = _apply(text, choice[1])
        used.append(choice[0])
    for page in used:  # confirmed damage: also fix "â€" whose third byte was lost
        text = page.fix_lost_bytes(text)
    return text
