"""Every error digest raises on purpose, under one root.

The tree, split by what the caller can do about it (``tests/test_errors.py`` checks
that it is drawn as the classes are)::

    DigestError                     anything digest raises on purpose
    ├── ConfigError                 the config file is wrong: fix it (exit 2)
    ├── UsageError                  a command was given bad arguments (exit 2)
    │   └── AddressError            not an address the configured backend can deliver to
    ├── FeedError                   one feed failed; the others carry on (a value in reports)
    │   ├── FetchError              network, HTTP status, timeout, size limit
    │   └── ParseError              not a feed, or nothing usable in it
    ├── RenderError                 a template is broken: nothing is sent
    ├── DeliveryError               a message or batch was not delivered
    │   ├── TransientDeliveryError  worth retrying (429, 5xx, timeouts, connection drops)
    │   │   └── UnansweredError     sent, but no answer came: it may have arrived
    │   └── PermanentDeliveryError  retrying will not help (bad address, 400, auth)
    │       ├── RecipientError      one recipient's message: theirs alone, the batch goes on
    │       │   └── MisreadError    an address header would read back as another
    │       └── RefusedError        SendGrid refused some recipients of a request
    ├── StoreError                  the database failed or is out of date
    │   └── DatabaseFailed          unreachable, connection lost, locked, disk full
    ├── LeaseError                  another run holds the lease: try again later (exit 3)
    └── WebhookRejected             a webhook request is refused (403, 400)

Third-party errors are wrapped where they enter (``raise FetchError(...) from exc``),
so callers only ever catch ``DigestError`` and its branches, and the cause stays
chained for whoever reads the log. Bugs (``TypeError``, ``KeyError``...) are never
wrapped.

Every error survives pickling (``multiprocessing`` sends them between processes: parse
errors come back from the parser processes) whatever its ``__init__`` takes: it is
rebuilt from its ``args`` and attributes, without calling ``__init__`` again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DigestError(Exception):
    """Base class of every error digest raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls ``type(self)(*self.args)``, which fails for a class
        # whose __init__ takes other arguments than it passes on (ConfigError...).
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[DigestError], args: tuple[object, ...]) -> DigestError:
    """An error of ``cls`` with these ``args``, its __init__ not called (pickling)."""
    return cls.__new__(cls, *args)


class ConfigError(DigestError, ValueError):
    """The configuration is invalid. ``problems`` lists each one, already formatted."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} {noun}:\n{body}")


class UsageError(DigestError, ValueError):
    """A command was called with arguments that cannot work."""


class AddressError(UsageError):
    """Not an address digest can deliver to. The message says why, in digest's words."""


class FeedError(DigestError):
    """A feed could not be read. Carried as a value in run reports, never fatal to a run."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: {message}")


class FetchError(FeedError):
    """The feed could not be fetched (network, HTTP status, timeout, size limit)."""


class ParseError(FeedError):
    """The feed was fetched but is not a feed, or has nothing usable."""


class RenderError(DigestError):
    """A template failed to render. ``template`` and ``line`` locate it when known."""

    def __init__(self, message: str, template: str | None = None, line: int | None = None):
        self.template = template
        self.line = line
        where = f"{template}:{line}: " if template and line else f"{template}: " if template else ""
        super().__init__(f"{where}{message}")


class DeliveryError(DigestError):
    """A message or batch was not delivered."""


class TransientDeliveryError(DeliveryError):
    """Delivery failed in a way that may succeed later. ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class UnansweredError(TransientDeliveryError):
    """The message or request went out but no answer came back (a timeout, a dropped
    connection): the server may have accepted it. Retried only when the operator says
    so (``delivery.retry_unanswered``); otherwise the batch is recorded ``unknown``."""


class PermanentDeliveryError(DeliveryError):
    """Delivery failed and retrying will not help.

    ``fatal`` means no further message of the edition can succeed either
    (bad credentials, unverified sender), so the edition stops at once.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        self.fatal = fatal
        super().__init__(message)


class RecipientError(PermanentDeliveryError):
    """One recipient's message cannot be built or is refused: recorded as that
    recipient's failure, with the reason; the batch and the edition go on."""


class MisreadError(RecipientError):
    """An address header whose folded form reads back as other addresses or names (the
    ``email`` package of some Pythons drops the quotes of a long quoted name when it
    folds it: "Ada, <evil@example.org> ..." would then name another mailbox)."""


class RefusedError(PermanentDeliveryError):
    """A 400 naming personalizations: SendGrid refused those recipients (``parts``:
    personalization index → SendGrid's words), not the request as a whole."""

    def __init__(self, message: str, parts: Mapping[int, str]) -> None:
        super().__init__(message)
        self.parts = parts


class StoreError(DigestError):
    """The database failed, or its schema is not the one this version needs."""


class DatabaseFailed(StoreError):
    """The database did not answer as asked: unreachable, the connection lost, locked
    past the wait, the disk full. Raised for SQLAlchemy's ``OperationalError`` by every
    engine digest opens (``state.db.open_engine``); ``reason`` is the driver's words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the database failed: {reason}")


class LeaseError(DigestError):
    """Another run holds the lease on sending; this run must not send."""


class WebhookRejected(DigestError):
    """A webhook request is refused (``status``: 403 or 400), with a reason for the log."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)
