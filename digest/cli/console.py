"""What the CLI shows people: progress bars, run summaries, tables; and JSON for scripts.

Progress bars go to stderr, only when it is a terminal and the output is not JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from ..model import EditionReport, FeedReport, RunReport

# No markup unless a call asks for it (markup=True), with outside text in it escaped: a
# feed's name or a subscriber's "[/b]" is text, never a tag (it used to crash the output).
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


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


def feeds_table(rows: list[dict[str, Any]]) -> None:
    """One line per feed, however narrow the terminal: long cells end in an ellipsis."""
    table = Table(box=None, pad_edge=False)
    for column, width in (
        ("feed", 32),
        ("status", None),
        ("last success", None),
        ("failures", None),
        ("last error", None),
    ):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width)
    for r in rows:
        table.add_row(
            Text(r["name"]),  # Text: a feed's title is not markup
            r["status"],
            (r["last_success_at"] or "never")[:16],
            str(r["consecutive_failures"]),
            Text((r["last_error"] or "")[:80]),
        )
    out.print(table)
    for r in rows:
        if r["pending_move"]:
            out.print(
                Text(
                    f"→ {r['name']} redirects permanently to {r['pending_move']} since "
                    f"{r['pending_move_since'][:16]}: adopted if it still does a day later"
                )
            )


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
    out.print(f"Mail authentication of {escape(report.domain)}:")
    for f in report.findings:
        out.print(
            f"  {marks[str(f.status)]} {f.check} ({escape(f.name)}): {escape(f.says)}", markup=True
        )
        if f.found:
            out.print(f"      found:   {escape(f.found)}", markup=True)
        if f.publish:
            out.print(f'      publish: {escape(f.name)} TXT "{escape(f.publish)}"', markup=True)
