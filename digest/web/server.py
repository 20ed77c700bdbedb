"""Run the web app (uvicorn) and the scheduler together, and stop them cleanly.

SIGTERM or SIGINT: the web server stops taking requests and finishes those in
hand; a run in progress finishes the batch in flight, records it and leaves the
rest ``pending`` for the next run (which resumes them first); then the process
exits 0. A second signal does not cut the batch short (a batch cut mid-send would
become "unknown"): ``kill -9`` does, at that cost.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

import uvicorn

from .. import pipeline, schedule
from ..clock import utcnow
from ..config import Config
from ..errors import DigestError
from ..scheduler import Runner, Scheduler, Sending, shared
from ..state import fleet
from . import build, create_app

log = logging.getLogger("digest.serve")


class _Server(uvicorn.Server):
    """uvicorn, with our own signal handling: stop the scheduler's run too, and exit 0
    (uvicorn would re-raise the signal after shutting down)."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        super().__init__(config)
        self.stop = stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.stop.is_set():
            log.warning(
                "%s again: still finishing the batch in flight (kill -9 stops at once; "
                "that batch is then reported as unknown)",
                name,
            )
        else:
            log.info("%s: stopping after the batch in flight", name)
        self.stop.set()
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a DigestError that says which address and why."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise DigestError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program has "
            "the port, or the address is not this machine's; set web.host / web.port, or "
            "--host / --port"
        ) from exc
    sock.set_inheritable(True)
    return sock


def health_of(
    scheduler: Scheduler | None,
    stopping: Callable[[], bool],
    instance: fleet.Instance | None = None,
) -> Callable[[], dict[str, Any]]:
    """What ``/healthz`` says of this instance and its scheduler: what it does and
    whether its last heartbeat reached the database (``instance``), whether the scheduler
    runs, the next edition, and how the last scheduled run ended (``failed`` makes it
    unhealthy, with ``last_error``). ``work.health`` adds the rest (docs/web.md)."""

    def health() -> dict[str, Any]:
        status: dict[str, Any] = {}
        if instance is not None:
            status["instance"] = {
                "id": instance.id,
                "role": str(instance.role),
                "state": str(instance.state),
                "edition": instance.edition_id,
                "sent": instance.sent,
                "heartbeat": instance.db_error or "ok",
            }
        return status | scheduled()

    def scheduled() -> dict[str, Any]:
        if scheduler is None:
            return {"scheduler": "off"}
        if not scheduler.running:
            return {"scheduler": "stopping" if stopping() else "stopped"}
        nxt = scheduler.next_run()
        return {
            "scheduler": "running",
            "next_edition": nxt.isoformat() if nxt else None,
            "last_run": str(scheduler.last_outcome) if scheduler.last_outcome else None,
            "last_error": scheduler.runner.last_error,
        }

    return health


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    scheduler_on: bool = True,
) -> int:
    """Serve until a signal; returns the exit code."""
    stop = threading.Event()
    services = pipeline.build(config, should_stop=stop.is_set)
    instance = fleet.Instance(services.engine, fleet.Role.SERVE, services.clock)
    services = replace(services, instance=instance)
    plan = schedule.schedule_of(config)
    # On PostgreSQL every instance sends (docs/deploy.md, "Running a fleet").
    sending = Sending(services, stop) if scheduler_on and shared(services.engine) else None
    scheduler = Scheduler(Runner(services, plan, sending=sending)) if scheduler_on else None

    web = build(config, services, health_of(scheduler, stop.is_set, instance))
    app = create_app(web)
    w = config.web
    uv = uvicorn.Config(
        app,
        host=host or w.host,
        port=port if port is not None else w.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=w.trusted_proxies,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    server = _Server(uv, stop)
    sock = bind(uv.host, uv.port)  # before the scheduler starts: a busy port sends nothing
    started = utcnow()
    log.info(
        "digest serve: %s on http://%s:%s/ (public address %s)",
        config.path,
        uv.host,
        uv.port,
        config.digest.base_url,
    )
    instance.start()
    if sending is not None:
        sending.start()
    if scheduler is not None:
        scheduler.start()
    else:
        log.info("the scheduler is off (--no-schedule): editions go out only with `digest run`")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        stop.set()
        if scheduler is not None:
            scheduler.shutdown()
        if sending is not None:
            sending.join()
        instance.stop()
        web.followups.close()  # sign-up mails already promised
        services.engine.dispose()
    ran = utcnow() - started
    log.info("digest serve stopped after %s", str(ran).split(".")[0])
    return 0 if server.started or stop.is_set() else 1
