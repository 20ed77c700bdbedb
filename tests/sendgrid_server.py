"""A local, validating stand-in for SendGrid's ``POST /v3/mail/send``.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive) that
answers like SendGrid does and checks every body it gets:

* ``Authorization: Bearer <key>`` is required (401 with SendGrid's error body otherwise);
* the body is validated against the request schema of SendGrid's own OpenAPI spec (jsonschema,
  Draft 2020-12), plus the documented rules the schema can't express (recipient limits,
  duplicates, content order, string-only custom_args/substitutions/headers, CR/LF in headers,
  categories, sizes); problems give a 400 ``{"errors": [{"message", "field", "help"}]}``;
* a valid body gives 202 with an empty body and a unique ``X-Message-Id`` (200 in sandbox mode).

Every request is logged (in memory and, with ``log_path``, to a JSONL file flushed before the
answer is sent), and answers can be scripted with :class:`Fault` (429/5xx/400/401, hangs,
dropped connections, slow answers) to test retry, timeout and crash handling.

Use it from pytest through the ``sendgrid_server`` / ``sendgrid_server_factory`` fixtures
defined at the bottom of this module, or standalone::

    python tests/sendgrid_server.py --port 0 --delay 0.05        # prints its URL, serves
    python tests/sendgrid_server.py --bench --validate rules      # throughput measurement

The spec is looked up at ``$DIGEST_SENDGRID_SPEC`` or ``../shared/sendgrid/spec/`` (relative to
the repo root). Without it the schema part is skipped and only the rules run, unless ``CI=true``,
where a server that should validate against the schema refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import gzip
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

try:  # the fixtures need pytest; the standalone server and the benchmark do not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_API_KEY",
    "Fault",
    "ReceivedRequest",
    "SendGridServer",
    "SpecMissingError",
    "check_rules",
    "discover_spec",
    "load_log",
    "product_like_body",
    "sendgrid_server",
    "sendgrid_server_factory",
    "spec_available",
]

log = logging.getLogger("digest.tests.sendgrid_server")

MAIL_SEND_PATH = "/v3/mail/send"
DEFAULT_API_KEY = "SG.digest-test.local-mock-key"
SPEC_ENV = "DIGEST_SENDGRID_SPEC"
SPEC_FILE_NAME = "mail_send_mock.json"
#: ``../shared/sendgrid`` next to the repo; absent on a user's clone.
DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "sendgrid"

MAX_BODY_BYTES = 30 * 1024 * 1024  # "total message size < 30 MB"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000  # strictly less than this
MAX_SUBSTITUTIONS_BYTES = 10_000  # per personalization
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_SEND_AT_AHEAD = 72 * 3600
MAX_ERRORS = 100  # errors listed in one 400 answer

Validate = Literal["full", "rules", "none"]
Keep = Literal["all", "meta", "none"]

_RESERVED = (
    "x-sg-id x-sg-eid received dkim-signature Content-Type Content-Transfer-Encoding "
    "To From Subject Reply-To CC BCC"
)
RESERVED_HEADERS = frozenset(_RESERVED.lower().split())
#: Top-level fields of the mail/send body (the spec's properties, plus legacy ``sections``).
_FIELDS = (
    "personalizations from reply_to reply_to_list subject content attachments template_id "
    "headers categories custom_args send_at batch_id asm ip_pool_name mail_settings "
    "tracking_settings sections"
)
KNOWN_FIELDS = frozenset(_FIELDS.split())
_EMAIL = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\.]+(?:\.[^@\s<>(),;:\"\[\]\\.]+)+")
_EMAILS = re.compile(rf"(?:{_EMAIL.pattern}\n)*{_EMAIL.pattern}")  # "\n"-joined addresses
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "authorization required",
    403: "access forbidden",
    404: "not found",
    405: "method not allowed",
    413: "content too large",
    415: "Content-Type should be application/json.",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


class SpecMissingError(RuntimeError):
    """The SendGrid OpenAPI spec is needed (``CI=true`` or an explicit path) but not there."""


# --------------------------------------------------------------------------------------------
# Faults and the request log


@dataclass(frozen=True)
class Fault:
    """One scripted answer, consumed by the next request to ``/v3/mail/send``.

    * ``status``: answer with this status and a SendGrid-shaped error body (``message`` and
      ``field`` in it; ``body`` replaces the whole body) instead of the normal answer. A 429
      without ``X-RateLimit-*`` headers gets ``Limit: 600``, ``Remaining: 0`` and a
      ``Reset`` one second ahead (epoch seconds).
    * ``headers``: extra response headers (e.g. ``X-RateLimit-Reset``, ``Retry-After``).
    * ``hang``: hold the connection this many seconds without answering, then close it
      without a response (a client timeout fires first if it is shorter).
    * ``drop``: close the connection without answering ("the server got the batch but the
      client never heard back").
    * ``delay``: wait this long before answering (on top of the server's ``delay``).
    * ``process``: run the normal handling first (auth, validation; a valid mail is
      *accepted*, i.e. counts as sent), then apply the fault. By default a fault with a
      ``status`` or a ``hang`` (without ``drop``) is not processed, and any other is, so
      ``Fault(drop=True)`` is "received and accepted, then the reply was lost",
      ``Fault(delay=1)`` is a slow normal answer, ``Fault(hang=2)`` never reaches the mail
      system, and ``Fault(status=500, process=True)`` is "accepted, but answered 500".

    Every request a fault applies to is logged, with ``fault`` describing it.
    """

    status: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    message: str | None = None
    field: str | None = None
    body: bytes | None = None
    hang: float = 0.0
    drop: bool = False
    delay: float = 0.0
    process: bool | None = None

    @property
    def processes(self) -> bool:
        if self.process is not None:
            return self.process
        return self.drop or (self.status is None and self.hang <= 0)

    @property
    def answers(self) -> bool:
        return not (self.drop or self.hang > 0)

    def describe(self) -> str:
        parts = [f"status={self.status}"] if self.status is not None else []
        parts += [f"hang={self.hang:g}"] if self.hang > 0 else []
        parts += ["drop"] if self.drop else []
        parts += [f"delay={self.delay:g}"] if self.delay > 0 else []
        parts += ["process"] if self.processes else []
        return " ".join(parts) or "noop"

    @classmethod
    def rate_limited(cls, reset_in: float = 1.0, retry_after: int | None = None) -> Fault:
        """A 429 with ``X-RateLimit-Reset`` ``reset_in`` seconds ahead (and ``Retry-After``)."""
        reset = int(time.time() + reset_in + 0.999)
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        headers["X-RateLimit-Reset"] = str(reset)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return cls(status=429, headers=headers)


@dataclass
class ReceivedRequest:
    """One request as the server received and answered it."""

    seq: int
    time: float  # epoch seconds, when the request (with its body) had been read
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body (None if not JSON, or with keep="meta")
    size: int  # body bytes as received
    status: int | None = None  # the status answered; None when hung up / dropped
    answered: bool = True
    message_id: str | None = None  # X-Message-Id given (or that would have been given)
    valid: bool | None = None  # validation outcome; None when not validated (faults, 401...)
    accepted: bool = False  # valid, not sandbox: the mail counts as sent
    sandbox: bool = False
    #: the errors of the 4xx answer
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fault: str | None = None  # Fault.describe() of the scripted fault applied, if any
    #: every ``to`` address of the body (``server.recipients()`` keeps the accepted ones)
    recipients: list[str] = dataclasses.field(default_factory=list)
    body_text: str | None = None  # the raw body when it was not valid JSON

    def meta(self) -> dict[str, Any]:
        """JSON-ready dict of everything but the body (the Authorization value masked)."""
        headers = {
            k: ("Bearer <redacted>" if k.lower() == "authorization" else v)
            for k, v in self.headers.items()
        }
        return {
            "seq": self.seq,
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "answered": self.answered,
            "message_id": self.message_id,
            "valid": self.valid,
            "accepted": self.accepted,
            "sandbox": self.sandbox,
            "fault": self.fault,
            "size": self.size,
            "errors": self.errors,
            "recipients": self.recipients,
            "headers": headers,
            "body_text": self.body_text,
        }


def load_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSONL request log (``ReceivedRequest.meta()`` plus ``body``)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------------------------
# Spec discovery and schema validation


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def discover_spec(spec_path: str | os.PathLike[str] | None = None) -> Path | None:
    """The spec file to use: ``spec_path``, else ``$DIGEST_SENDGRID_SPEC``, else the default
    location (``DEFAULT_SPEC_DIR/spec/mail_send_mock.json``). None when the default is absent;
    an explicit path (argument or env var) that does not exist raises ``SpecMissingError``."""
    explicit = spec_path if spec_path is not None else os.environ.get(SPEC_ENV) or None
    if explicit is not None:
        p = Path(explicit)
        candidates = [p, p / SPEC_FILE_NAME, p / "spec" / SPEC_FILE_NAME] if p.is_dir() else [p]
        for c in candidates:
            if c.is_file():
                return c
        source = "spec_path" if spec_path is not None else f"${SPEC_ENV}"
        raise SpecMissingError(f"SendGrid spec not found: {source} points at {p}")
    default = DEFAULT_SPEC_DIR / "spec" / SPEC_FILE_NAME
    return default if default.is_file() else None


def spec_available() -> bool:
    """Whether the schema part of the validation can run here (for ``skipif`` marks)."""
    try:
        return discover_spec() is not None
    except SpecMissingError:
        return False


_validator_cache: dict[tuple[str, int], Any] = {}
_validator_lock = threading.Lock()


def load_validator(path: Path) -> Any:
    """A ``jsonschema.Draft202012Validator`` for the mail/send request body of the spec at
    ``path`` (cached). The upstream spec's ``custom_args`` typing bug is patched in memory, as
    ``patch_spec.py`` does, so both the raw and the patched spec work."""
    import jsonschema  # type: ignore[import-untyped,unused-ignore]  # only needed with a spec

    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _validator_lock:
        if key in _validator_cache:
            return _validator_cache[key]
        spec = json.loads(path.read_text(encoding="utf-8"))
        try:
            media = spec["components"]["requestBodies"]["PostMailSend"]["content"]
            body = media["application/json"]["schema"]
        except (KeyError, TypeError) as exc:
            raise SpecMissingError(f"{path} has no PostMailSend request body schema") from exc
        str_map = {"type": "object", "additionalProperties": {"type": "string"}}
        body["properties"]["custom_args"] = dict(str_map)
        pers = body["properties"]["personalizations"]["items"]["properties"]
        for name in ("custom_args", "substitutions"):
            pers[name] = {**pers.get(name, {}), "additionalProperties": {"type": "string"}}
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/components/requestBodies/PostMailSend/content/application~1json/schema",
            "components": spec["components"],
        }
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.FormatChecker()
        )
        _validator_cache[key] = validator
        return validator


def _error(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": None}


def schema_errors(validator: Any, body: Any) -> list[dict[str, Any]]:
    """The schema violations of ``body`` as SendGrid-shaped error dicts."""
    out = []
    for e in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
        path = [str(p) for p in e.absolute_path]
        if e.validator == "required" and isinstance(e.instance, dict):
            missing = [k for k in e.validator_value if k not in e.instance]
            named = [k for k in missing if e.message.startswith(repr(k))]
            path.append(str((named or missing or ["?"])[0]))
        message = e.message
        if len(message) > 200:  # messages quote the instance, which may be huge
            message = f"does not match the schema ({e.validator}: {e.validator_value!r})"[:200]
        out.append(_error(f"schema: {message}", ".".join(path) or None))
        if len(out) >= MAX_ERRORS:
            break
    return out


# --------------------------------------------------------------------------------------------
# The rules the schema cannot express


def _nbytes(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


def _map_bytes(m: Mapping[str, str]) -> int:
    """Bytes of the keys and values of a string map (UTF-8)."""
    return _nbytes("".join(m)) + _nbytes("".join(m.values()))


_HEADER_NAME_OK: dict[str, str | None] = {}  # header name → error message (None: fine)


def _header_name_error(name: str) -> str | None:
    try:
        return _HEADER_NAME_OK[name]
    except KeyError:
        pass
    if not _HEADER_NAME.fullmatch(name):
        err: str | None = f"Invalid header name {name!r}."
    elif name.lower() in RESERVED_HEADERS:
        err = f"The {name} header is reserved and may not be set."
    else:
        err = None
    if len(_HEADER_NAME_OK) < 10_000:
        _HEADER_NAME_OK[name] = err
    return err


def _check_headers(headers: Any, where: str, errors: list[dict[str, Any]]) -> None:
    if headers is None:
        return
    if not isinstance(headers, dict):
        errors.append(_error("headers must be an object of header name → string", where))
        return
    for name, value in headers.items():
        if (err := _header_name_error(name)) is not None:
            errors.append(_error(err, f"{where}.{name}"))
        if type(value) is not str:
            errors.append(_error("Header values must be strings.", f"{where}.{name}"))
        elif "\r" in value or "\n" in value:
            errors.append(
                _error(
                    "Header values may not contain linefeed or carriage return characters.",
                    f"{where}.{name}",
                )
            )


def _check_string_map(
    value: Any, where: str, what: str, errors: list[dict[str, Any]]
) -> dict[str, str]:
    """Check an object of strings; return its string entries."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(_error(f"{what} must be an object of strings.", where))
        return {}
    if _STR_ONLY.issuperset(map(type, value.values())):
        return value
    good: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, str):
            good[k] = v
        else:
            message = f"{what} values must be strings (got {type(v).__name__})."
            errors.append(_error(message, f"{where}.{k}"))
    return good


def _check_address(obj: Any, where: str, errors: list[dict[str, Any]], what: str) -> str | None:
    """Check an ``{"email", "name"}`` object; return the email if usable."""
    if not isinstance(obj, dict):
        errors.append(_error(f"The {what} must be an object with an email.", where))
        return None
    email = obj.get("email")
    if not isinstance(email, str) or not _EMAIL.fullmatch(email):
        errors.append(_error("Does not contain a valid address.", f"{where}.email"))
        email = None
    name = obj.get("name")
    if name is not None:
        if not isinstance(name, str):
            errors.append(_error("The name must be a string.", f"{where}.name"))
        elif ";" in name or "," in name:
            errors.append(_error("The name may not contain ';' or ','.", f"{where}.name"))
        elif "\r" in name or "\n" in name:
            errors.append(_error("The name may not contain CR or LF.", f"{where}.name"))
    return email


_BAD_NAME = re.compile(r"[;,\r\n]")
_STR_ONLY = frozenset({str})


def _address_ok(obj: Any) -> str | None:
    """Fast path: the email of a flawless ``{"email", "name"}`` object, else None."""
    if type(obj) is dict:
        email = obj.get("email")
        if type(email) is str and _EMAIL.fullmatch(email):
            name = obj.get("name")
            if name is None or (type(name) is str and not _BAD_NAME.search(name)):
                return email
    return None


_FAST_KEYS = frozenset({"to", "headers", "substitutions", "custom_args", "subject"})


def _fast_personalizations(
    pers: list[Any], msg_args_bytes: int
) -> tuple[list[str], int, bool] | None:
    """The common case in bulk (C-level passes over all personalizations at once): return
    what ``_check_personalizations`` returns when the personalizations certainly pass, or None
    when anything is unusual or wrong, so that the detailed (slower) check runs and explains.
    Type checks are implicit: indexing a non-dict, ``dict.values`` of a non-dict and joining
    a non-string all raise TypeError."""
    try:
        keys: set[str] = set().union(*pers)
        if not keys <= _FAST_KEYS:
            return None  # cc, bcc, from, send_at, unknown keys: the detailed check
        tos = [p["to"] for p in pers]
        if not all(tos):
            return None
        rcpts = list(chain.from_iterable(tos))
        emails = [r["email"] for r in rcpts]
        joined = "\n".join(emails)
        if not _EMAILS.fullmatch(joined):
            return None
        lowered = joined.lower().split("\n")
        if len(set(lowered)) != len(lowered):
            return None
        if _BAD_NAME.search("".join([r["name"] for r in rcpts if "name" in r])):
            return None
        if "headers" in keys:
            maps = [p["headers"] for p in pers if "headers" in p]
            text = "".join(chain.from_iterable(map(dict.values, maps)))
            if "\r" in text or "\n" in text:
                return None
            if any(_header_name_error(n) for n in set().union(*maps)):
                return None
        for name, room in (
            ("substitutions", MAX_SUBSTITUTIONS_BYTES + 1),
            ("custom_args", MAX_CUSTOM_ARGS_BYTES - msg_args_bytes),
        ):
            if name in keys:
                maps = [p[name] for p in pers if name in p]
                values = list(chain.from_iterable(map(dict.values, maps)))
                "".join(values)  # TypeError unless all strings
                # (json.loads shares equal keys, so the set of keys is small and quick)
                longest = max(map(len, set().union(*maps)), default=0)
                longest += max(map(len, values), default=0)
                # bytes <= 4 * chars <= 4 * entries * (longest key + longest value): a sure
                # pass, or the detailed check
                if 4 * max(map(len, maps)) * longest >= room:
                    return None
        every_p_has_subject = False
        if "subject" in keys:
            subjects = [p["subject"] for p in pers if "subject" in p]
            text = "".join(subjects)
            if "\r" in text or "\n" in text:
                return None
            every_p_has_subject = len(subjects) == len(pers)
    except (KeyError, TypeError, AttributeError):
        return None
    return emails, len(rcpts), every_p_has_subject


def _check_personalizations(
    pers: list[Any],
    msg_args: Mapping[str, str],
    msg_args_bytes: int,
    errors: list[dict[str, Any]],
    now: float | None,
) -> tuple[list[str], int, bool]:
    """Check every personalization; return (the ``to`` addresses, the recipient count,
    whether every personalization has a subject).

    Written for speed (a 1,000-personalization body is checked in about a millisecond): the
    common, valid case takes a fast path per personalization, display names and header names
    and values are checked in bulk at the end, and messages are only built for actual errors."""
    recipients: list[str] = []
    seen: dict[str, tuple[int, str]] = {}
    names: list[str] = []  # display names of `to` recipients, checked in bulk
    header_maps: list[tuple[int, dict[str, str]]] = []  # string-valued, checked in bulk
    total = 0
    every_p_has_subject = bool(pers)
    args_room = MAX_CUSTOM_ARGS_BYTES - msg_args_bytes  # bytes left for personalization args
    for i, p in enumerate(pers):
        if type(p) is not dict:
            errors.append(_error("A personalization must be an object.", f"personalizations.{i}"))
            continue
        to = p.get("to")
        if type(to) is list and to:
            total += len(to)
            for j, r in enumerate(to):
                email = r.get("email") if type(r) is dict else None
                if type(email) is str and _EMAIL.fullmatch(email):
                    name = r.get("name")
                    if type(name) is str:
                        names.append(name)
                    elif name is not None:
                        message = "The name must be a string."
                        errors.append(_error(message, f"personalizations.{i}.to.{j}.name"))
                else:
                    where = f"personalizations.{i}.to.{j}"
                    email = _check_address(r, where, errors, "recipient")
                    if email is None:
                        continue
                low = email.lower()
                if low in seen:
                    errors.append(_duplicate(email, i, "to", seen[low]))
                else:
                    seen[low] = (i, "to")
                recipients.append(email)
        else:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have at "
                    "least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                )
            )
        if len(p) == 1:
            every_p_has_subject = False
            continue
        for kind in ("cc", "bcc"):
            group = p.get(kind)
            if group is None:
                continue
            if type(group) is not list:
                errors.append(_error(f"{kind} must be an array.", f"personalizations.{i}.{kind}"))
                continue
            total += len(group)
            for j, r in enumerate(group):
                email = _check_address(r, f"personalizations.{i}.{kind}.{j}", errors, "recipient")
                if email is not None:
                    low = email.lower()
                    if low in seen:
                        errors.append(_duplicate(email, i, kind, seen[low]))
                    else:
                        seen[low] = (i, kind)
        headers = p.get("headers")
        if headers is not None:
            if type(headers) is dict and _STR_ONLY.issuperset(map(type, headers.values())):
                header_maps.append((i, headers))
            else:
                _check_headers(headers, f"personalizations.{i}.headers", errors)
        subs = p.get("substitutions")
        if subs is not None and not (
            type(subs) is dict
            and _STR_ONLY.issuperset(map(type, subs.values()))
            # chars <= bytes <= 4 * chars: only count bytes when it could matter
            and 4 * (sum(map(len, subs)) + sum(map(len, subs.values()))) <= MAX_SUBSTITUTIONS_BYTES
        ):
            where = f"personalizations.{i}.substitutions"
            subs = _check_string_map(subs, where, "substitutions", errors)
            if _map_bytes(subs) > MAX_SUBSTITUTIONS_BYTES:
                message = "The total size of substitutions may not exceed 10,000 bytes per "
                errors.append(_error(message + "personalization.", where))
        args = p.get("custom_args")
        if args is not None and not (
            type(args) is dict
            and _STR_ONLY.issuperset(map(type, args.values()))
            and 4 * (sum(map(len, args)) + sum(map(len, args.values()))) < args_room
        ):
            where = f"personalizations.{i}.custom_args"
            args = _check_string_map(args, where, "custom_args", errors)
            merged = {**msg_args, **args} if args else {}
            if msg_args_bytes < MAX_CUSTOM_ARGS_BYTES <= _map_bytes(merged):
                message = "custom_args (message-level and personalization-level together) "
                errors.append(_error(message + "may not exceed 10,000 bytes.", where))
        subject = p.get("subject")
        if subject is None:
            every_p_has_subject = False
        elif type(subject) is str and ("\r" in subject or "\n" in subject):
            message = "The subject may not contain CR or LF."
            errors.append(_error(message, f"personalizations.{i}.subject"))
        if "from" in p:
            _check_address(p["from"], f"personalizations.{i}.from", errors, "from")
        if (send_at := p.get("send_at")) is not None:
            _check_send_at(send_at, f"personalizations.{i}.send_at", errors, now)

    # bulk checks, with a slow pass to point at the culprits only when something is wrong
    if names and _BAD_NAME.search("".join(names)):
        for i, p in enumerate(pers):
            to = p.get("to") if type(p) is dict else None
            for j, r in enumerate(to if type(to) is list else []):
                if type(r) is dict and type(r.get("name")) is str and _address_ok(r) is None:
                    _check_address(r, f"personalizations.{i}.to.{j}", errors, "recipient")
    if header_maps:
        header_names: set[str] = set().union(*(h for _, h in header_maps))
        bad_names = [n for n in header_names if _header_name_error(n) is not None]
        values = "".join(chain.from_iterable(h.values() for _, h in header_maps))
        if bad_names or "\r" in values or "\n" in values:
            for i, h in header_maps:
                _check_headers(h, f"personalizations.{i}.headers", errors)
    return recipients, total, every_p_has_subject


