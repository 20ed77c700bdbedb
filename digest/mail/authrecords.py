"""SPF, DKIM and DMARC records read and judged (pure: the lookups are
``deliver/dnscheck.py``'s; this module gets what they found).

Gmail and Yahoo (February 2024) and Microsoft (May 2025) want bulk mail authenticated:
SPF or DKIM passing *for the From domain* (DMARC alignment), and a DMARC record, at least
``p=none``. Each check here says what was found, whether it does the job, and the
record to publish when it does not.

Alignment is judged a little more strictly than DMARC's default (relaxed): two domains
align here when one is the other or a subdomain of it. DMARC would also align two
sibling subdomains (news.example.org and mail.example.org) through their organizational
domain, which needs the Public Suffix List to find; digest does not guess it. Where a
domain has no DMARC record of its own, its last two labels are asked (the policy a
subdomain inherits).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

#: RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups; past that SPF fails.
SPF_LOOKUP_LIMIT = 10
#: SMTP relays whose senders' SPF is a known include (by the relay's host name).
KNOWN_RELAYS = (
    ("smtp.sendgrid.net", "sendgrid.net"),
    ("smtp.gmail.com", "_spf.google.com"),
    ("smtp-relay.gmail.com", "_spf.google.com"),
    ("smtp.office365.com", "spf.protection.outlook.com"),
    ("smtp.mailgun.org", "mailgun.org"),
    ("smtp.eu.mailgun.org", "mailgun.org"),
    ("amazonaws.com", "amazonses.com"),  # email-smtp.<region>.amazonaws.com
    ("smtp.postmarkapp.com", "spf.mtasv.net"),
    ("in-v3.mailjet.com", "spf.mailjet.com"),
    ("smtp-relay.brevo.com", "spf.brevo.com"),
    ("smtp.fastmail.com", "spf.messagingengine.com"),
)
SENDGRID_INCLUDE = "sendgrid.net"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"  # could not be told from here (or the lookup failed)


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # SPF | DKIM | DMARC
    status: Status
    name: str  # the DNS name looked at
    found: str | None  # the record found, if any
    says: str  # what that means, in words
    publish: str | None = None  # the record to publish instead (TXT at ``name``)


# -- reading records -----------------------------------------------------------------------


def tags(record: str) -> dict[str, str]:
    """A tag=value; list (DKIM, DMARC), names lowercased; later duplicates ignored."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), "".join(value.split()))
    return out


def spf_records(txts: Sequence[str]) -> list[str]:
    return [t for t in txts if t.strip().lower().split(" ", 1)[0] == "v=spf1"]


def dmarc_records(txts: Sequence[str]) -> list[str]:
    return [t for t in txts if t.strip().lower().replace(" ", "").startswith("v=dmarc1")]


@dataclass(frozen=True, slots=True)
class Term:
    qualifier: str  # + - ~ ?
    kind: str  # all include a mx ip4 ip6 exists ptr redirect (exp and unknown modifiers: "")
    value: str  # the domain or network, "" when none


def spf_terms(record: str) -> list[Term]:
    out = []
    for word in record.split()[1:]:
        if "=" in word and ":" not in word.split("=", 1)[0]:
            name, _, value = word.partition("=")
            out.append(Term("+", name.lower() if name.lower() == "redirect" else "", value))
            continue
        qualifier = word[0] if word[0] in "+-~?" else "+"
        body = word[1:] if word[0] in "+-~?" else word
        kind, _, value = body.partition(":")
        if "/" in kind and not value:  # "a/24", "mx/24"
            kind = kind.split("/", 1)[0]
        out.append(Term(qualifier, kind.lower(), value))
    return out


def spf_domains(record: str) -> list[str]:
    """The domains this record sends a checker on to (include and redirect)."""
    return [t.value.lower().rstrip(".") for t in spf_terms(record)
            if t.kind in ("include", "redirect") and t.value]  # fmt: skip


def spf_hosts(record: str, domain: str) -> list[str]:
    """The names whose addresses ``a`` and ``mx`` terms stand for (for ``mx``, the
    domain itself: the shell looks up its MX hosts)."""
    out = []
    for t in spf_terms(record):
        if t.kind in ("a", "mx"):
            name = (t.value.split("/", 1)[0] or domain).lower().rstrip(".")
            out.append(("mx:" if t.kind == "mx" else "") + name)
    return out


