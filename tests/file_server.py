"""A static HTTP server in a process of its own, for tests that fetch thousands of files.

pytest-httpserver runs in the test's own process, where its threads compete for the
GIL with the client under test: fine for a few requests, slow for the corpus's 2,150.
This one is aiohttp in a forked child, on 127.0.0.1, serving ``{path: (body, headers)}``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection

from aiohttp import web

Files = Mapping[str, tuple[bytes, Mapping[str, str]]]


def _serve(files: Files, sock: socket.socket, ready: Connection) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        found = files.get(request.path)
        if found is None:
            return web.Response(status=404, text="no such file")
        body, headers = found
        response = web.Response(body=body, headers=dict(headers))
        if not any(k.lower() == "content-type" for k in headers):
            response.headers.popall("Content-Type", None)
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        ready.send(True)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def serving(files: Files) -> Iterator[str]:
    """Serve ``files`` until the block ends; yields the base URL (no trailing slash)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_serve, args=(files, sock, send), daemon=True)
    child.start()
    sock.close()
    try:
        if not receive.poll(30):
            raise RuntimeError("the file server did not start")
        receive.recv()
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.join(10)
        receive.close()
        send.close()