def _duplicate(email: str, i: int, kind: str, first: tuple[int, str]) -> dict[str, Any]:
    return _error(
        "Each email address in the personalization block should be unique between to, cc, "
        f"and bcc. We found the first duplicate instance of [{email}] in the "
        f"personalizations.{i}.{kind} field (first seen in personalizations.{first[0]}."
        f"{first[1]}).",
        f"personalizations.{i}.{kind}",
    )


def check_rules(body: Any, *, now: float | None = None) -> list[dict[str, Any]]:
    """The documented mail/send rules a JSON schema can't express (and the essentials of the
    structure, so they run without the spec too). SendGrid-shaped error dicts; empty if OK."""
    return _rules(body, now)[0]


def _rules(body: Any, now: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """``check_rules``, plus the ``to`` addresses found on the way."""
    errors: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        return [_error("Bad Request", None)], []
    for key in body:
        if key not in KNOWN_FIELDS:
            errors.append(_error(f"Unknown field {key!r}.", key))
    template = isinstance(body.get("template_id"), str) and body["template_id"] != ""

    # from
    if "from" not in body:
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
            )
        )
    else:
        _check_address(body["from"], "from", errors, "from")
    if "reply_to" in body and "reply_to_list" in body:
        errors.append(_error("reply_to and reply_to_list are mutually exclusive.", "reply_to"))

    # message-level string maps
    msg_args = _check_string_map(body.get("custom_args"), "custom_args", "custom_args", errors)
    msg_args_bytes = _map_bytes(msg_args)
    if msg_args_bytes >= MAX_CUSTOM_ARGS_BYTES:
        errors.append(_error("custom_args may not exceed 10,000 bytes.", "custom_args"))
    _check_headers(body.get("headers"), "headers", errors)
    subject = body.get("subject")
    if isinstance(subject, str) and ("\r" in subject or "\n" in subject):
        errors.append(_error("The subject may not contain CR or LF.", "subject"))
    if (send_at := body.get("send_at")) is not None:
        _check_send_at(send_at, "send_at", errors, now)

    # personalizations
    pers = body.get("personalizations")
    if not isinstance(pers, list) or not pers:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        )
        pers = []
    elif len(pers) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                "The personalization block is limited to 1000 personalizations per API request.",
                "personalizations",
            )
        )
    fast = _fast_personalizations(pers, msg_args_bytes) if pers else None
    recipients, total, every_p_has_subject = fast or _check_personalizations(
        pers, msg_args, msg_args_bytes, errors, now
    )
    if total > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"There is a limit of 1000 total recipients (to + cc + bcc) per request; "
                f"this one has {total}.",
                "personalizations",
            )
        )

    # subject and content
    if not template and not every_p_has_subject and not (isinstance(subject, str) and subject):
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    _check_content(body.get("content"), template, errors)

    # categories
    cats = body.get("categories")
    if cats is not None:
        if not isinstance(cats, list):
            errors.append(_error("categories must be an array of strings.", "categories"))
        else:
            if len(cats) > MAX_CATEGORIES:
                errors.append(_error("You may not have more than 10 categories.", "categories"))
            strs = [c for c in cats if isinstance(c, str)]
            if len(strs) != len(cats):
                errors.append(_error("Categories must be strings.", "categories"))
            if len(set(strs)) != len(strs):
                errors.append(_error("Categories must be unique.", "categories"))
            for k, c in enumerate(strs):
                if len(c) > MAX_CATEGORY_LENGTH:
                    errors.append(
                        _error("A category may not exceed 255 characters.", f"categories.{k}")
                    )
    return errors[:MAX_ERRORS], recipients


