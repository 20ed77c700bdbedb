"""Deciders that protect the sender's reputation: the complaint and bounce breaker, and
the warm-up ramp (pure: no clock, no database, no config).

**The breaker.** Mailbox providers judge a sender by how its readers answer: Gmail asks
bulk senders to keep the spam-complaint rate under 0.3% and to aim for 0.1%, and a
sender past that sees its mail go to spam or be refused. ``judge`` looks at each recent
edition's complaint rate (spam reports ÷ recipients delivered) and hard-bounce rate;
one at or past a threshold *holds* the next edition until the operator has looked and
released it (``digest release``). An edition to fewer than ``min_recipients`` is not
judged: one complaint among twenty says little. The rates come from SendGrid's signed
event webhook (``web/webhook.py``), so the breaker only sees editions SendGrid sent.

**The warm-up.** A new sending domain or IP has no reputation yet, and providers
distrust a sudden volume from it. ``allowance`` says how many recipients may still be
sent to today, on day *n* of a ramp of daily limits; past the ramp's last day there is
no limit. The rest of an edition waits, pending in the ledger, for the next days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

#: Gmail's limits for bulk senders: under 0.3% spam complaints, aiming at 0.1%.
COMPLAINT_HOLD = 0.003
COMPLAINT_WARN = 0.001
#: Hard bounces: past 5% a list has not been kept clean (and Amazon SES, for one, puts
#: an account under review there).
BOUNCE_HOLD = 0.05
#: A daily ramp for a new domain or IP: 50 on the first day (where the published IP
#: warm-up schedules, SendGrid's among them, start), growing to a million on day 15.
DEFAULT_RAMP = (50, 100, 500, 1_000, 5_000, 10_000, 20_000, 40_000, 70_000, 100_000,
                150_000, 250_000, 400_000, 600_000, 1_000_000)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Thresholds:
    complaint_rate: float = COMPLAINT_HOLD
    warn_complaint_rate: float = COMPLAINT_WARN
    bounce_rate: float = BOUNCE_HOLD
    min_recipients: int = 100


@dataclass(frozen=True, slots=True)
class EditionRates:
    """What SendGrid's events say about one sent edition."""

    edition_id: int
    delivered: int
    complaints: int
    hard_bounces: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.delivered if self.delivered else 0.0

    def words(self) -> str:
        return (
            f"edition {self.edition_id}: {self.complaints} spam complaint(s) "
            f"({self.complaint_rate:.2%}) and {self.hard_bounces} hard bounce(s) "
            f"({self.bounce_rate:.2%}) of {self.delivered} delivered"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    held: bool
    #: Why the next edition is held (None when it is not).
    reason: str | None = None
    #: Editions past the warning level but not the hold: worth a look.
    warnings: tuple[str, ...] = ()
    #: The edition that tripped the breaker.
    edition_id: int | None = None


def judge(
    editions: Sequence[EditionRates], thresholds: Thresholds, released_through: int
) -> Verdict:
    """Hold the next edition if an edition after ``released_through`` (the last one the
    operator released) is at or past a threshold; the worst one is named."""
    t = thresholds
    judged = [e for e in editions if e.edition_id > released_through]
    judged = [e for e in judged if e.delivered >= t.min_recipients]
    tripped = [
        e for e in judged if e.complaint_rate >= t.complaint_rate or e.bounce_rate >= t.bounce_rate
    ]
    warnings = tuple(
        f"{e.words()}: past the {t.warn_complaint_rate:.2%} to aim for"
        for e in judged
        if e not in tripped and e.complaint_rate >= t.warn_complaint_rate
    )
    if not tripped:
        return Verdict(False, warnings=warnings)
    worst = max(
        tripped, key=lambda e: (e.complaint_rate / t.complaint_rate if t.complaint_rate else 0,
                                e.bounce_rate / t.bounce_rate if t.bounce_rate else 0),
    )  # fmt: skip
    limits = f"limits: {t.complaint_rate:.2%} complaints, {t.bounce_rate:.2%} hard bounces"
    return Verdict(
        True,
        reason=f"held by the complaint and bounce breaker: {worst.words()} ({limits}); find "
        "out why (a list bought or stale, mail nobody expected), then `digest release`",
        warnings=warnings,
        edition_id=worst.edition_id,
    )


@dataclass(frozen=True, slots=True)
class Ramp:
    """A warm-up: day 1 is ``start``; day n may reach ``daily[n-1]`` recipients."""

    start: date
    daily: tuple[int, ...] = DEFAULT_RAMP

    @property
    def batch_size(self) -> int:
        """Recipients per batch that every day's limit is a whole number of (so a day
        can be filled with whole batches): the greatest common divisor of the limits."""
        return math.gcd(*self.daily)


@dataclass(frozen=True, slots=True)
class Allowance:
    #: Recipients that may still go out today; None: no limit (the ramp is over).
    remaining: int | None
    day: int
    limit: int | None

    def words(self, waiting: int) -> str:
        return (
            f"warm-up day {self.day}: at most {self.limit:,} recipients a day; "
            f"{waiting:,} wait for the next days"
        )


def allowance(ramp: Ramp | None, today: date, sent_today: int) -> Allowance:
    """How many more recipients may be sent to ``today``, ``sent_today`` having been.
    Before ``start`` the first day's limit holds; after the last day, none."""
    if ramp is None:
        return Allowance(None, 0, None)
    day = max(1, (today - ramp.start).days + 1)
    if day > len(ramp.daily):
        return Allowance(None, day, None)
    limit = ramp.daily[day - 1]
    return Allowance(max(0, limit - sent_today), day, limit)
