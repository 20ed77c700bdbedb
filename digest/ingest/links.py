"""URL helpers: absolute links, http(s)-only links, tidy links (no tracking parameters,
no redirect wrapper: what a reader is shown and follows), canonical links (for spotting
the same story twice).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

#: Query parameters that only track where a click came from: dropped from every link.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gclsrc", "gbraid", "wbraid", "msclkid", "mc_cid",
        "mc_eid", "igshid", "yclid", "_hsenc", "_hsmi", "hsctatracking", "mkt_tok",
        "ref_src", "ref_url", "rb_clickid", "s_cid", "sc_cid", "wickedid", "twclid",
        "ttclid", "srsltid", "wt_mc", "wt_zmc", "xtor", "at_medium", "at_campaign",
        "at_custom1", "at_custom2", "at_custom3", "at_custom4", "cmpid", "ocid",
        "ncid", "smid", "smtyp", "ftag", "mbid", "soc_src", "soc_trk", "trk",
        "trkcampaign", "_ga", "_gl", "_openstat", "__twitter_impression", "spm",
        "sr_share", "cmp", "icid",
    }
)  # fmt: skip
#: Prefixes of tracking parameters: ``utm_source``, ``pk_campaign`` (Matomo), ``WT.mc_id``
#: (Webtrends), ``ns_source`` (comScore), ``oly_enc_id``, ``vero_id``, ``hsa_acc``.
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "wt.", "ns_", "oly_", "vero_", "hsa_", "itm_")
#: Parameters that track only with a feed's value: Medium's ``source=rss----…``,
#: ``ref=rss``, ``from=rss``.
FEED_VALUED = frozenset({"source", "ref", "from", "src", "via", "origin"})
_FEED_VALUE = re.compile(r"(?:rss|feed|atom)[\w.-]*", re.IGNORECASE)
#: Redirect wrappers that carry their target in a query parameter, deterministically:
#: (host pattern, path, parameters that may hold the target).
WRAPPERS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(r"(?:www\.)?google\.[a-z.]{2,6}"), "/url", ("url", "q")),
    (re.compile(r"(?:l|lm|www|m)\.facebook\.com"), "/l.php", ("u",)),
    (re.compile(r"l\.instagram\.com"), "/", ("u",)),
    (re.compile(r"(?:www\.)?youtube\.com"), "/redirect", ("q",)),
    (re.compile(r"out\.reddit\.com"), "", ("url",)),
    (re.compile(r"t\.umblr\.com"), "/redirect", ("z",)),
    (re.compile(r"(?:www\.)?linkedin\.com"), "/redir/redirect", ("url",)),
    (re.compile(r"slack-redir\.net"), "/link", ("url",)),
    (re.compile(r"(?:away\.)?vk\.com"), "/away.php", ("to",)),
    (re.compile(r"duckduckgo\.com"), "/l/", ("uddg",)),
    (re.compile(r"getpocket\.com"), "/redirect", ("url",)),
    (re.compile(r"steamcommunity\.com"), "/linkfilter/", ("url",)),
    (re.compile(r"[a-z0-9]+\.safelinks\.protection\.outlook\.com"), "/", ("url",)),
)
#: Fragments that name where a page's text starts, not a part of it: the same story.
_PLACE = re.compile(
    r"(?:top|main|content|main-?content|start|article|body|more(?:-\d+)?|)", re.IGNORECASE
)
#: How many wrappers inside each other are taken off.
MAX_UNWRAP = 3


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


def tidy(url: str | None) -> str | None:
    """The link a reader is shown and follows: an http(s) URL taken out of the redirect
    wrappers around it (``WRAPPERS``), without tracking parameters (``tracking``) in
    its query or fragment. Otherwise unchanged, byte for byte; None when not http(s).
    A wrapper whose target is not an http(s) URL is kept as it is."""
    url = http_only(url)
    if url is None or ("?" not in url and "#" not in url):
        return url
    url = unwrap(url)
    head, hash_, fragment = url.partition("#")
    path, question, query = head.partition("?")
    if question:
        query = "&".join(p for p in query.split("&") if p and not _tracking_pair(p))
    if hash_ and "=" in fragment and all(_tracking_pair(p) for p in fragment.split("&") if p):
        hash_ = fragment = ""
    return path + ("?" + query if query else "") + hash_ + fragment


def unwrap(url: str) -> str:
    """The target of a redirect wrapper (``google.com/url?q=TARGET``), or ``url`` when
    it is none or its target is not an http(s) URL."""
    for _ in range(MAX_UNWRAP):
        target = _target(url)
        if target is None:
            return url
        url = target
    return url


def _target(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    for pattern, path, names in WRAPPERS:
        if pattern.fullmatch(host) and (not path or parts.path == path):
            values = dict(parse_qsl(parts.query))
            for name in names:
                target = http_only(values.get(name, "").strip())
                if target:
                    return target
    return None


def tracking(name: str, value: str = "") -> bool:
    """True for a query parameter that only says where a click came from."""
    key = name.lower()
    return (
        key in TRACKING_PARAMS
        or key.startswith(TRACKING_PREFIXES)
        or (key in FEED_VALUED and _FEED_VALUE.fullmatch(value) is not None)
    )


def _tracking_pair(pair: str) -> bool:
    name, _, value = pair.partition("=")
    return tracking(unquote_plus(name), unquote_plus(value))


def canonical(url: str | None) -> str | None:
    """The form of a link two feeds agree on: for spotting the same story twice.

    ``tidy``'s link with lower-case scheme and host, ``www.`` and the default port
    dropped, http as https, remaining parameters sorted, trailing slash removed
    (except for the root path). The fragment stays: ``page#comment-1`` and
    ``page#comment-2`` (a comment feed, a changelog's anchors) are two stories; one
    that only says where the page's text starts (``#top``, ``#content``, ``#more-12``)
    is dropped.
    """
    url = tidy(url)
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
    query = parse_qsl(parts.query, keep_blank_values=True)
    path = parts.path or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return urlunsplit(
        (
            "https" if scheme == "http" else scheme,
            netloc,
            path,
            urlencode(sorted(query)),
            "" if _PLACE.fullmatch(parts.fragment) else parts.fragment,
        )
    )