def _check_send_at(value: Any, where: str, errors: list[dict[str, Any]], now: float | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(_error("send_at must be an integer Unix timestamp.", where))
    elif value > (time.time() if now is None else now) + MAX_SEND_AT_AHEAD:
        errors.append(_error("send_at may not be more than 72 hours in the future.", where))


def _check_content(content: Any, template: bool, errors: list[dict[str, Any]]) -> None:
    if content is None or content == []:
        if not template:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block.",
                    "content",
                )
            )
        return
    if not isinstance(content, list):
        errors.append(_error("content must be an array.", "content"))
        return
    types: list[str] = []
    for k, part in enumerate(content):
        if not isinstance(part, dict):
            errors.append(_error("A content block must be an object.", f"content.{k}"))
            continue
        ctype, value = part.get("type"), part.get("value")
        if not isinstance(ctype, str) or not ctype:
            errors.append(
                _error("The content type must be a non-empty string.", f"content.{k}.type")
            )
        else:
            types.append(ctype.lower())
        if not isinstance(value, str) or not value:
            errors.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{k}.value",
                )
            )
    if len(set(types)) != len(types):
        errors.append(_error("Each content type may appear only once.", "content"))
    if "text/plain" in types and types[0] != "text/plain":
        errors.append(
            _error(
                "If present, text/plain must be first, followed by text/html, followed by any "
                "other content.",
                "content",
            )
        )