# -- what was found ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """What the lookups found; a name missing from a map was not looked up."""

    domain: str  # digest.from's domain
    #: TXT records by name (None: the name does not exist; a string: the lookup failed).
    txt: Mapping[str, tuple[str, ...] | None | str]
    #: Addresses by name (for SPF's a and mx terms and the relay; "mx:name" lists the
    #: addresses of name's MX hosts).
    addresses: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Setup:
    """What digest sends with (from the config)."""

    domain: str
    backend: str  # outbox | smtp | sendgrid
    relay: str | None = None  # the SMTP host
    #: The configured DKIM key: the selector, the domain (d=) and the record it needs.
    dkim: tuple[str, str, str] | None = None


def _records(found: Found, name: str) -> tuple[tuple[str, ...], str | None]:
    """(the TXT strings at name, why they could not be read)."""
    value = found.txt.get(name)
    if isinstance(value, str):
        return (), value
    return value or (), None


def aligned(a: str, b: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def organizational(domain: str) -> str:
    return ".".join(domain.split(".")[-2:])


def relay_include(relay: str | None) -> str | None:
    if relay is None:
        return None
    host = relay.lower().rstrip(".")
    for suffix, include in KNOWN_RELAYS:
        if host == suffix or host.endswith("." + suffix):
            return include
    return None


# -- SPF -----------------------------------------------------------------------------------


def spf_tree(found: Found, domain: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Every domain the SPF record of ``domain`` reaches (itself first)."""
    if domain in seen:
        return []
    records = spf_records(_records(found, domain)[0])
    out = [domain]
    for record in records[:1]:
        for d in spf_domains(record):
            out += spf_tree(found, d, seen | {domain})
    return out


def spf_lookups(found: Found, domain: str, seen: frozenset[str] = frozenset()) -> int:
    if domain in seen:
        return 0
    records = spf_records(_records(found, domain)[0])
    if not records:
        return 0
    count = 0
    for t in spf_terms(records[0]):
        if t.kind in ("include", "a", "mx", "ptr", "exists", "redirect"):
            count += 1
        if t.kind in ("include", "redirect") and t.value:
            count += spf_lookups(found, t.value.lower().rstrip("."), seen | {domain})
    return count


def spf_passes(found: Found, domain: str, ip: str, seen: frozenset[str] = frozenset()) -> bool:
    """Does ``domain``'s SPF give ``ip`` a pass (ip4, ip6, a, mx, include, redirect)?"""
    records = spf_records(_records(found, domain)[0])
    if domain in seen or not records:
        return False
    address = ipaddress.ip_address(ip)
    terms = spf_terms(records[0])
    for t in terms:
        if t.kind in ("ip4", "ip6") and t.value:
            try:
                hit = address in ipaddress.ip_network(t.value, strict=False)
            except ValueError:
                hit = False
        elif t.kind in ("a", "mx"):
            key = ("mx:" if t.kind == "mx" else "") + (t.value.split("/", 1)[0] or domain).lower()
            hit = ip in found.addresses.get(key.rstrip("."), ())
        elif t.kind == "include" and t.value:
            hit = spf_passes(found, t.value.lower().rstrip("."), ip, seen | {domain})
        elif t.kind == "all":
            return t.qualifier == "+"
        else:
            continue
        if hit:
            return t.qualifier == "+"
    redirect = [t.value for t in terms if t.kind == "redirect" and t.value]
    return bool(redirect) and spf_passes(found, redirect[0].lower(), ip, seen | {domain})


def judge_spf(found: Found, setup: Setup) -> Finding:
    domain = setup.domain
    txts, error = _records(found, domain)
    records = spf_records(txts)
    include = SENDGRID_INCLUDE if setup.backend == "sendgrid" else relay_include(setup.relay)
    suggestion = f"v=spf1 include:{include} ~all" if include else "v=spf1 mx ~all"
    if error:
        return Finding("SPF", Status.UNKNOWN, domain, None, f"could not look it up: {error}")
    if not records:
        return Finding(
            "SPF", Status.FAIL, domain, None,
            "no SPF record: receivers cannot tell which servers may send as this domain",
            suggestion,
        )  # fmt: skip
    if len(records) > 1:
        return Finding(
            "SPF", Status.FAIL, domain, " | ".join(records),
            "more than one SPF record: SPF fails (permerror); merge them into one", suggestion,
        )  # fmt: skip
    record = records[0]
    terms = spf_terms(record)
    lookups = spf_lookups(found, domain)
    if lookups > SPF_LOOKUP_LIMIT:
        return Finding(
            "SPF", Status.FAIL, domain, record,
            f"{lookups} DNS lookups (include, a, mx, redirect...): past SPF's limit of "
            f"{SPF_LOOKUP_LIMIT}, so SPF fails (permerror); flatten some includes",
        )  # fmt: skip
    if any(t.kind == "all" and t.qualifier == "+" for t in terms):
        return Finding(
            "SPF", Status.FAIL, domain, record,
            "+all lets every server on the internet send as this domain", suggestion,
        )  # fmt: skip
    return _spf_sender(found, setup, record, include)


def _spf_sender(found: Found, setup: Setup, record: str, include: str | None) -> Finding:
    """Does the record let digest's sending hosts send?"""
    domain = setup.domain
    ending = (
        ""
        if any(t.kind == "all" or t.kind == "redirect" for t in spf_terms(record))
        else ("; it has no final ~all or -all, so other servers are left neutral")
    )
    if include is not None:
        if include in spf_tree(found, domain):
            return Finding("SPF", Status.OK, domain, record,
                           f"includes {include}, the sending hosts of {setup.relay or 'SendGrid'}"
                           + ending)  # fmt: skip
        if setup.backend == "sendgrid":
            return Finding(
                "SPF", Status.WARN, domain, record,
                f"does not include {include}: fine if SendGrid's domain authentication sends "
                "with its own return path (em123.your-domain), else add it; DMARC then rests "
                "on the DKIM signature",
                record.replace(" ", f" include:{include} ", 1),
            )  # fmt: skip
        return Finding(
            "SPF", Status.FAIL, domain, record,
            f"does not include {include}, the sending hosts of {setup.relay}: add it",
            record.replace(" ", f" include:{include} ", 1),
        )  # fmt: skip
    if setup.backend == "smtp" and setup.relay:
        addresses = [a for a in found.addresses.get(setup.relay, ()) if _public(a)]
        if addresses:
            denied = [a for a in addresses if not spf_passes(found, domain, a)]
            if denied:
                return Finding(
                    "SPF", Status.FAIL, domain, record,
                    f"does not let {setup.relay} ({', '.join(denied)}) send as {domain}",
                    record.replace(" ", f" ip{_v(denied[0])}:{denied[0]} ", 1),
                )  # fmt: skip
            return Finding(
                "SPF",
                Status.OK,
                domain,
                record,
                f"lets {setup.relay} ({', '.join(addresses)}) send" + ending,
            )
        return Finding(
            "SPF", Status.UNKNOWN, domain, record,
            f"{setup.relay} is a local or private address: make sure the record names the "
            "public address your relay sends from" + ending,
        )  # fmt: skip
    return Finding(
        "SPF",
        Status.OK if not ending else Status.WARN,
        domain,
        record,
        "present (digest itself sends nothing with the outbox backend)" + ending,
    )


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global


def _v(address: str) -> str:
    return "6" if ":" in address else "4"


# -- DKIM ----------------------------------------------------------------------------------


def judge_dkim(found: Found, setup: Setup) -> list[Finding]:
    if setup.backend == "sendgrid":
        return [_sendgrid_dkim(found, setup.domain)]
    if setup.dkim is None:
        where = "the relay" if setup.backend == "smtp" else "whatever sends these messages"
        return [
            Finding(
                "DKIM", Status.UNKNOWN, setup.domain, None,
                "digest does not sign (delivery.smtp.dkim_key_file is not set): unless "
                f"{where} signs with d={setup.domain}, receivers see no DKIM signature, which "
                "Gmail and Yahoo require of bulk senders",
            )
        ]  # fmt: skip
    selector, domain, want = setup.dkim
    name = f"{selector}._domainkey.{domain}"
    txts, error = _records(found, name)
    if error:
        return [Finding("DKIM", Status.UNKNOWN, name, None, f"could not look it up: {error}")]
    records = [t for t in txts if "p=" in t.replace(" ", "")]
    out = []
    if not records:
        out.append(
            Finding(
                "DKIM",
                Status.FAIL,
                name,
                None,
                "no DKIM key published for the configured selector",
                want,
            )
        )
    else:
        have, need = tags(records[0]), tags(want)
        if not have.get("p"):
            out.append(
                Finding(
                    "DKIM", Status.FAIL, name, records[0], "the key is revoked (empty p=)", want
                )
            )
        elif have.get("p") != need["p"] or have.get("k", "rsa") != need["k"]:
            out.append(Finding(
                "DKIM", Status.FAIL, name, records[0],
                "does not match delivery.smtp.dkim_key_file: receivers would reject every "
                "signature", want,
            ))  # fmt: skip
        else:
            out.append(
                Finding("DKIM", Status.OK, name, records[0], "matches delivery.smtp.dkim_key_file")
            )
    if not aligned(domain, setup.domain):
        out.append(Finding(
            "DKIM", Status.WARN, name, None,
            f"d={domain} is not aligned with {setup.domain} (digest.from): DMARC cannot pass "
            f"on this signature; sign with a key at {selector}._domainkey.{setup.domain}",
        ))  # fmt: skip
    return out


def _sendgrid_dkim(found: Found, domain: str) -> Finding:
    names = [f"s1._domainkey.{domain}", f"s2._domainkey.{domain}"]
    for name in names:
        txts, _error = _records(found, name)
        if any("p=" in t.replace(" ", "") for t in txts):
            return Finding(
                "DKIM",
                Status.OK,
                name,
                txts[0],
                "SendGrid's domain authentication: SendGrid signs as this domain",
            )
    return Finding(
        "DKIM", Status.FAIL, names[0], None,
        "no s1/s2._domainkey record: authenticate the domain in SendGrid (Settings, Sender "
        "Authentication) and publish the CNAME records it shows, or SendGrid signs as "
        "sendgrid.net, which DMARC does not count for this domain",
    )  # fmt: skip


# -- DMARC ---------------------------------------------------------------------------------


def judge_dmarc(found: Found, setup: Setup, dkim: Sequence[Finding], spf: Finding) -> Finding:
    domain = setup.domain
    name = f"_dmarc.{domain}"
    publish = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"
    txts, error = _records(found, name)
    if error:
        return Finding("DMARC", Status.UNKNOWN, name, None, f"could not look it up: {error}")
    records = dmarc_records(txts)
    if not records and organizational(domain) != domain:
        parent = f"_dmarc.{organizational(domain)}"
        records = dmarc_records(_records(found, parent)[0])
        name = parent if records else name
    if not records:
        return Finding(
            "DMARC", Status.FAIL, name, None,
            "no DMARC record: Gmail, Yahoo and Microsoft require one (p=none at least) from "
            "bulk senders", publish,
        )  # fmt: skip
    if len(records) > 1:
        return Finding(
            "DMARC",
            Status.FAIL,
            name,
            " | ".join(records),
            "more than one DMARC record: receivers ignore them all",
            publish,
        )
    t = tags(records[0])
    policy = t.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Finding(
            "DMARC",
            Status.FAIL,
            name,
            records[0],
            "no valid p= (none, quarantine or reject)",
            publish,
        )
    words = {"none": "p=none: reports only, nothing is refused (the minimum Gmail and Yahoo "
             "ask for; move to quarantine once the reports show only your own mail)",
             "quarantine": "p=quarantine: mail that fails goes to spam",
             "reject": "p=reject: mail that fails is refused"}[policy]  # fmt: skip
    return _dmarc_alignment(setup, name, records[0], t, words, dkim, spf)


def _dmarc_alignment(
    setup: Setup,
    name: str,
    record: str,
    t: Mapping[str, str],
    words: str,
    dkim: Sequence[Finding],
    spf: Finding,
) -> Finding:
    """Can digest's mail pass DMARC: an aligned DKIM signature or an aligned SPF pass?"""
    strict_dkim = t.get("adkim") == "s"
    signer = (
        setup.dkim[1] if setup.dkim else (setup.domain if setup.backend == "sendgrid" else None)
    )
    dkim_ok = (
        signer is not None
        and all(f.status is Status.OK for f in dkim if f.check == "DKIM")
        and (signer == setup.domain if strict_dkim else aligned(signer, setup.domain))
    )
    # SMTP: digest's envelope sender is digest.from's address, so SPF is aligned (even
    # strictly) when it passes; SendGrid's return path is its own (or em123.<domain>).
    spf_ok = setup.backend == "smtp" and spf.status is Status.OK
    if dkim_ok or spf_ok:
        how = "an aligned DKIM signature" if dkim_ok else "SPF, aligned"
        return Finding("DMARC", Status.OK, name, record, f"{words}; passes with {how}")
    return Finding(
        "DMARC", Status.FAIL, name, record,
        f"{words}; but digest's mail has neither an aligned DKIM signature nor an aligned "
        "SPF pass as checked here, so it fails DMARC: fix DKIM (above) first",
    )  # fmt: skip


def judge(found: Found, setup: Setup) -> list[Finding]:
    """Every check, in the order an operator fixes them."""
    spf = judge_spf(found, setup)
    dkim = judge_dkim(found, setup)
    return [spf, *dkim, judge_dmarc(found, setup, dkim, spf)]
