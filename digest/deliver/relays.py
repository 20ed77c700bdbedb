"""Several SMTP relays: which one takes the next message, and which are out for a while.

One ``Pool`` is shared by every worker of an ``SmtpBackend``. Each message goes to a
relay chosen by *smooth weighted round-robin* (nginx's: every relay up adds its weight
to its score, the highest score takes the message and gives back the sum of the
weights), among the relays that are up and have a free connection slot
(``max_connections``): so over any stretch of messages each relay's share is within
one message of its weight's share, and the order is the same every run (tests count
it). An idle connection to the chosen relay is reused; a worker finding every relay
that is up at its ``max_connections`` waits for a connection to come back.

A relay that refuses the connection, does not answer in time, answers the greeting
with 4xx, or refuses the login or the sender (``smtp.py`` decides) is *out* for a
cooldown: ``COOLDOWN`` (60 s), doubling with each failure in a
row up to ``LONGEST`` (10 minutes); a connection that works brings it back to the
start. The message goes to another relay at once (nothing was sent). When every relay
is out, the one back soonest is tried anyway, so one relay behaves as it always did:
each attempt of the dispatcher tries it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COOLDOWN = 60.0
LONGEST = 600.0


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # a secret: never in a repr
    ca_file: Path | None = None
    weight: int = 1
    max_connections: int = 0  # 0: no cap beyond the workers

    @property
    def name(self) -> str:
        """How the ledger (``batches.relay``) and the messages name it: host:port."""
        return f"{self.host}:{self.port}"


def smooth_pick(weights: Sequence[int], scores: list[int], among: Sequence[int]) -> int:
    """Smooth weighted round-robin: which of ``among`` (indexes into ``weights``) takes
    the next message. ``scores`` is the state kept between calls (all 0 to start)."""
    total = 0
    for i in among:
        scores[i] += weights[i]
        total += weights[i]
    best = max(among, key=lambda i: scores[i])  # the first of equals
    scores[best] -= total
    return best


@dataclass(slots=True)
class _State:
    relay: Relay
    idle: list[Any] = field(default_factory=list)  # open connections nobody uses
    busy: int = 0  # connections in use, or being opened
    failures: int = 0  # in a row
    back_at: float = 0.0  # out until then (the pool's clock)

    def free(self) -> bool:
        cap = self.relay.max_connections
        return bool(self.idle) or cap <= 0 or len(self.idle) + self.busy < cap


@dataclass(frozen=True, slots=True)
class Lease:
    """A relay taken for one message, and an idle connection to it (None: open one).
    Give it back with ``Pool.give_back`` whatever happens."""

    relay: Relay
    conn: Any


class Pool:
    def __init__(
        self,
        relays: Sequence[Relay],
        clock: Callable[[], float] = time.monotonic,
        cooldown: float = COOLDOWN,
        longest: float = LONGEST,
    ) -> None:
        if not relays:
            raise ValueError("a pool needs at least one relay")
        self.states = [_State(r) for r in relays]
        self.weights = [max(1, r.weight) for r in relays]
        self.scores = [0] * len(relays)
        self.clock = clock
        self.cooldown = cooldown
        self.longest = longest
        self.cond = threading.Condition()
        self.users = 0  # senders open on it: the idle connections close with the last

    def take(self, tried: Container[str] = ()) -> Lease | None:
        """The relay for the next message, skipping those already ``tried`` for it; None
        when none is left to try. Waits while every relay up is at its cap."""
        with self.cond:
            while True:
                now = self.clock()
                left = [i for i, s in enumerate(self.states) if s.relay.name not in tried]
                if not left:
                    return None
                up = [i for i in left if self.states[i].back_at <= now]
                if not up:
                    if len(left) < len(self.states):  # others failed just now: give up
                        return None
                    up = [min(left, key=lambda i: self.states[i].back_at)]  # all out
                free = [i for i in up if self.states[i].free()]
                if free:
                    state = self.states[smooth_pick(self.weights, self.scores, free)]
                    state.busy += 1
                    return Lease(state.relay, state.idle.pop() if state.idle else None)
                self.cond.wait(timeout=1.0)  # a connection comes back, or the clock moves

    def give_back(self, lease: Lease, conn: Any) -> None:
        """The lease is over: ``conn`` stays open for the next message, or None (it was
        closed, or never opened)."""
        with self.cond:
            state = self._state(lease.relay)
            state.busy -= 1
            if conn is not None:
                state.idle.append(conn)
            self.cond.notify_all()

    def failed(self, relay: Relay) -> float:
        """``relay`` refused or did not answer: out for a while. Returns the seconds."""
        with self.cond:
            state = self._state(relay)
            wait = min(self.cooldown * 2.0**state.failures, self.longest)
            state.failures += 1
            state.back_at = self.clock() + wait
            self.cond.notify_all()
            return wait

    def worked(self, relay: Relay) -> None:
        with self.cond:
            state = self._state(relay)
            state.failures = 0
            state.back_at = 0.0

    def out(self) -> dict[str, float]:
        """The relays out now, and the seconds until each is back."""
        with self.cond:
            now = self.clock()
            return {s.relay.name: s.back_at - now for s in self.states if s.back_at > now}

    def enter(self) -> None:
        with self.cond:
            self.users += 1

    def leave(self) -> list[Any]:
        """A sender is done; the idle connections to close (outside the lock) when it
        was the last."""
        with self.cond:
            self.users = max(0, self.users - 1)
            if self.users:
                return []
            conns = [c for s in self.states for c in s.idle]
            for s in self.states:
                s.idle.clear()
            return conns

    def _state(self, relay: Relay) -> _State:
        return next(s for s in self.states if s.relay is relay or s.relay == relay)
