"""Stage 1 · fetch: get the bytes of every feed, concurrently, politely and within bounds.

Every feed ends as a ``Fetched`` value (ok, not modified, or failed with a reason a
person understands); nothing here raises for one bad feed. HTTP goes through aiohttp
(measured faster than httpx above ~20 requests in flight: docs/performance.md) with:

* conditional GET (ETag / Last-Modified) and "same body as last time" detection, on
  the bytes as sent: the same gzipped bytes are not even decompressed;
* gzip/deflate decoded by hand, so the size limit counts *decompressed* bytes and a
  gzip bomb is refused, not inflated;
* two limits on what runs at once: ``connections`` requests waiting for an answer
  (a 304, a redirect or an error needs nothing more), of which ``concurrency`` may
  be downloading a body (what shares the bandwidth and holds memory); and at most
  ``per_host`` requests to one host;
* connect and total timeouts (a server dripping a byte a second is cut off); waiting
  for a turn does not count against them;
* proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``);
* no connection inside the network (loopback, private, link-local...) unless the
  configured URL names it or ``allow_private`` is set: see ``egress``;
* redirects followed by hand: at most ``max_redirects``, permanent ones (301/308)
  reported so ``health`` can adopt the new URL once it has proved stable;
* 429/503 ``Retry-After`` honoured: a short wait is waited once, a long one is
  recorded so the feed is not asked again before then (never more than
  ``MAX_RETRY_AFTER`` away).

Every value a server sends is bounded before it is used or kept: Retry-After (seconds
or a date) to ``MAX_RETRY_AFTER``, validators (ETag, Last-Modified) to what the
database holds (longer or unprintable ones are not kept), the reason phrase to a
line, a permanent redirect's URL to what the database holds. The body is counted as
it streams, whatever Content-Length says. An unexpected exception while fetching one
feed becomes that feed's failure, with a reason; it never reaches the other feeds.

``file://`` URLs are read from disk under the same size limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import socket
import time
import urllib.request
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import aiohttp
from zlib_ng import zlib_ng  # zlib's API; inflates about 3x faster than zlib

from .. import __version__, faults
from ..clock import Clock, utcnow
from ..errors import FetchError
from ..model import FeedSource, Fetched, FetchStatus, Validators
from . import egress

log = logging.getLogger(__name__)

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
PERMANENT = {301, 308}
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024
#: The longest a server may ask us to stay away (429/503 Retry-After).
MAX_RETRY_AFTER = timedelta(days=7)
#: The longest ETag and Last-Modified kept, and the longest URL remembered for a move:
#: the sizes of their columns (db/schema.py).
MAX_ETAG = 500
MAX_LAST_MODIFIED = 200
MAX_URL = 2048
#: The most of a server's reason phrase ("Not Found") repeated in an error.
MAX_REASON = 100

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """The ``[fetch]`` section, as plain values (see the README for each)."""

    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_bytes: int = 10_000_000
    max_redirects: int = 5
    #: Bodies downloaded at once...
    concurrency: int = 20
    #: ...requests waiting for an answer at once (never fewer than ``concurrency``)...
    connections: int = 200
    #: ...and requests to one host at once.
    per_host: int = 4
    user_agent: str = f"digest/{__version__}"
    max_retry_wait: float = 10.0
    #: Read by parsing: the most characters a feed's XML entities may expand to...
    max_entity_expansion: int = 1_000_000
    #: ...the most entries taken from one feed (the newest)...
    max_entries: int = 1000
    #: ...and the most CPU seconds spent parsing and cleaning one feed.
    parse_timeout: float = 30.0
    #: Connect to internal addresses (loopback, private...) wherever a feed leads.
    allow_private: bool = False
    sleep: Sleep = field(default=asyncio.sleep, compare=False)
    clock: Clock = field(default=utcnow, compare=False)
    #: Makes the DNS resolver (tests map names to 127.0.0.1); None: aiohttp's own.
    resolver: Callable[[], aiohttp.abc.AbstractResolver] | None = field(default=None, compare=False)


def run_sync(coroutine: Coroutine[object, object, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    Where an event loop already runs in this thread (an asynchronous caller, a web
    app, a test harness), it runs on a loop of its own in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="digest-fetch") as pool:
        return pool.submit(asyncio.run, coroutine).result()


class _Limit(Exception):
    """The body grew past max_bytes."""


async def fetch_all(
    sources: Sequence[FeedSource],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
    on_result: Callable[[Fetched], None] | None = None,
    decode: bool = True,
) -> list[Fetched]:
    """Fetch every source at once (within the limits); results in the order of ``sources``.

    With ``decode`` false, a gzip or deflate body is left as sent, its
    ``content-encoding`` header kept (normalized: ``gzip`` or ``deflate``), for
    ``decoded`` to inflate later under the same limit: elsewhere, such as in a parser
    process, where the 34 KB sent cost less to pass on than the 200 KB they make."""
    connections = max(settings.connections, settings.concurrency)
    requests = asyncio.Semaphore(connections)
    downloads = asyncio.Semaphore(settings.concurrency)
    hosts: dict[str, asyncio.Semaphore] = {}
    proxies = _Proxies()
    connector = aiohttp.TCPConnector(
        limit=connections,
        ttl_dns_cache=300,
        socket_factory=egress.socket_factory,
        resolver=settings.resolver() if settings.resolver else None,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.connect_timeout, connect=settings.connect_timeout
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
    ) as session:
        client = _Client(session, downloads, proxies, decode)

        async def one(source: FeedSource) -> Fetched:
            known = validators.get(source.url)
            host = urlsplit((known and known.moved_to) or source.url).netloc.lower()
            per_host = hosts.setdefault(host, asyncio.Semaphore(settings.per_host))
            # Waiting for a turn does not count against a feed's own timeout.
            async with requests, per_host:
                result = await _fetch_one(client, source, known, settings)
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(s) for s in sources)))


@dataclass(frozen=True, slots=True)
class _Client:
    """What the requests of one ``fetch_all`` share."""

    session: aiohttp.ClientSession
    #: Turns to download a body.
    downloads: asyncio.Semaphore
    proxies: _Proxies
    #: Inflate compressed bodies here (else ``decoded`` does it later).
    decode: bool = True


class _Proxies:
    """The proxy for a URL, from the environment as curl and urllib read it, looked up
    once per scheme and host (aiohttp's own ``trust_env`` asks a thread, twice, for
    every request)."""

    def __init__(self) -> None:
        self._env = urllib.request.getproxies_environment()
        self._known: dict[tuple[str, str], str | None] = {}

    def __call__(self, url: str) -> str | None:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._known:
            proxy = self._env.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.netloc):
                proxy = None
            self._known[key] = proxy
        return self._known[key]


@asynccontextmanager
async def _turn(slots: asyncio.Semaphore, deadline: asyncio.Timeout) -> AsyncIterator[None]:
    """Hold one of ``slots``; the time spent waiting for it is not counted by ``deadline``."""
    loop = asyncio.get_running_loop()
    when = deadline.when()
    waiting_since = loop.time()
    deadline.reschedule(None)
    async with slots:
        if when is not None:
            deadline.reschedule(when + loop.time() - waiting_since)
        yield


async def _fetch_one(
    client: _Client | None,
    source: FeedSource,
    known: Validators | None,
    settings: FetchSettings,
) -> Fetched:
    """Fetch one feed; never raises for a feed problem (it becomes a failed ``Fetched``)."""
    known = known or Validators()
    started = time.perf_counter()
    url = known.moved_to or source.url
    try:
        faults.fail("fetch", source.url)
        async with asyncio.timeout(settings.timeout) as deadline:
            if urlsplit(url).scheme == "file":
                result = await _read_file(source, url, known, settings)
            elif client is None:
                raise FetchError(url, "no HTTP session")
            else:
                result = await _get(client, deadline, source, url, known, settings)
    except TimeoutError:
        error = FetchError(url, f"timed out after {settings.timeout:g}s (fetch.timeout)")
        result = Fetched(source, FetchStatus.FAILED, url=url, error=error)
    except FetchError as exc:
        result = Fetched(source, FetchStatus.FAILED, url=url, error=exc)
    except Exception as exc:  # a bug, or a library's surprise: this feed's failure alone
        log.warning("%s: unexpected error while fetching", source.url, exc_info=True)
        error = FetchError(url, f"unexpected error while fetching: {_named(exc)}")
        result = Fetched(source, FetchStatus.FAILED, url=url, error=error)
    return replace(result, seconds=time.perf_counter() - started)


def _named(exc: BaseException) -> str:
    """An unexpected exception in one line of bounded length, for a feed's error."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:300]}" if text else exc.__class__.__name__


