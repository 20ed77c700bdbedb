"""``digest resend``: send an edition again to the recipients it is known not to have
reached (``failed``), and, when the operator has checked the provider's log, to those
whose fate is ``unknown``.

Only whole batches that failed (or are unknown) go back to ``pending``; recipients
refused one by one inside a batch that went out (a malformed address, a mailbox that
does not exist) are not retried: the same address would be refused again. Anyone who
unsubscribed (or was removed) since the edition was made is left out (see
``record.recover``). Editions whose ledger was compacted, and abandoned editions (their
entries went back to be sent in a later edition), cannot be re-sent.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from .errors import UsageError
from .model import BatchStatus, EditionStatus, RunReport
from .pipeline import NoProgress, Progress, deliver
from .services import Services
from .state import lease, record
from .state.db import schema


def resend(
    services: Services,
    edition_id: int,
    *,
    failed: bool,
    unknown: bool,
    progress: Progress | None = None,
) -> RunReport:
    if not (failed or unknown):
        raise UsageError(
            "say what to re-send: --failed (known not delivered) and/or --unknown (their "
            "fate is not known: check the provider's log first, they may have arrived)"
        )
    started = time.perf_counter()
    engine = services.engine
    with lease.held(engine, clock=services.clock):
        with engine.begin() as conn:
            E = schema.editions
            row = conn.execute(
                sa.select(E.c.status, E.c.compacted).where(E.c.id == edition_id)
            ).first()
            if row is None:
                raise UsageError(f"there is no edition {edition_id}")
            if row.compacted:
                raise UsageError(
                    f"edition {edition_id} is older than delivery.keep_ledger: its "
                    "per-recipient ledger was compacted, so it cannot be re-sent"
                )
            if row.status == EditionStatus.ABANDONED:
                raise UsageError(
                    f"edition {edition_id} was abandoned (nothing went out) and its entries "
                    "went back to be sent in a later edition: re-sending it could send them "
                    "twice"
                )
            statuses = [BatchStatus.FAILED] * failed + [BatchStatus.UNKNOWN] * unknown
            count = record.requeue(conn, edition_id, statuses, services.clock())
            unfinished = row.status == EditionStatus.SENDING
        if not count and not unfinished:
            what = " or ".join(str(s) for s in statuses)
            return RunReport(
                editions=(),
                feeds=(),
                skipped=f"edition {edition_id} has no {what} batch to re-send",
                seconds=round(time.perf_counter() - started, 3),
            )
        report = deliver(services, edition_id, progress or NoProgress(), resumed=True)
    return RunReport(
        editions=(report,),
        feeds=(),
        skipped=None,
        seconds=round(time.perf_counter() - started, 3),
    )
