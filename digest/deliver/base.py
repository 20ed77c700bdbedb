"""What every delivery backend shares: the interface, the letterhead, personal values.

A backend sends *batches*: one SMTP message or outbox file per batch, up to 1,000
recipients per SendGrid request. ``open`` is called once per worker and edition, so a
sender can keep a connection (SMTP) or a client (SendGrid) for the whole edition.

Sending is two steps so that the ledger's ambiguous window is as short as it can be:
``prepare`` builds the message or request (pure work, no I/O), then the dispatcher
commits the batch as ``sending``, then ``deliver`` hands it over. A crash while
preparing leaves the batch ``pending``: nothing went out, it is sent by the next run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Protocol

from ..mail.addresses import wire
from ..model import Batch, Composed, Recipient
from ..state.tokens import Signer


@dataclass(frozen=True, slots=True)
class Letterhead:
    """The operator's side of every message."""

    sender: str  # "Name <addr>"
    reply_to: str | None
    list_id: str  # for the List-Id header: "Title <id.domain>"
    base_url: str

    @property
    def domain(self) -> str:
        """The sender's domain, in IDNA (for Message-IDs)."""
        return wire(parseaddr(self.sender)[1]).rsplit("@", 1)[-1].lower()


@dataclass(frozen=True, slots=True)
class Sent:
    """A batch that went out. ``rejected`` names recipients left out of it, and why."""

    provider_id: str | None = None
    rejected: Mapping[int, str] = field(default_factory=dict)


class Sender(Protocol):
    def prepare(self, batch: Batch) -> Any:
        """Build what ``deliver`` hands over: pure work, no I/O, no side effects."""
        ...

    def deliver(self, prepared: Any) -> Sent:
        """Hand one prepared batch over; raise TransientDeliveryError (or its
        UnansweredError) or PermanentDeliveryError."""
        ...

    def send(self, batch: Batch) -> Sent:
        """``deliver(prepare(batch))``: for one-off sends outside the ledger (send-test)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    #: Recipients per batch: 1 for a backend that sends one message at a time.
    batch_size: int

    def open(self, composed: Composed) -> Sender:
        """A sender for one worker, for the whole edition."""
        ...

    def probe(self) -> str:
        """Check the backend can deliver, sending nothing (``digest check --online``).
        Returns what was checked, in words; raises DeliveryError when it cannot."""
        ...


class Personalizer:
    """The personal values of one recipient: their signed links, address and name."""

    def __init__(self, signer: Signer, base_url: str) -> None:
        self.signer = signer
        self.base_url = base_url
        self._unsubscribe = f"{base_url}/unsubscribe/"
        self._preferences = f"{base_url}/preferences/"

    def values(self, recipient: Recipient) -> dict[str, str]:
        token = self.signer.token(recipient.subscriber_id, recipient.email)
        return {
            "unsubscribe_url": self._unsubscribe + token,
            "preferences_url": self._preferences + token,
            "email": recipient.email,
            "name": recipient.name or "",
        }