async def _read_file(
    source: FeedSource, url: str, known: Validators, settings: FetchSettings
) -> Fetched:
    path = Path(url2pathname(urlsplit(url).path))

    def read() -> bytes:
        with path.open("rb") as f:
            data = f.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            raise _Limit
        return data

    try:
        body = await asyncio.to_thread(read)
    except _Limit:  # from None: our own signal, raised just above; the message says it all
        raise FetchError(url, _too_big(settings.max_bytes)) from None
    except FileNotFoundError as exc:
        raise FetchError(url, f"no such file: {path}") from exc
    except OSError as exc:
        raise FetchError(url, f"cannot read {path}: {exc.strerror or exc}") from exc
    return _finished(source, url, body, {"content-location": url}, known, None)


async def _get(
    client: _Client,
    deadline: asyncio.Timeout,
    source: FeedSource,
    url: str,
    known: Validators,
    settings: FetchSettings,
) -> Fetched:
    headers = {
        "User-Agent": settings.user_agent,
        "Accept": ACCEPT,
        "Accept-Encoding": "gzip, deflate",
    }
    if known.etag:
        headers["If-None-Match"] = known.etag
    if known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    configured = urlsplit(source.url).hostname
    moved_to: str | None = None
    permanent_so_far = True
    waited = False
    hops = 0
    while True:
        proxy = client.proxies(url)
        attempt = egress.Attempt.of(
            urlsplit(url).hostname, configured, settings.allow_private, proxy is not None
        )
        with _translated(url, attempt), egress.attempting(attempt):
            await _check_target(attempt, url)
            async with client.session.get(
                url, headers=headers, allow_redirects=False, proxy=proxy
            ) as response:
                status = response.status
                if status in REDIRECTS:
                    hops += 1
                    url = _next_hop(source, url, response, hops, settings)
                    if permanent_so_far and status in PERMANENT and len(url) <= MAX_URL:
                        moved_to = url
                    else:
                        permanent_so_far = False
                    continue
                if status in (429, 503):
                    now = settings.clock()
                    wait = _retry_after(response.headers.get("Retry-After"), now)
                    if wait is not None and wait <= settings.max_retry_wait and not waited:
                        waited = True
                        await settings.sleep(wait)
                        continue
                    return _come_back_later(source, url, status, wait, now, moved_to)
                if status == 304:
                    return Fetched(
                        source,
                        FetchStatus.NOT_MODIFIED,
                        url=url,
                        validators=known,
                        moved_to=moved_to,
                    )
                if status == 410:
                    return _gone(source, url, moved_to)
                if status >= 400:
                    raise FetchError(url, f"HTTP {status} {_reason(response.reason)}".strip())
                async with _turn(client.downloads, deadline):
                    body, body_hash, coding = await _read_body(
                        response, settings, url, known, client.decode
                    )
                lowered = {k.lower(): v for k, v in response.headers.items()}
                lowered["content-location"] = _document_url(url, lowered.get("content-location"))
                lowered.pop("content-encoding", None)
                if coding:  # left as sent: ``decoded`` inflates it
                    lowered["content-encoding"] = coding
                return _finished(source, url, body, lowered, known, moved_to, body_hash)


