"""Where fetching may connect: never inside the network, unless the operator said so.

A feed is written by someone else, and so are its redirects and its DNS. Left alone,
a redirect to ``http://169.254.169.254/`` or ``http://10.0.0.1/admin`` would have digest
read an internal page and mail it to every subscriber. So, by default, fetching never
connects to a loopback, private, link-local, multicast, unspecified, shared
(100.64.0.0/10) or otherwise reserved address; an IPv4 address carried inside an IPv6
one (``::ffff:10.0.0.1``, 6to4, NAT64) counts as the IPv4 address it carries.

The check is made on the address each socket is about to connect to (aiohttp's
``socket_factory``), that is after DNS resolution: a name that resolves, or rebinds
between two lookups, to an internal address is refused like the address itself.

Two exceptions, both the operator's decision:

* ``fetch.allow_private = true`` (tests and intranets);
* the request goes to the very host the configured feed URL names, when that host is
  literally such an address or ``localhost`` (``http://127.0.0.1:8080/feed``): the
  operator asked for it by name. A configured *name* that resolves to an internal
  address gets no exception: that is what DNS rebinding looks like.

Through a proxy (``HTTPS_PROXY``...), digest connects only to the proxy, which resolves
the target itself: digest refuses targets that name an internal address literally or
resolve to one here, and leaves DNS rebinding between the two lookups to the proxy's
own rules.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Special-purpose ranges (IANA registries), most specific first, and what they are.
_V4 = [
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "an unspecified"),
        ("127.0.0.0/8", "a loopback"),
        ("10.0.0.0/8", "a private"),
        ("172.16.0.0/12", "a private"),
        ("192.168.0.0/16", "a private"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT)"),
        ("169.254.0.0/16", "a link-local"),
        ("224.0.0.0/4", "a multicast"),
        ("192.0.0.0/24", "a reserved"),
        ("192.0.2.0/24", "a reserved (documentation)"),
        ("192.88.99.0/24", "a reserved"),
        ("198.18.0.0/15", "a reserved (benchmarking)"),
        ("198.51.100.0/24", "a reserved (documentation)"),
        ("203.0.113.0/24", "a reserved (documentation)"),
        ("240.0.0.0/4", "a reserved"),
    )
]
_V6 = [
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("::/8", "a reserved"),
        ("64:ff9b:1::/48", "a private"),
        ("100::/64", "a reserved"),
        ("2001::/23", "a reserved"),
        ("2001:db8::/32", "a reserved (documentation)"),
        ("fc00::/7", "a private (unique local)"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a private (site-local)"),
        ("ff00::/8", "a multicast"),
    )
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCALHOST = "localhost"


def refusal(ip: IP) -> str | None:
    """What kind of internal address ``ip`` is ("a loopback"...), or None when it is a
    public one. Pure; the same answer for an IPv4 address and any IPv6 form carrying it."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = ip.ipv4_mapped or ip.sixtofour
        if carried is None and ip in _NAT64:
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None:
            return refusal(carried)
        table: list[tuple[ipaddress.IPv4Network, str]] | list[tuple[ipaddress.IPv6Network, str]]
        table = _V6
    else:
        table = _V4
    for network, kind in table:
        if ip in network:
            return kind
    # Whatever this Python's ipaddress knows more about (its lists grow with releases).
    return None if ip.is_global else "a non-public"


def parse_ip(text: str) -> IP | None:
    """An IP address written as URLs and sockets write them ([::1], fe80::1%eth0), or None."""
    text = text.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normal_host(host: str | None) -> str:
    """A host as compared here: lower case, no brackets, no trailing dot."""
    return (host or "").strip("[]").rstrip(".").lower()


def names_internal(host: str) -> bool:
    """Whether a host name says by itself that it is internal: an address in a refused
    range, or localhost (RFC 6761: every name under it is loopback)."""
    host = normal_host(host)
    if host == LOCALHOST or host.endswith("." + LOCALHOST):
        return True
    ip = parse_ip(host)
    return ip is not None and refusal(ip) is not None


class Refused(OSError):
    """Raised by the socket factory: this connection would reach inside the network."""


@dataclass(slots=True)
class Attempt:
    """One request of one feed: what it may connect to, and what was refused."""

    #: The host of the URL requested now (after redirects).
    host: str
    #: The host the configured feed URL names, when it names an internal one literally.
    trusted: str | None = None
    allow_private: bool = False
    via_proxy: bool = False
    refused: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, host: str | None, configured: str | None, allow_private: bool, via_proxy: bool
    ) -> Attempt:
        configured = normal_host(configured)
        return cls(
            host=normal_host(host),
            trusted=configured if names_internal(configured) else None,
            allow_private=allow_private,
            via_proxy=via_proxy,
        )

    @property
    def exempt(self) -> bool:
        return self.allow_private or (self.trusted is not None and self.host == self.trusted)

    def check_name(self) -> str | None:
        """Why this request is refused before any connection (its host names an
        internal address literally), or None. Connections to those hosts are pooled
        and reused, so this is checked on every request, not only on new sockets."""
        if self.exempt or not names_internal(self.host):
            return None
        ip = parse_ip(self.host)
        kind = refusal(ip) if ip else "a loopback"
        return self._refuse(self.host, kind or "an internal")

    def check_address(self, address: str) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused, or None."""
        if self.exempt:
            return None
        ip = parse_ip(address)
        kind = refusal(ip) if ip else "an unreadable"
        return self._refuse(address, kind) if kind else None

    def _refuse(self, address: str, kind: str) -> str:
        shown = address if address == self.host else f"{self.host} ({address})"
        why = (
            f"refused to connect to {shown}: {kind} address, inside the network "
            "(fetch.allow_private = true allows it, for tests and intranets)"
        )
        self.refused.append(why)
        return why


_current: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "digest_egress_attempt", default=None
)


@contextmanager
def attempting(attempt: Attempt) -> Iterator[Attempt]:
    """Make ``attempt`` the one the socket factory checks, in this task (each feed is
    fetched in a task of its own, and tasks do not share context variables)."""
    token = _current.set(attempt)
    try:
        yield attempt
    finally:
        _current.reset(token)


def socket_factory(addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
    """aiohttp's ``TCPConnector(socket_factory=...)``: a socket for ``addr_info``, or
    ``Refused`` when the address is one the current attempt may not reach. A
    connection made outside any attempt is checked like a feed's redirect (fail closed)."""
    family, kind, proto, _, sockaddr = addr_info
    attempt = _current.get() or Attempt(host=str(sockaddr[0]))
    if not attempt.via_proxy:  # through a proxy, this socket goes to the proxy
        why = attempt.check_address(str(sockaddr[0]))
        if why:
            raise Refused(why)
    return socket.socket(family=family, type=kind, proto=proto)
