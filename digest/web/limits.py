"""Sign-up limits, counted in the database so that they hold across threads and processes.

Each thing counted has a row in ``signup_limits`` holding the times of its recent hits:
the whole form (``all``), a client network (``network:`` an IPv4 address, or an IPv6
/64, since one home or one server holds a whole /64) and an address (``address:``
lower-cased and without its ``+tag``, so ``v+1@`` and ``V+2@`` are one address).

A sign-up takes its rows in one transaction (``take``): the ``all`` row first, by an
upsert, which locks that row on PostgreSQL and takes the write lock on SQLite, so
sign-ups take turns, in one process or several, and never deadlock. It then decides
from what it read (``Window.wait``, pure) and writes the rows back (``put``) before
committing. Two requests at the same instant can therefore never both find room for
one more.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..state.db import schema

ALL = "all"
T = schema.signup_limits
#: Rows untouched for longer than the longest window count nothing any more.
KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` hits in any ``seconds`` long stretch of time."""

    limit: int
    seconds: float

    def recent(self, hits: Sequence[float], now: float) -> list[float]:
        """The hits this window still counts at ``now``, oldest first."""
        return sorted(h for h in hits if h > now - self.seconds)

    def wait(self, hits: Sequence[float], now: float) -> float | None:
        """None when one more hit at ``now`` fits; else the seconds until one does."""
        recent = self.recent(hits, now)
        if len(recent) < self.limit:
            return None
        return max(recent[-self.limit] + self.seconds - now, 0.0)


def address_key(address: str) -> str:
    """``address:`` and the address lower-cased, without a ``+tag`` in its local part."""
    local, _, domain = address.rpartition("@")
    return f"address:{local.split('+', 1)[0]}@{domain}".lower()


def network_key(ip: str) -> str:
    """``network:`` and the IPv4 address, or the IPv6 /64 the address is in."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return "network:unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"network:{address.ipv4_mapped}"
        return f"network:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"network:{address}"


def _upsert(conn: sa.Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(T)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(T)


def _hits(text: str) -> list[float]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [float(h) for h in data if isinstance(h, int | float)] if isinstance(data, list) else []


def take(conn: sa.Connection, keys: Sequence[str], now: datetime) -> dict[str, list[float]]:
    """Lock the rows of ``ALL`` and ``keys`` (in that order; made when missing) and read
    their hits. Call it first in the transaction, and ``put`` before committing."""
    out: dict[str, list[float]] = {}
    for key in [ALL, *(k for k in keys if k != ALL)]:
        insert = _upsert(conn).values(key=key, hits="[]", updated_at=now)
        upsert = insert.on_conflict_do_update(
            index_elements=[T.c.key], set_={"updated_at": insert.excluded.updated_at}
        ).returning(T.c.hits)
        out[key] = _hits(conn.execute(upsert).scalar_one())
        if key == ALL:  # under the lock: forget what no window still counts
            conn.execute(sa.delete(T).where(T.c.updated_at < now - KEPT))
    return out


def put(conn: sa.Connection, hits: Mapping[str, Sequence[float]], now: datetime) -> None:
    """Write back the hits of each row (those its windows still count: ``Window.recent``)."""
    for key, times in hits.items():
        text = json.dumps(list(times))
        conn.execute(sa.update(T).where(T.c.key == key).values(hits=text, updated_at=now))