@contextmanager
def _translated(url: str, attempt: egress.Attempt) -> Iterator[None]:
    """aiohttp's exceptions (and bad values it lets through) → ``FetchError``, in words."""
    try:
        yield
    except aiohttp.InvalidURL as exc:
        raise FetchError(url, "not a valid URL") from exc
    except aiohttp.ClientConnectorError as exc:
        if attempt.refused:  # every address the name had was refused: say why
            raise FetchError(url, attempt.refused[0]) from exc
        raise FetchError(url, f"cannot connect to {exc.host}:{exc.port}: {_why(exc)}") from exc
    except aiohttp.ClientPayloadError as exc:
        raise FetchError(url, f"the server broke off the response: {exc}") from exc
    except aiohttp.ClientResponseError as exc:
        raise FetchError(url, f"bad HTTP response: {exc.message}") from exc
    except aiohttp.ClientError as exc:
        raise FetchError(url, f"HTTP error: {exc.__class__.__name__}: {exc}") from exc
    except (ValueError, UnicodeError) as exc:
        raise FetchError(url, f"bad HTTP response: {exc}") from exc


async def _check_target(attempt: egress.Attempt, url: str) -> None:
    """Refuse a request whose host is internal by its name alone; through a proxy (which
    resolves names itself), also one whose name resolves to an internal address here."""
    why = attempt.check_name()
    if why is None and attempt.via_proxy and not attempt.exempt:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                attempt.host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            found = []  # unknown here: the proxy may know it
        why = next((w for *_, a in found if (w := attempt.check_address(str(a[0])))), None)
    if why:
        raise FetchError(url, why)


