"""A DNS server on 127.0.0.1 (dnslib) answering from a dict, for the deliverability
check: the tests never ask the internet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

#: A zone: name (no final dot) → [(type, data)]; data "SERVFAIL" makes that name fail.
Zone = Mapping[str, Sequence[tuple[str, str]]]
KINDS: dict[str, Any] = {"A": A, "AAAA": AAAA, "MX": MX, "CNAME": CNAME}


def _txt(value: str) -> TXT:
    """A TXT record in strings of at most 255 bytes (as a DNS host splits a long one)."""
    data = value.encode()
    return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = {k.lower().rstrip("."): list(v) for k, v in zone.items()}
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        self.asked.append((name, kind))
        records = self.zone.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if any(data == "SERVFAIL" for _k, data in records):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        for rtype, data in records:
            if rtype == kind:
                if rtype == "TXT":
                    rdata: Any = _txt(data)
                elif rtype == "MX":
                    rdata = MX(data)
                else:
                    rdata = KINDS[rtype](data)
                reply.add_answer(RR(request.q.qname, QTYPE.reverse[rtype], rdata=rdata, ttl=60))
        return reply


def _pair(resolver: ZoneResolver, quiet: DNSLogger) -> tuple[DNSServer, DNSServer]:
    """A UDP and a TCP server on one port: the UDP port is free, but the same number may
    be taken for TCP (another test's server): then another port, a few times."""
    for _ in range(20):
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet)
        port = udp.server.server_address[1]
        try:
            return udp, DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)
        except OSError:
            udp.server.server_close()
    raise OSError("no port free for both UDP and TCP on 127.0.0.1")


@contextmanager
def dns_server(zone: Zone) -> Iterator[tuple[str, ZoneResolver]]:
    """Serve ``zone`` on 127.0.0.1 (UDP and TCP) at a free port: yields "127.0.0.1:PORT"."""
    resolver = ZoneResolver(zone)
    quiet = DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data")
    udp, tcp = _pair(resolver, quiet)
    port = udp.server.server_address[1]
    udp.start_thread()
    tcp.start_thread()
    try:
        yield f"127.0.0.1:{port}", resolver
    finally:
        udp.stop()
        tcp.stop()
        udp.server.server_close()
        tcp.server.server_close()
