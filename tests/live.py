"""A real uvicorn server on 127.0.0.1 in a thread, for web tests (and a client for it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def live(app: Any) -> Iterator[httpx.Client]:
    """Serve ``app`` on a free port until the block ends; yields a client for it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
