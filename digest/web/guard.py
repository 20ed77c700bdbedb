"""The ASGI layer in front of the whole app: what holds for every request, whatever the route.

- **HEAD is a GET that sends no body.** The app sees a HEAD request as a GET, which
  never acts, so the answer is the GET's headers; its body is not sent.
- **Bodies are bounded by the bytes read.** The body is read here, counted as it
  arrives, and handed to the app only once it is complete and within the route's
  limit; past the limit the answer is 413 at once, the connection is closed and the
  rest is never read, whatever ``Content-Length`` claimed (or when there is none:
  chunked).
- **Security headers on every response**: pages, errors, 404, 405, 413, 500, the
  Atom feed, JSON; a response keeps any of them it set itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _Gone(Exception):
    """The client left before its body was complete."""


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Mapping[str, str],
        limit: Callable[[str], int],
        too_large: Callable[[Scope], ASGIApp],
    ) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.limit = limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        send = self._sending(send, head)
        try:
            body = await read(scope, receive, self.limit(scope["path"]))
        except _Gone:
            return
        if body is None:  # and the connection closes: the rest is not even drained
            await self.too_large(scope)(scope, receive, _closing(send))
            return
        inner = {**scope, "method": "GET"} if head else scope
        await self.app(inner, _replay(body, receive), send)

    def _sending(self, send: Send, head: bool) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        return sending


async def read(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it is longer than ``limit`` (the rest left unread)."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
            return None
        if int(declared) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _closing(send: Send) -> Send:
    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return closing


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read, then passes on (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
