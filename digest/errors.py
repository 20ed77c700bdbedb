"""Every error digest raises on purpose, under one root.

The tree, split by what the caller can do about it::

    DigestError                     anything digest raises on purpose
    ├── ConfigError                 the config file is wrong: fix it (exit 2)
    ├── UsageError                  a command was given bad arguments (exit 2)
    ├── FeedError                   one feed failed; the others carry on (a value in reports)
    │   ├── FetchError              network, HTTP status, timeout, size limit
    │   └── ParseError              not a feed, or nothing usable in it
    ├── RenderError                 a template is broken: nothing is sent
    ├── DeliveryError               a message or batch was not delivered
    │   ├── TransientDeliveryError  worth retrying (429, 5xx, timeouts, connection drops)
    │   └── PermanentDeliveryError  retrying will not help (bad address, 400, auth)
    ├── StoreError                  the database failed or is out of date
    └── LeaseError                  another run holds the lease: try again later (exit 3)

Third-party errors are wrapped where they enter (``raise FetchError(...) from exc``),
so callers only ever catch ``DigestError`` and its branches. Bugs (``TypeError``,
``KeyError``...) are never wrapped.
"""

from __future__ import annotations


class DigestError(Exception):
    """Base class of every error digest raises on purpose."""


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


class FeedError(DigestError):
    """A feed could not be read. Carried as a value in run reports, never fatal to a run."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: {message}")

    def __reduce__(self) -> tuple[type[FeedError], tuple[str, str]]:
        # Rebuilt from both arguments, so a feed's error survives a trip to a worker process.
        return (type(self), (self.url, self.message))


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


class PermanentDeliveryError(DeliveryError):
    """Delivery failed and retrying will not help.

    ``fatal`` means no further message of the edition can succeed either
    (bad credentials, unverified sender), so the edition stops at once.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        self.fatal = fatal
        super().__init__(message)


class StoreError(DigestError):
    """The database failed, or its schema is not the one this version needs."""


class LeaseError(DigestError):
    """Another run holds the lease on sending; this run must not send."""
