"""What the CLI shows people: progress bars, run summaries, tables; and JSON for scripts.

Progress bars go to stderr, only when it is a terminal and the output is not JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from ..model import EditionReport, FeedReport, RunReport

# No markup unless a call asks for it (markup=True), with outside text in it escaped: a
# feed's name or a subscriber's "[/b]" is text, never a tag (it used to crash the output).
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def moment(when: datetime, zone: ZoneInfo) -> dict[str, str]:
    """A time in JSON: ``{"local": ..., "utc": ...}``, ISO 8601 both."""
    return {"local": when.astimezone(zone).isoformat(), "utc": when.isoformat()}


def run_json(report: RunReport) -> dict[str, Any]:
    """The ``digest run --json`` object (its keys are documented in the README)."""
    return {
        "ok": report.ok,
        "dry_run": report.dry_run,
        "editions": [_edition_json(e) for e in report.editions],
        "feeds": [_feed_json(f) for f in report.feeds],
        "skipped": report.skipped is not None,
        "reason": report.skipped,
        "held": report.held,
        "seconds": report.seconds,
    }


def _edition_json(e: EditionReport) -> dict[str, Any]:
    data = asdict(e)
    data["status"] = str(e.status)
    data["problems"] = list(e.problems)
    return data


def _feed_json(f: FeedReport) -> dict[str, Any]:
    data = asdict(f)
    data["status"] = str(f.status)
    return data


def run_summary(report: RunReport) -> None:
    """A readable end-of-run summary."""
    failed = [f for f in report.feeds if f.status == "failed"]
    skipped = [f for f in report.feeds if f.status == "skipped"]
    ok = len(report.feeds) - len(failed) - len(skipped)
    line = f"Feeds: {ok} read"
    if failed:
        line += f", [red]{len(failed)} failed[/red]"
    if skipped:
        line += f", [yellow]{len(skipped)} skipped[/yellow]"
    out.print(line, markup=True)
    for f in failed + skipped:
        colour = "red" if f.status == "failed" else "yellow"
        out.print(
            f"  [{colour}]✗[/{colour}] {escape(f.name)}: {escape(f.error or '')}", markup=True
        )
    for f in report.feeds:
        if f.moved_to:
            out.print(
                f"  [yellow]→[/yellow] {escape(f.name)} redirects permanently to "
                f"{escape(f.moved_to)} (`digest feeds`: adopted once it holds for a day)",
                markup=True,
            )
    for e in report.editions:
        verb = (
            "Resumed edition"
            if e.resumed
            else ("Would send edition" if report.dry_run else "Edition")
        )
        out.print(
            f"{verb} {e.id}: {e.entries} entries to {e.recipients} recipients"
            + (
                ""
                if report.dry_run
                else f" — [green]{e.recipients_delivered} delivered[/green]"
                + (f", [red]{e.recipients_failed} failed[/red]" if e.recipients_failed else "")
                + (
                    f", [yellow]{e.recipients_unknown} unknown[/yellow]"
                    if e.recipients_unknown
                    else ""
                )
                + (
                    f", {e.recipients_waiting} waiting for the warm-up's next days"
                    if e.recipients_waiting
                    else ""
                )
                + (
                    f", {e.recipients_later} waiting for their hour in "
                    f"{escape(', '.join(e.zones_pending))}"
                    if e.zones_pending
                    else ""
                )
            ),
            markup=True,
        )
        for problem in e.problems:
            out.print(f"  • {problem}")
    if report.held:
        out.print(f"[red]Held:[/red] {escape(report.skipped or '')}.", markup=True)
    elif report.skipped:
        out.print(f"Nothing sent: {report.skipped}.")
    out.print(f"[dim]Done in {report.seconds:.1f}s.[/dim]", markup=True)


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 entry``, ``2 entries``: the number and the word that goes with it."""
    return f"{count} {one if count == 1 else many or one + 's'}"


#: A column at most this wide shares a line with the others when rows are stacked.
SHORT = 20


def records(headers: list[str], rows: list[list[str]]) -> None:
    """Rows as aligned columns when they fit the width of the output (the terminal, or
    80 columns when piped); otherwise each row stacked, a line per column: every value
    is shown whole, never cut to fit."""
    if not rows:
        return
    shown = [[" ".join(cell.split()) for cell in row] for row in rows]  # one line each
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in shown)]) for i, h in enumerate(headers)]
    if sum(widths) + 2 * (len(widths) - 1) <= out.width:
        out.print(Text(_line(headers, widths), style="bold"))
        for row in shown:
            out.print(Text(_line(row, widths)))
        return
    short = [w <= SHORT for w in widths]
    for row in shown:
        out.print(Text(row[0], style="bold"))
        fields = list(zip(headers, row, short, strict=True))[1:]
        brief = [f"{h}: {c}" for h, c, s in fields if s and c]
        if brief:
            out.print(Text("  " + " · ".join(brief)))
        for header, cell, _ in (f for f in fields if not f[2] and f[1]):
            out.print(Text(f"  {header}: {cell}"))


def _line(cells: list[str], widths: list[int]) -> str:
    padded = [c + " " * (w - cell_len(c)) for c, w in zip(cells, widths, strict=True)]
    return "  ".join(padded).rstrip()


def feeds_table(rows: list[dict[str, Any]]) -> None:
    """One row per feed, every column whole: a table when it fits, stacked otherwise."""
    records(
        ["feed", "status", "last success", "failures", "last error"],
        [
            [
                r["name"],
                str(r["status"]),
                _minutes(r["last_success_at"]) or "never",
                str(r["consecutive_failures"]),
                r["last_error"] or "",
            ]
            for r in rows
        ],
    )
    for r in rows:
        if r["pending_move"]:
            out.print(
                Text(
                    f"→ {r['name']} redirects permanently to {r['pending_move']} since "
                    f"{_minutes(r['pending_move_since'])}: adopted if it still does a day later"
                )
            )


def _minutes(iso: str | None) -> str:
    """``2027-03-15T08:00:00+00:00`` → ``2027-03-15 08:00``."""
    return iso[:16].replace("T", " ") if iso else ""


class Bars:
    """A ``pipeline.Progress`` that draws rich progress bars on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
        )
        self.task: TaskID | None = None
        self.progress.start()

    def fetching(self, total: int) -> None:
        self.task = self.progress.add_task("Fetching feeds", total=total)

    def fetched(self, name: str) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def sending(self, edition_id: int, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"Sending edition {edition_id}", total=total)

    def sent(self, recipients: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, recipients)

    def done(self) -> None:
        self.progress.stop()


def deliverability(report: Any) -> None:
    """``digest check --deliverability``: one block per check, with what to publish."""
    marks = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]",
             "unknown": "[yellow]?[/yellow]"}  # fmt: skip
    out.print(f"Mail authentication of {report.domain}:")
    for f in report.findings:
        out.print(
            f"  {marks[str(f.status)]} {f.check} ({escape(f.name)}): {escape(f.says)}", markup=True
        )
        if f.found:
            out.print(f"      found:   {escape(f.found)}", markup=True)
        if f.publish:
            out.print(f'      publish: {escape(f.name)} TXT "{escape(f.publish)}"', markup=True)
