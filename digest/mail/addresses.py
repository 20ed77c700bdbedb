"""E-mail addresses: one check for every way an address comes in, one form for sending.

``normalize`` is used by every entry point (``subscribers add``, ``import``, the
config's ``[[subscribers]]``, ``digest.from``, the web sign-up, ``send-test``): the
syntax is checked by email-validator, and what is stored is its normalized form (the
domain lowercased and, for an internationalized domain, in Unicode: ``bücher.example``).

``wire`` is the form that goes out, in headers and in the envelope: the domain in
IDNA (``xn--bcher-kva.example``), which every mail system takes. A part before the @
with letters outside ASCII (``zoë@example.org``) can only be delivered with SMTPUTF8
(RFC 6531), so it is accepted only where the backend can deliver it (``Rules``): the
outbox, and an SMTP relay the operator says announces SMTPUTF8; never through
SendGrid, whose API takes ASCII addresses only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from ..errors import AddressError as AddressError  # config.py catches addresses.AddressError


@dataclass(frozen=True, slots=True)
class Rules:
    """Which addresses the configured backend can deliver to."""

    #: A part before the @ with letters outside ASCII (needs SMTPUTF8).
    utf8: bool = False
    #: Why not, when ``utf8`` is false: the end of a sentence about such an address.
    why_not: str = "cannot be delivered"


#: The strictest rules: what any backend can deliver.
ASCII_ONLY = Rules()


def rules_for(backend: str, smtputf8: bool = False) -> Rules:
    """The rules of a backend (``delivery.backend``), for its settings."""
    if backend == "outbox":
        return Rules(utf8=True)
    if backend == "smtp":
        if smtputf8:
            return Rules(utf8=True)
        return Rules(
            why_not="cannot be delivered through the SMTP relay unless it supports SMTPUTF8 "
            "(if it does, set delivery.smtp.smtputf8 = true)"
        )
    return Rules(why_not="cannot be delivered through SendGrid, which takes ASCII addresses only")


def normalize(text: str, rules: Rules = ASCII_ONLY) -> str:
    """The address as digest stores it; raises AddressError saying why it is refused."""
    shown = text.strip()
    quick = _plain(shown)
    if quick is not None:
        return quick
    try:
        found = email_validator.validate_email(
            shown, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"{shown!r} is not a valid e-mail address: {exc}") from exc
    if found.ascii_email is None and not rules.utf8:
        letters = sorted({c for c in found.local_part if not c.isascii()})
        raise AddressError(
            f"{shown!r} has letters outside ASCII before the @ ({', '.join(letters)}): such "
            f"an address {rules.why_not}"
        )
    return str(found.normalized)


#: A plain ASCII part before the @: a strict subset of email-validator's dot-atom.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
#: Lower-case ASCII labels: what an ASCII domain's normalized form is made of.
_PLAIN_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")


def _plain(address: str) -> str | None:
    """``normalize`` of the usual address (plain ASCII, one @), quickly: its part before
    the @ checked by a pattern stricter than email-validator's, its domain by
    email-validator itself, once per domain. None: not that simple, ask email-validator
    (``tests/test_mail_properties.py`` checks that both ways always agree)."""
    local, at, domain = address.rpartition("@")
    if (
        not at
        or len(address) > 254
        or len(local) > 64
        or _PLAIN_LOCAL.fullmatch(local) is None
        or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES
    ):
        return None
    normalized = _domain(domain.lower())
    return None if normalized is None else f"{local}@{normalized}"


@lru_cache(maxsize=65536)
def _domain(domain: str) -> str | None:
    """email-validator's form of an ASCII domain, when it is the domain as written."""
    if _PLAIN_DOMAIN.fullmatch(domain) is None:
        return None
    try:
        found = email_validator.validate_email(
            f"a@{domain}", check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError:
        return None  # the slow way says why
    return domain if found.domain == domain == found.ascii_domain else None


def wire(address: str) -> str:
    """``address`` as it goes out: the domain in IDNA. Raises AddressError if it is not
    an address (a stored one always is)."""
    if address.isascii():
        return address  # the usual case, quickly: an ASCII domain is already its IDNA
    return _wire(address)


@lru_cache(maxsize=1024)
def _wire(address: str) -> str:
    try:
        found = email_validator.validate_email(
            address, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"{address!r} is not a valid e-mail address: {exc}") from exc
    return f"{found.local_part}@{found.ascii_domain}"


def needs_smtputf8(address: str) -> bool:
    """Letters outside ASCII before the @ (of an address in ``wire`` form)."""
    return not address.isascii()
