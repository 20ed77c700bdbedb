"""``digest check --deliverability``: look up the SPF, DKIM and DMARC records of
``digest.from``'s domain (dnspython) and judge them (``mail/authrecords.py``, pure).

Only DNS is asked, never a mail server; ``server`` names the DNS server to ask (the
tests start one on 127.0.0.1), else the system's resolvers are. A lookup that fails
(a timeout, a server failure) is reported as that check's "unknown", not as a missing
record.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mail import authrecords as ar

#: Seconds for one lookup, all tries included.
LIFETIME = 5.0
#: SPF includes followed at most (RFC 7208 allows 10 lookups in all).
MAX_SPF_DOMAINS = 20


@dataclass(frozen=True, slots=True)
class Report:
    domain: str
    findings: tuple[ar.Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.status in (ar.Status.OK, ar.Status.WARN) for f in self.findings)

    def as_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "ok": self.ok,
            "checks": [
                {
                    "check": f.check,
                    "status": str(f.status),
                    "name": f.name,
                    "found": f.found,
                    "says": f.says,
                    "publish": f.publish,
                }
                for f in self.findings
            ],
        }


def check(setup: ar.Setup, server: str | None = None) -> Report:
    """Look up what ``setup`` needs and judge it."""
    lookup = Lookup(server)
    txt: dict[str, tuple[str, ...] | None | str] = {}
    addresses: dict[str, tuple[str, ...]] = {}
    _spf(lookup, setup.domain, txt, addresses)
    if setup.relay and setup.backend == "smtp" and ar.relay_include(setup.relay) is None:
        addresses[setup.relay] = lookup.addresses(setup.relay)
    names = [f"_dmarc.{setup.domain}", f"_dmarc.{ar.organizational(setup.domain)}"]
    if setup.backend == "sendgrid":
        names += [f"s1._domainkey.{setup.domain}", f"s2._domainkey.{setup.domain}"]
    if setup.dkim is not None:
        names.append(f"{setup.dkim[0]}._domainkey.{setup.dkim[1]}")
    for name in names:
        if name not in txt:
            txt[name] = lookup.txt(name)
    found = ar.Found(setup.domain, txt, addresses)
    return Report(setup.domain, tuple(ar.judge(found, setup)))


def _spf(
    lookup: Lookup,
    domain: str,
    txt: dict[str, tuple[str, ...] | None | str],
    addresses: dict[str, tuple[str, ...]],
) -> None:
    """The SPF record of ``domain`` and of every domain it includes or redirects to, and
    the addresses its ``a`` and ``mx`` terms stand for."""
    todo = [domain]
    while todo and len(txt) < MAX_SPF_DOMAINS:
        name = todo.pop(0)
        if name in txt:
            continue
        txt[name] = lookup.txt(name)
        value = txt[name]
        records = ar.spf_records(value) if isinstance(value, tuple) else []
        if not records:
            continue
        todo += ar.spf_domains(records[0])
        for host in ar.spf_hosts(records[0], name):
            if host not in addresses:
                addresses[host] = (
                    lookup.mx_addresses(host[3:])
                    if host.startswith("mx:")
                    else lookup.addresses(host)
                )


class Lookup:
    """dnspython, asked for one record type at a time."""

    def __init__(self, server: str | None) -> None:
        import dns.resolver

        if server:
            host, port = server_address(server)
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [host]
            self.resolver.port = port
        else:
            self.resolver = dns.resolver.Resolver()
        self.resolver.lifetime = LIFETIME

    def _ask(self, name: str, kind: str) -> list[object] | None | str:
        """The answers; None when the name or the type is not there; the reason as a
        string when the lookup failed."""
        import dns.exception
        import dns.resolver

        try:
            return list(self.resolver.resolve(name, kind, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.NoNameservers as exc:
            return f"no DNS server answered ({exc.msg or 'SERVFAIL'})"
        except dns.exception.Timeout:
            return f"no answer within {LIFETIME:.0f}s"
        except dns.exception.DNSException as exc:
            return str(exc) or type(exc).__name__

    def txt(self, name: str) -> tuple[str, ...] | None | str:
        answers = self._ask(name, "TXT")
        if answers is None or isinstance(answers, str):
            return answers
        return tuple(
            b"".join(getattr(r, "strings", ())).decode("utf-8", "replace") for r in answers
        )

    def addresses(self, name: str) -> tuple[str, ...]:
        out: list[str] = []
        for kind in ("A", "AAAA"):
            answers = self._ask(name, kind)
            if isinstance(answers, list):
                out += [str(getattr(r, "address", r)) for r in answers]
        return tuple(out)

    def mx_addresses(self, name: str) -> tuple[str, ...]:
        answers = self._ask(name, "MX")
        hosts = (
            [str(getattr(r, "exchange", "")).rstrip(".") for r in answers or []]
            if (isinstance(answers, list))
            else []
        )
        return tuple(a for host in hosts if host for a in self.addresses(host))


def server_address(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT`` or ``[IPv6]:PORT`` as (address, port); ValueError when the
    address is not an IP address (a DNS server is asked by its address)."""
    import ipaddress

    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    ipaddress.ip_address(host)  # ValueError when it is not one
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{port!r} is not a port")
    return host, int(port) if port else 53
