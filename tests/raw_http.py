"""An HTTP server on 127.0.0.1 that answers every request with bytes the test chose.

pytest-httpserver (werkzeug) and aiohttp check the headers they send, so neither can
send what a hostile server sends: a 25-digit Retry-After, a false Content-Length, an
ETag of 10 KB, bytes that are not UTF-8. This one writes the response verbatim, then
closes the connection; it is still a real server on a real socket, read by the real
client.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(5)
        received = b""
        try:
            while b"\r\n\r\n" not in received and len(received) < 65536:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                received += chunk
            self.server.requests.append(received)
            self.request.sendall(self.server.response)
            self.request.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.response = b"HTTP/1.1 204 No Content\r\n\r\n"
        self.requests: list[bytes] = []


class RawServer:
    """``serve(response)`` sets what every request gets from now on; ``url`` is its base."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def serve(self, response: bytes) -> None:
        self._server.response = response

    @property
    def requests(self) -> list[bytes]:
        return self._server.requests


@contextmanager
def raw_server() -> Iterator[RawServer]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RawServer(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def response(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """The bytes of a response: the headers exactly as given (no Content-Length added)."""
    lines = [b"HTTP/1.1 %d X" % status, *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