def _to_addresses(body: Any) -> list[str]:
    """Every ``to`` email of a body, in order (tolerant of malformed bodies)."""
    out: list[str] = []
    pers = body.get("personalizations") if isinstance(body, dict) else None
    if isinstance(pers, list):
        for p in pers:
            to = p.get("to") if isinstance(p, dict) else None
            if isinstance(to, list):
                out.extend(r["email"] for r in to if isinstance(r, dict) and "email" in r)
    return out


def _is_sandbox(body: Any) -> bool:
    try:
        return body["mail_settings"]["sandbox_mode"]["enable"] is True
    except (KeyError, TypeError, IndexError):
        return False


# --------------------------------------------------------------------------------------------
# The HTTP side


class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.app._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        self.server.app._handle(self)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _BodyTooLarge
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge
        return self.rfile.read(length) if length > 0 else b""

    def respond(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() cuts the connections and waits (bounded) itself
    request_queue_size = 256
    app: SendGridServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | BrokenPipeError):
            return  # the client went away (timeouts, killed clients): expected here
        self.app._internal_error(traceback.format_exc())


def _error_body(errors: list[dict[str, Any]]) -> bytes:
    return json.dumps({"errors": errors}).encode()


class SendGridServer:
    """A validating SendGrid mail/send server on 127.0.0.1 in a background thread.

    ``api_key``: the key the server expects (``None``: any non-empty Bearer token).
    ``validate``: ``"full"`` (schema + rules; the schema part is skipped when the spec is
    absent, or refuses to start if ``CI=true``), ``"rules"`` (rules only) or ``"none"`` (auth
    only; the body is parsed only if something needs it: a log, ``keep`` other than "none",
    ``on_request``, sandbox mode). ``delay``: seconds to wait before each answer (a real API's
    latency).
    ``log_path``: also write every request to this JSONL file (truncated at start), flushed
    before the answer is sent. ``keep``: what the in-memory log keeps: ``"all"`` (records with
    parsed bodies), ``"meta"`` (records without bodies), ``"none"`` (no records, counters only;
    for long benchmarks). ``on_request``: called with each record once it is logged, before the
    answer (from the handler thread; e.g. to kill a client mid-run).
    """

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        validate: Validate = "full",
        spec_path: str | os.PathLike[str] | None = None,
        delay: float = 0.0,
        log_path: str | os.PathLike[str] | None = None,
        keep: Keep = "all",
        on_request: Callable[[ReceivedRequest], None] | None = None,
        start: bool = True,
    ) -> None:
        if validate not in ("full", "rules", "none"):
            raise ValueError(f"validate must be 'full', 'rules' or 'none', not {validate!r}")
        if keep not in ("all", "meta", "none"):
            raise ValueError(f"keep must be 'all', 'meta' or 'none', not {keep!r}")
        self.api_key = api_key
        self.validate: Validate = validate
        self.delay = delay
        self.keep: Keep = keep
        self.on_request = on_request
        self.spec_path: Path | None = None
        self._validator: Any = None
        if validate == "full":
            self.spec_path = discover_spec(spec_path)
            if self.spec_path is None and _ci():
                raise SpecMissingError(
                    "CI=true but the SendGrid OpenAPI spec is missing: expected "
                    f"{DEFAULT_SPEC_DIR / 'spec' / SPEC_FILE_NAME} or ${SPEC_ENV} pointing at "
                    "mail_send_mock.json; the test server will not silently skip schema "
                    "validation in CI"
                )
            if self.spec_path is not None:
                self._validator = load_validator(self.spec_path)
            else:
                log.info("SendGrid spec not found; validating with the rules only")

        # validate="none" and nobody will look at the bodies: skip parsing them (benchmarks)
        self._trusting = validate == "none" and keep == "none" and log_path is None
        self._trusting = self._trusting and on_request is None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._faults: deque[Fault] = deque()
        self._every: Fault | None = None
        self._seq = 0
        self._counts: Counter[str] = Counter()
        self._internal_errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._cpu = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self
        host_, self.port = self._httpd.server_address[:2]
        self.host = host_ if isinstance(host_, str) else host_.decode()
        self.log_path = Path(log_path) if log_path is not None else None
        self._log_file: IO[str] | None = None
        if self.log_path is not None:
            self._log_file = open(self.log_path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def schema_enabled(self) -> bool:
        """Whether bodies are checked against the spec's JSON schema."""
        return self._validator is not None

    def start(self) -> SendGridServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sendgrid-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections (hung requests included), close the log."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with self._lock:
                if not self._connections:
                    break
            time.sleep(0.01)
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    close = stop

    def __enter__(self) -> SendGridServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults --------------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue scripted answers; each is consumed by one request to /v3/mail/send."""
        with self._lock:
            self._faults.extend(faults)

    def script_every(self, fault: Fault | None) -> None:
        """Apply ``fault`` to every request once the script queue is empty (None: stop)."""
        with self._lock:
            self._every = fault

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # the log -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[Any]:
        """The bodies of the accepted mails (202; sandbox 200s are not deliveries)."""
        return [r.body for r in self.requests if r.accepted]

    def recipients(self) -> list[str]:
        """Every ``to`` address of the accepted requests, in order, duplicates kept."""
        return [a for r in self.requests if r.accepted for a in r.recipients]

    def message_ids(self) -> list[str]:
        return [r.message_id for r in self.requests if r.accepted and r.message_id]

    def stats(self) -> dict[str, int]:
        """Counters that survive ``keep="none"``: received, accepted, and per status."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget the log (and truncate the JSONL file), the fault script and counters."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._every = None
            self._counts.clear()
            if self._log_file is not None:
                self._log_file.seek(0)
                self._log_file.truncate()
                self._log_file.flush()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests have been logged (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._counts["received"] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self._counts['received']} of {count} requests after {timeout}s"
                    )
                self._changed.wait(left)
            return list(self._requests)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of bugs in this server (should stay empty)."""
        with self._lock:
            return list(self._internal_errors)

    # internals -----------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _internal_error(self, text: str) -> None:
        log.error("sendgrid test server bug:\n%s", text)
        with self._lock:
            self._internal_errors.append(text)

    def _next_fault(self, path: str) -> Fault | None:
        if path != MAIL_SEND_PATH:
            return None
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            return self._every

    def _record(self, rec: ReceivedRequest, raw_json: str | None) -> None:
        """Log ``rec`` in memory and to the JSONL file; called before answering."""
        meta = rec.meta()
        with self._lock:
            self._seq += 1
            rec.seq = meta["seq"] = self._seq
            self._counts["received"] += 1
            self._counts["accepted"] += rec.accepted
            self._counts[str(rec.status) if rec.answered else "unanswered"] += 1
            if self.keep != "none":
                if self.keep == "meta":
                    rec.body = None
                self._requests.append(rec)
            if self._log_file is not None:
                line = json.dumps(meta, ensure_ascii=False)
                body = raw_json if raw_json is not None else "null"
                self._log_file.write(f'{line[:-1]}, "body": {body}}}\n')
                self._log_file.flush()
            self._changed.notify_all()
        if self.on_request is not None:
            self.on_request(rec)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _handle(self, h: _Handler) -> None:
        try:
            self._handle_inner(h)
        except (ConnectionError, TimeoutError):
            h.close_connection = True
        except Exception:
            self._internal_error(traceback.format_exc())
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.respond(500, {}, _error_body([_error("test server bug", None)]))

    def _handle_inner(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        headers = dict(h.headers.items())
        rec = ReceivedRequest(0, 0.0, h.command, path, headers, None, 0)
        try:
            raw = h.read_body()
        except (_BodyTooLarge, ValueError) as exc:
            rec.time = time.time()
            h.close_connection = True
            self._answer_error(h, rec, 413 if isinstance(exc, _BodyTooLarge) else 400, None)
            return
        rec.time, rec.size = time.time(), len(raw)

        fault = self._next_fault(path)
        if fault is not None:
            rec.fault = fault.describe()
            if not fault.processes:
                self._apply_fault(
                    h, rec, fault, _parse_quietly(raw, h.headers.get("Content-Encoding", ""), rec)
                )
                return

        with self._cpu:  # one request at a time: less GIL thrashing between handler threads
            raw_json, status, out_headers, out_body = self._process(h, path, raw, rec)
        if fault is not None:
            self._apply_fault(h, rec, fault, raw_json, status, out_headers, out_body)
            return
        rec.status = status
        self._record(rec, raw_json)
        self._wait(self.delay)
        h.respond(status, out_headers, out_body)

    def _process(
        self, h: _Handler, path: str, raw: bytes, rec: ReceivedRequest
    ) -> tuple[str | None, int, dict[str, str], bytes]:
        """Normal handling: fill ``rec`` and return (body as one JSON line, status, headers,
        response body)."""
        json_type = {"Content-Type": "application/json"}

        def fail(
            status: int, errors: list[dict[str, Any]] | None = None
        ) -> tuple[str | None, int, dict[str, str], bytes]:
            rec.errors = errors or [_error(_STATUS_MESSAGES.get(status, "error"), None)]
            # rejected before parsing (404, 401, ...): still log the body when it is JSON
            raw_json = None if rec.body is not None else _parse_quietly(raw, encoding, rec)
            return raw_json, status, json_type, _error_body(rec.errors)

        encoding = h.headers.get("Content-Encoding", "").strip().lower()
        if path != MAIL_SEND_PATH:
            return fail(404)
        if h.command != "POST":
            return fail(405)
        auth = h.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if (
            scheme.lower() != "bearer"
            or not token
            or (self.api_key is not None and token != self.api_key)
        ):
            return fail(401)
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return fail(415)
        if self._trusting and not encoding and b"sandbox_mode" not in raw:
            # validate="none" with nothing that needs the body: don't even parse it
            rec.message_id = secrets.token_urlsafe(16)
            rec.accepted = True
            return None, 202, {"X-Message-Id": rec.message_id}, b""
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
                if len(raw) > MAX_BODY_BYTES:
                    return fail(413)
            elif encoding not in ("", "identity"):
                return fail(415)
            text = raw.decode("utf-8")
            body = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, OSError, EOFError, zlib.error):
            rec.body_text = raw.decode("utf-8", "replace")
            rec.errors = [_error("Bad Request", None)]
            return None, 400, json_type, _error_body(rec.errors)

        rec.body = body
        raw_json = _one_line(text)
        errors: list[dict[str, Any]] = []
        if self.validate == "none":
            rec.recipients = _to_addresses(body)
        else:
            errors, rec.recipients = _rules(body)
            if self._validator is not None:
                known = {(e["field"], e["message"]) for e in errors}
                for e in schema_errors(self._validator, body):
                    if (e["field"], e["message"]) not in known:
                        errors.append(e)
        if not isinstance(body, dict):
            errors = [_error("Bad Request", None)]
        rec.valid = not errors
        if errors:
            rec.errors = errors[:MAX_ERRORS]
            return raw_json, 400, json_type, _error_body(rec.errors)
        rec.sandbox = _is_sandbox(body)
        rec.accepted = not rec.sandbox
        rec.message_id = secrets.token_urlsafe(16)
        return raw_json, 200 if rec.sandbox else 202, {"X-Message-Id": rec.message_id}, b""

    def _answer_error(
        self, h: _Handler, rec: ReceivedRequest, status: int, raw_json: str | None
    ) -> None:
        rec.status = status
        rec.errors = [_error(_STATUS_MESSAGES.get(status, "error"), None)]
        self._record(rec, raw_json)
        h.respond(status, {"Content-Type": "application/json"}, _error_body(rec.errors))

    def _apply_fault(
        self,
        h: _Handler,
        rec: ReceivedRequest,
        fault: Fault,
        raw_json: str | None,
        status: int | None = None,
        out_headers: dict[str, str] | None = None,
        out_body: bytes = b"",
    ) -> None:
        if not fault.answers:
            rec.status, rec.answered = None, False
            self._record(rec, raw_json)
            self._wait(fault.hang)
            h.close_connection = True  # close without a response
            return
        headers = dict(out_headers or {})
        if fault.status is not None:
            status = fault.status
            if 200 <= status < 300:
                body = b""
                rec.message_id = rec.message_id or secrets.token_urlsafe(16)
                headers = {"X-Message-Id": rec.message_id}
            else:
                msg = fault.message or _STATUS_MESSAGES.get(status, "error")
                rec.errors = [_error(msg, fault.field)]
                body = _error_body(rec.errors)
                headers = {"Content-Type": "application/json"}
            out_body = body
            if status == 429 and not any(k.lower() == "x-ratelimit-reset" for k in fault.headers):
                headers["X-RateLimit-Limit"] = "600"
                headers["X-RateLimit-Remaining"] = "0"
                headers["X-RateLimit-Reset"] = str(int(time.time()) + 1)
        if fault.body is not None:
            out_body = fault.body
        headers.update(fault.headers)
        rec.status = status if status is not None else 202
        self._record(rec, raw_json)
        self._wait(self.delay + fault.delay)
        h.respond(rec.status, headers, out_body)


def _parse_quietly(raw: bytes, encoding: str, rec: ReceivedRequest) -> str | None:
    """Best-effort parse of a body that is not processed (scripted faults), for the log."""
    try:
        if encoding.strip().lower() == "gzip":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
        rec.body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, OSError, EOFError, zlib.error):
        return None
    rec.recipients = _to_addresses(rec.body)
    return _one_line(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_LINE_BREAKS = str.maketrans({"\r": " ", "\n": " "})
_ODD_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _one_line(text: str) -> str:
    """A valid JSON text as one line: raw CR/LF can only be whitespace between tokens in valid
    JSON, and the other characters ``str.splitlines`` breaks on only occur inside strings."""
    if "\r" in text or "\n" in text:
        text = text.translate(_LINE_BREAKS)
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        text = text.translate(_ODD_BREAKS)
    return text


# --------------------------------------------------------------------------------------------
# A body like the product builds, for tests and the benchmark


def product_like_body(
    n: int = 1000,
    *,
    domain: str = "example.com",
    start: int = 0,
    sandbox: bool = False,
    html_size: int = 20_000,
) -> dict[str, Any]:
    """A mail/send body shaped like digest's SendGrid backend builds it: ``n`` personalizations
    with one ``to`` each, substitutions for the personal markers, per-recipient
    ``List-Unsubscribe`` headers, message-level ``custom_args`` and ``categories``."""
    nonce = "n0nce7"
    pers = []
    for i in range(start, start + n):
        email = f"reader{i:06d}@{domain}"
        token = f"t{i:06d}" + "x" * 26
        values = {
            "unsubscribe_url": f"https://news.example.org/u/{token}",
            "preferences_url": f"https://news.example.org/p/{token}",
            "email": email,
            "name": f"Reader {i}",
        }
        subs = {}
        for key, value in values.items():
            subs[f"%%{nonce}.{key}.h%%"] = value
            subs[f"%%{nonce}.{key}.t%%"] = value
        pers.append(
            {
                "to": [{"email": email, "name": f"Reader {i}"}],
                "substitutions": subs,
                "headers": {
                    "List-Unsubscribe": f"<https://news.example.org/u/{token}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            }
        )
    text = f"Your digest\n\nUnsubscribe: %%{nonce}.unsubscribe_url.t%%\n"
    html = f'<p>Your digest</p><a href="%%{nonce}.unsubscribe_url.h%%">Unsubscribe</a>'
    body: dict[str, Any] = {
        "from": {"email": "digest@news.example.org", "name": "The Digest"},
        "subject": "The Digest: twelve things worth reading",
        "content": [
            {"type": "text/plain", "value": text + "." * max(0, html_size // 4 - len(text))},
            {"type": "text/html", "value": html + " " * max(0, html_size - len(html))},
        ],
        "personalizations": pers,
        "custom_args": {"edition": "12"},
        "categories": ["digest", "edition-12"],
    }
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


# --------------------------------------------------------------------------------------------
# pytest fixtures (register them in tests/conftest.py with
# ``from tests.sendgrid_server import sendgrid_server, sendgrid_server_factory``, noqa F401)

if pytest is not None:

    @pytest.fixture
    def sendgrid_server(tmp_path: Path) -> Iterator[SendGridServer]:
        """A running validating server (``validate="full"``) logging to
        ``tmp_path/sendgrid-requests.jsonl``; fails the test if the server itself broke."""
        server = SendGridServer(log_path=tmp_path / "sendgrid-requests.jsonl")
        try:
            yield server
        finally:
            server.stop()
        assert not server.internal_errors, server.internal_errors[0]

    @pytest.fixture
    def sendgrid_server_factory() -> Iterator[Callable[..., SendGridServer]]:
        """``make(**SendGridServer kwargs)`` → a started server, stopped at teardown."""
        servers: list[SendGridServer] = []

        def make(**kwargs: Any) -> SendGridServer:
            server = SendGridServer(**kwargs)
            servers.append(server)
            return server

        yield make
        for server in servers:
            server.stop()
        for server in servers:
            assert not server.internal_errors, server.internal_errors[0]


# --------------------------------------------------------------------------------------------
# Standalone server and benchmark


def _serve(args: argparse.Namespace) -> int:
    # Parsing a 1,000-personalization body allocates ~25,000 containers; the default GC
    # thresholds would run a collection every 700 of them. Nothing here makes cycles.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    server = SendGridServer(
        api_key=None if args.any_key else args.api_key,
        host=args.host,
        port=args.port,
        validate=args.validate,
        spec_path=args.spec,
        delay=args.delay,
        log_path=args.log,
        keep="none",
    )
    print(server.url, flush=True)
    print(
        f"validate={server.validate} schema={'on' if server.schema_enabled else 'off'} "
        f"delay={server.delay}s key={args.api_key if not args.any_key else '<any>'} "
        f"log={server.log_path}",
        file=sys.stderr,
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(3600):
        pass
    server.stop()
    print(f"stats: {server.stats()}", file=sys.stderr, flush=True)
    return 0


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench(args: argparse.Namespace) -> int:
    import httpx

    cmd = [sys.executable, __file__, "--port", "0", "--validate", args.validate]
    cmd += ["--delay", str(args.delay)] + (["--log", args.log] if args.log else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise SystemExit(f"the server did not start: {' '.join(cmd)}")
        body = product_like_body(args.personalizations)
        raw = json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {DEFAULT_API_KEY}",
            "Content-Type": "application/json",
        }
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        lock = threading.Lock()
        per_thread = max(1, args.requests // args.threads)

        def worker() -> None:
            with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
                for _ in range(per_thread):
                    t0 = time.perf_counter()
                    r = client.post(MAIL_SEND_PATH, content=raw, headers=headers)
                    dt = time.perf_counter() - t0
                    with lock:
                        statuses[r.status_code] += 1
                        latencies.append(dt)

        warm = httpx.post(url + MAIL_SEND_PATH, content=raw, headers=headers, trust_env=False)
        warm.raise_for_status()
        cpu0, t0 = _proc_cpu(proc.pid), time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server_cpu = _proc_cpu(proc.pid) - cpu0
        n = sum(statuses.values())
        latencies.sort()
        print(
            f"validate={args.validate} delay={args.delay}s log={'on' if args.log else 'off'} "
            f"personalizations={args.personalizations}"
            f" body={len(raw) / 1024:.0f} KiB threads={args.threads} requests={n}: "
            f"{n / wall:.1f} req/s ({n * args.personalizations / wall:,.0f} recipients/s), "
            f"p50 {latencies[n // 2] * 1000:.1f} ms, p95 {latencies[int(n * 0.95)] * 1000:.1f} ms,"
            f" statuses {dict(statuses)}, server CPU {server_cpu / wall:.0%} of a core"
        )
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    p.add_argument(
        "--validate",
        choices=["full", "rules", "none"],
        default="rules",
        help="full: schema + rules (~10 req/s at 1,000 personalizations); rules (default); none",
    )
    p.add_argument("--spec", default=None, help=f"spec file (default: ${SPEC_ENV} or shared)")
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--any-key", action="store_true", help="accept any Bearer key")
    p.add_argument("--log", default=None, help="JSONL request log path")
    p.add_argument("--bench", action="store_true", help="measure throughput and exit")
    p.add_argument("--requests", type=int, default=400, help="--bench: requests in total")
    p.add_argument("--threads", type=int, default=4, help="--bench: client threads")
    p.add_argument("--personalizations", type=int, default=1000, help="--bench: per body")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.bench:
        return _bench(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
