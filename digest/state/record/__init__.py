"""Stage 6 · record: the delivery ledger.

The order of writes is what makes delivery exactly-once through crashes:

1. In **one transaction**: the edition (its rendered content, and the variants some
   subscribers' preferences call for), its entries, and its recipients frozen into
   ``deliveries`` and ``batches`` (all ``pending``; a batch holds one variant).
2. Per batch: claimed by one sender (``claim``: several instances may send one
   edition), marked ``sending`` and **committed before** the request goes out; then
   ``sent`` (with the provider's id) or ``failed`` (with the reason) as it settles.
3. When no batch is pending, the edition is settled: ``done``, or ``abandoned`` when
   nothing at all went out (its entries are then forgotten, so they count as new again).

After a crash, a batch still ``sending`` (whose sender is gone: ``sweep``) may or may
not have gone out: it becomes ``unknown``, is never re-sent automatically (a duplicate
digest is worse than a missing one) and is reported; ``pending`` batches are sent by
the next run before any new edition. Entries count as seen once their edition exists;
an abandoned edition gives them back.

The ledger's parts: ``_known`` (entries), ``_editions`` (editions, cycles),
``_freeze`` (recipients into batches), ``_zones`` (zone groups held and released),
``_claims`` (who sends a batch, what a gone sender left) and ``_batches`` (the batches
settled, tallied). Callers use this package: ``record.claim``, ``record.settle``...
"""

from ._batches import (
    Tally,
    load_batch,
    load_batches,
    mark,
    pending_batches,
    problems,
    reject,
    requeue,
    requeue_failed,
    settle,
    tally,
)
from ._claims import claim, claimable, give_back, orphaned, recover, start, sweep
from ._editions import (
    CycleRow,
    begin_edition,
    cycles,
    edition_entry_count,
    last_cycle,
    last_sent_id,
    load_composed,
    load_stories,
    load_variants,
    next_edition_id,
    save_content,
    save_stories,
    save_variant,
    unfinished,
)
from ._freeze import Choice, Grouping, choices, freeze_recipients
from ._known import known, link_key, remember
from ._zones import Released, next_release, release, zones_of

__all__ = [
    "Choice",
    "CycleRow",
    "Grouping",
    "Released",
    "Tally",
    "begin_edition",
    "choices",
    "claim",
    "claimable",
    "cycles",
    "edition_entry_count",
    "freeze_recipients",
    "give_back",
    "known",
    "last_cycle",
    "last_sent_id",
    "link_key",
    "load_batch",
    "load_batches",
    "load_composed",
    "load_stories",
    "load_variants",
    "mark",
    "next_edition_id",
    "next_release",
    "orphaned",
    "pending_batches",
    "problems",
    "recover",
    "reject",
    "release",
    "remember",
    "requeue",
    "requeue_failed",
    "save_content",
    "save_stories",
    "save_variant",
    "settle",
    "start",
    "sweep",
    "tally",
    "unfinished",
    "zones_of",
]
