"""Keep secrets and subscribers' tokens out of every log line, at any verbosity.

Two kinds of text never reach a log:

- **secret values**: the SendGrid API key, the SMTP password and the key that signs
  subscribers' links, registered with ``secret`` where digest reads them (``Config.
  secret_from_env``, ``tokens.load_key``), and credentials whatever their value (an
  ``Authorization`` header, an SMTP ``AUTH`` command, anything shaped like a SendGrid key);
- **tokens in links** that act on a subscriber: ``/unsubscribe/<token>``,
  ``/preferences/<token>``, ``/confirm/<token>`` and ``/resubscribe/<token>`` keep their
  path and lose the token.

``Redactor`` is a ``logging.Filter`` the command line puts on its log handlers, so it
cleans every line whoever wrote it (digest, uvicorn, APScheduler, an HTTP client's
debug output), message, arguments and traceback alike. Values shorter than
``MIN_LENGTH`` are not registered: masking them would mask pieces of ordinary words.
"""

from __future__ import annotations

import logging
import re
import threading

SECRET_MASK = "[secret]"
TOKEN_MASK = "[token]"
MIN_LENGTH = 4
#: The routes whose last segment is a subscriber's token (``digest/web/app.py``).
TOKEN_ROUTES = ("unsubscribe", "preferences", "confirm", "resubscribe")

_TOKEN_PATH = re.compile(rf"(/(?:{'|'.join(TOKEN_ROUTES)})/)[^\s/?#\"'<>\\]+", re.IGNORECASE)
#: Credentials whatever their value: an Authorization header (as a line or a dict's repr),
#: an SMTP AUTH command, a SendGrid API key.
_CREDENTIALS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer\s+|basic\s+)?)[^\s'\",}]+"),
    re.compile(r"(?i)(\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2)\s+)[^\s'\"\\]+"),
    re.compile(r"()\bSG\.[\w-]{8,}\.[\w-]{8,}"),
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def secret(value: str | bytes | None) -> None:
    """Never log ``value`` (from now on, in this process)."""
    global _secrets, _pattern
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value or len(value) < MIN_LENGTH or value in _secrets:
        return
    with _lock:
        _secrets = _secrets | {value}
        longest_first = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in longest_first))


def text(line: str) -> str:
    """``line`` with every registered secret, credential and link token masked."""
    pattern = _pattern
    if pattern is not None:
        line = pattern.sub(SECRET_MASK, line)
    for credential in _CREDENTIALS:
        line = credential.sub(rf"\1{SECRET_MASK}", line)
    return _TOKEN_PATH.sub(rf"\1{TOKEN_MASK}", line)


class Redactor(logging.Filter):
    """Masks secrets and tokens in a record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: show both, masked
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = text(record.exc_text)
        if record.stack_info:
            record.stack_info = text(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put a ``Redactor`` on every handler of ``logger`` (the root logger), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, Redactor) for f in handler.filters):
            handler.addFilter(Redactor())
