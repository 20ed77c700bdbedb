"""Named fault points, for the crash-safety and fault-injection tests and nothing else.

``faults.point("batch-marked-sending")`` does nothing unless the environment says
``DIGEST_FAULT=batch-marked-sending`` (or ``name:N`` for the N-th time the point is
reached), in which case the process kills itself with SIGKILL right there: no
cleanup, no flush, exactly like a power cut. The tests then run ``digest run`` again
and check that no subscriber got an edition twice and none was lost silently.

``faults.fail("build-message", subscriber_id)`` does nothing unless the environment
says ``DIGEST_FAULT=build-message@<subscriber_id>``, in which case it raises
``InjectedFault`` there: an unexpected error for that one item (a recipient's message
that cannot be built), which must become that item's failure and nothing more.
"""

from __future__ import annotations

import os
import signal

_ENV = "DIGEST_FAULT"
_hits: dict[str, int] = {}


class InjectedFault(Exception):
    """Raised by ``fail`` where the environment asks for it: stands for any bug."""


def point(name: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether ``fail(name, ...)`` may raise: a hot loop asks once, not per item."""
    return os.environ.get(_ENV, "").startswith(f"{name}@")


def fail(name: str, subject: object) -> None:
    if os.environ.get(_ENV) == f"{name}@{subject}":
        raise InjectedFault(f"injected fault: {name} for {subject}")