def _next_hop(
    source: FeedSource,
    url: str,
    response: aiohttp.ClientResponse,
    hops: int,
    settings: FetchSettings,
) -> str:
    """Where a redirect leads, or ``FetchError`` when it leads nowhere we go."""
    location = response.headers.get("Location")
    if not location:
        raise FetchError(url, f"HTTP {response.status} redirect without a Location")
    if hops > settings.max_redirects:
        raise FetchError(
            source.url, f"more than {settings.max_redirects} redirects (fetch.max_redirects)"
        )
    url = urljoin(url, location)
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(source.url, f"redirected to a non-HTTP URL: {url[:MAX_URL]}")
    return url


def _come_back_later(
    source: FeedSource,
    url: str,
    status: int,
    wait: float | None,
    now: datetime,
    moved_to: str | None,
) -> Fetched:
    until = now + timedelta(seconds=wait) if wait else None
    when = f"; not asked again before {until:%Y-%m-%d %H:%M} UTC" if until else ""
    error = FetchError(url, f"HTTP {status}: the server asks us to come back later{when}")
    return Fetched(
        source, FetchStatus.FAILED, url=url, moved_to=moved_to, error=error, retry_after=until
    )


def _gone(source: FeedSource, url: str, moved_to: str | None) -> Fetched:
    return Fetched(
        source,
        FetchStatus.FAILED,
        url=url,
        gone=True,
        moved_to=moved_to,
        error=FetchError(
            url,
            "HTTP 410 Gone: the site removed this feed; it is disabled, remove it from the config",
        ),
    )


def _reason(phrase: str | None) -> str:
    """The server's reason phrase, if it is a short printable line."""
    phrase = (phrase or "").strip()
    return phrase if phrase.isprintable() and len(phrase) <= MAX_REASON else ""


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date), between 0
    and ``MAX_RETRY_AFTER``; None when there is no usable value."""
    value = (value or "").strip()
    if not value:
        return None
    longest = MAX_RETRY_AFTER.total_seconds()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:20]), longest))  # 20 digits: past any limit already
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(seconds, 0.0), longest)


def _document_url(url: str, declared: str | None) -> str:
    """What relative links resolve against: the response's Content-Location (feedparser's
    rule, relative to the URL read) when it is an http(s) URL, else the URL read."""
    if declared:
        try:
            resolved = urljoin(url, declared.strip())
        except ValueError:
            return url
        if urlsplit(resolved).scheme in ("http", "https"):
            return resolved
    return url


def _why(exc: aiohttp.ClientConnectorError) -> str:
    return str(exc.os_error.strerror or exc.os_error) if exc.os_error else str(exc)


async def _read_body(
    response: aiohttp.ClientResponse,
    settings: FetchSettings,
    url: str,
    known: Validators,
    decode: bool = True,
) -> tuple[bytes, str, str]:
    """The body, decoded, its hash, and "" (or, with ``decode`` false, the body as sent
    and its content coding, ``gzip`` or ``deflate``, for ``decoded``); or, when the
    bytes on the wire are those of last time (``known.body_hash``), no body: it is not
    even decompressed. Decompressed bytes count against the limit (a gzip bomb is
    refused, not inflated), and so do the wire bytes, with room for what compression
    adds to incompressible data."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        encoding = ""
    elif encoding == "x-gzip":
        encoding = "gzip"
    elif encoding not in ("gzip", "deflate"):
        raise FetchError(url, f"the server used an encoding we did not ask for: {encoding}")
    limit = settings.max_bytes
    wire_limit = limit + limit // 100 + 1024 if encoding else limit
    raw = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        raw += chunk
        if len(raw) > wire_limit:
            raise FetchError(url, _too_big(settings.max_bytes))
    body_hash = wire_hash(bytes(raw), encoding)
    if body_hash == known.body_hash:
        return b"", body_hash, ""
    if not encoding:
        return bytes(raw), body_hash, ""
    if not decode:
        return bytes(raw), body_hash, encoding
    return _decompressed(raw, encoding, settings.max_bytes, url), body_hash, ""


