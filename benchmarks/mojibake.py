"""Benchmark digest.ingest.mojibake.repair against ftfy on the same inputs.

Run from the repository root:

    python benchmarks/mojibake.py            # about 10 s
    python benchmarks/mojibake.py --quick    # fewer repeats

Absolute times drift on a shared machine, so every line also gives ratios measured in
the same run: ftfy.fix_text (all fixers, its default), ftfy.fix_encoding (its encoding
fixers only) and, for clean text, the pre-check alone. The minimum of several repeats is
reported for each timing.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ftfy

from digest.ingest import mojibake

SIZE = 10_000  # characters per input

PARAGRAPHS = {
    "ascii": "The quick brown fox jumps over the lazy dog, again and again. ",
    "english": "The mayor’s office said “no comment” — again… Prices rose 5% to €12; "
    "Zoë Saldaña met Beyoncé at the café in São Paulo. ",
    "french": "« Bonjour », dit-il. J’ai mangé à l’hôtel près de la gare ; c’était très "
    "agréable. L’été dernier, nous étions à Noël. ",
    "russian": "Привет, мир! Вчера в Москве прошёл «большой» фестиваль — ёлка, объём, "
    "вёрстка, Італії. ",
    "thai": "ภาษาไทย รถ แบบ กรุงเทพมหานคร “ข่าว” วันนี้ครับ ",
    "cjk+emoji": "中文测试：你好，世界！日本語のテキスト。한국어 텍스트 😀👍🏽 ",
}


def text(paragraph: str) -> str:
    return (paragraph * (SIZE // len(paragraph) + 1))[:SIZE]


def damage(clean: str, codepage: str) -> str:
    """UTF-8 read through ``codepage``; undefined bytes as windows-1252 or C1 characters."""
    out = []
    for b in clean.encode("utf-8"):
        for codec in (codepage, "windows-1252", "latin-1"):
            try:
                out.append(bytes([b]).decode(codec))
                break
            except UnicodeDecodeError:
                continue
    return "".join(out)


def best(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call: the minimum over ``repeat`` rounds of about 20 ms each."""
    timer = timeit.Timer(fn)
    number = max(1, int(0.02 / max(timer.timeit(1), 1e-7)))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def us(seconds: float) -> str:
    return f"{seconds * 1e6:10.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    encoding_only = ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_c1_controls=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=False,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )

    clean = {name: text(p) for name, p in PARAGRAPHS.items()}
    damaged = {
        "english via windows-1252": ("english", ["windows-1252"]),
        "english via windows-874": ("english", ["cp874"]),
        "russian via windows-1251": ("russian", ["windows-1251"]),
        "thai via latin-1": ("thai", ["latin-1"]),
        "english, 2x windows-1252": ("english", ["windows-1252", "windows-1252"]),
    }
    cases = {}
    for name, (lang, pages) in damaged.items():
        value = clean[lang]
        for page in pages:
            value = damage(value, page)
        assert mojibake.repair(value) == clean[lang], name
        cases[name] = (value, ftfy.fix_encoding(value, encoding_only) == clean[lang])
    for name, value in clean.items():
        assert mojibake.repair(value) is value, name

    print(f"inputs: {SIZE} characters each; min of {repeat} repeats; ratio = ftfy / repair")
    print()
    header = f"{'clean text':26} {'pre-check':>13} {'repair':>13} {'fix_text':>13} {'ratio':>7}"
    print(header + f" {'fix_encoding':>13} {'ratio':>7}")
    for name, value in clean.items():
        pre = best(partial(mojibake._suspect, value), repeat)
        ours = best(partial(mojibake.repair, value), repeat)
        full = best(partial(ftfy.fix_text, value), repeat)
        enc = best(partial(ftfy.fix_encoding, value, encoding_only), repeat)
        print(
            f"{name:26} {us(pre)} {us(ours)} {us(full)} {full / ours:6.0f}x"
            f" {us(enc)} {enc / ours:6.0f}x"
        )
    print()
    print(f"{'damaged text':26} {'':>13} {'repair':>13} {'fix_text':>13} {'ratio':>7}", end="")
    print(f" {'fix_encoding':>13} {'ratio':>7}")
    for name, (value, ftfy_repairs) in cases.items():
        ours = best(partial(mojibake.repair, value), repeat)
        full = best(partial(ftfy.fix_text, value), repeat)
        enc = best(partial(ftfy.fix_encoding, value, encoding_only), repeat)
        fixed = "" if ftfy_repairs else "  (ftfy does not repair it)"
        print(
            f"{name:26} {'':>13} {us(ours)} {us(full)} {full / ours:6.1f}x"
            f" {us(enc)} {enc / ours:6.1f}x{fixed}"
        )


if __name__ == "__main__":
    main()
