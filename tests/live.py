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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``digest serve`` running as a real subprocess."""

    def __init__(self, process: Any, base: str, log: Any) -> None:
        self.process = process
        self.base = base
        self.log_path = log

    def log(self) -> str:
        return str(self.log_path.read_text(encoding="utf-8", errors="replace"))

    def stop(self, timeout: float = 30) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return int(self.process.wait(timeout))


@contextmanager
def serve_process(config: Any, port: int, env: dict[str, str], *options: str) -> Iterator[Served]:
    """Start ``python -m digest --config CONFIG serve [OPTIONS]``; wait until /healthz
    answers."""
    import subprocess
    import sys

    log_path = config.parent / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "serve", *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )
        served = Served(process, f"http://127.0.0.1:{port}", log_path)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"digest serve exited early:\n{served.log()}")
                try:
                    if httpx.get(f"{served.base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"digest serve did not answer /healthz:\n{served.log()}")
                time.sleep(0.1)
            yield served
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