def decoded(fetched: Fetched, max_bytes: int) -> Fetched:
    """``fetched`` with its body inflated, when ``fetch_all(decode=False)`` left it as
    sent (its ``content-encoding`` header says so), under the same limit and with the
    same failure as had it been inflated while fetching: more than ``max_bytes``
    (``fetch.max_bytes``) once decompressed, or corrupt."""
    coding = fetched.headers.get("content-encoding")
    if not coding or fetched.status is not FetchStatus.OK or not fetched.body:
        return fetched
    url = fetched.url or fetched.source.url
    try:
        body = _decompressed(fetched.body, coding, max_bytes, url)
    except FetchError as exc:  # what ``_fetch_one`` makes of it while fetching
        asked = fetched.validators.moved_to or fetched.source.url
        return Fetched(
            fetched.source, FetchStatus.FAILED, url=asked, error=exc, seconds=fetched.seconds
        )
    headers = {k: v for k, v in fetched.headers.items() if k != "content-encoding"}
    return replace(fetched, body=body, headers=headers)


def wire_hash(raw: bytes, encoding: str = "") -> str:
    """What ``Validators.body_hash`` remembers: the SHA-256 of the body as sent (after
    its content coding's name, when it has one)."""
    digest = hashlib.sha256(f"{encoding}:".encode() if encoding else b"")
    digest.update(raw)
    return digest.hexdigest()


#: zlib-ng's error (its type stub declares an instance: ``error: Exception``).
_CORRUPT: type[Exception] = zlib_ng.error  # type: ignore[assignment]


def _decompressed(raw: bytes | bytearray, encoding: str, limit: int, url: str) -> bytes:
    decoder: zlib_ng._Decompress | _Deflate = (
        zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS) if encoding == "gzip" else _Deflate()
    )
    out = bytearray()
    try:
        data = bytes(raw)
        while data:
            out += decoder.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise FetchError(url, _too_big(limit))
            data = decoder.unconsumed_tail
        out += decoder.flush()
    except _CORRUPT as exc:
        raise FetchError(url, f"the compressed body is corrupt: {exc}") from exc
    if len(out) > limit:
        raise FetchError(url, _too_big(limit))
    return bytes(out)


class _Deflate:
    """HTTP "deflate" is zlib-wrapped by the spec, raw deflate in practice: take either."""

    def __init__(self) -> None:
        self._obj: zlib_ng._Decompress | None = None
        self.unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._obj is None:
            raw = not (
                len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            )
            self._obj = zlib_ng.decompressobj(-zlib_ng.MAX_WBITS if raw else zlib_ng.MAX_WBITS)
        out = self._obj.decompress(data, max_length)
        self.unconsumed_tail = self._obj.unconsumed_tail
        return out

    def flush(self) -> bytes:
        return self._obj.flush() if self._obj else b""


def _too_big(limit: int) -> str:
    return f"larger than {limit:,} bytes once decompressed (fetch.max_bytes)"


def _finished(
    source: FeedSource,
    url: str,
    body: bytes,
    headers: dict[str, str],
    known: Validators,
    moved_to: str | None,
    body_hash: str | None = None,
) -> Fetched:
    """``body`` as fetched (empty when it is known to be the same as last time)."""
    body_hash = body_hash or wire_hash(body)
    validators = Validators(
        etag=_kept(headers.get("etag"), MAX_ETAG),
        last_modified=_kept(headers.get("last-modified"), MAX_LAST_MODIFIED),
        body_hash=body_hash,
        moved_to=known.moved_to,  # a move is adopted by ``health``, once it proved stable
    )
    return Fetched(
        source,
        FetchStatus.OK,
        url=url,
        body=body,
        headers=headers,
        validators=validators,
        moved_to=moved_to,
        unchanged=body_hash == known.body_hash,
    )


def _kept(validator: str | None, limit: int) -> str | None:
    """A validator worth keeping to send back: printable ASCII that fits its column. Any
    other is dropped (not cut: a cut ETag never matches), and the next fetch is a full one."""
    if validator and len(validator) <= limit and validator.isascii() and validator.isprintable():
        return validator
    return None
