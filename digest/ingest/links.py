"""URL helpers: absolute links, http(s)-only links, canonical links for duplicate detection.

Contains no business logic.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

#: Query parameters that only track where a click came from; dropped from canonical links.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gclsrc",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "igshid",
        "yclid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "ref_src",
        "vero_id",
        "oly_anon_id",
        "oly_enc_id",
        "rb_clickid",
        "s_cid",
        "wickedid",
        "twclid",
        "ttclid",
        "srsltid",
    }
)


_UNSAFE = re.compile(r"[\r\n\t\x00 ]")


def absolute(url: str | None, base: str) -> str | None:
    """``url`` resolved against ``base``; None for empty or unparsable input."""
    if not url or not url.strip():
        return None
    try:
        return urljoin(base, url.strip())
    except ValueError:
        return None


def http_only(url: str | None) -> str | None:
    """The URL if it is an absolute http(s) URL with a host, else None."""
    if not url or _UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or not parts.hostname:
        return None
    return url


def canonical(url: str | None) -> str | None:
    """The form of a link two feeds agree on: for spotting the same story twice.

    Lower-case scheme and host, default port dropped, no fragment, tracking
    parameters (``utm_*``, ``fbclid``...) removed, remaining parameters sorted,
    trailing slash removed (except for the root path).
    """
    url = http_only(url)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return None
    if host.startswith("www."):
        host = host[4:]
    scheme = parts.scheme.lower()
    netloc = host if port in (None, 80 if scheme == "http" else 443) else f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS
    ]
    path = parts.path or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return urlunsplit(
        ("https" if scheme == "http" else scheme, netloc, path, urlencode(sorted(query)), "")
    )
