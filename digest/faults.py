"""Named fault points, for the crash-safety and fault-injection tests and nothing else.

``faults.point("batch-marked-sending")`` does nothing unless the environment says
``DIGEST_FAULT=batch-marked-sending`` (or ``name:N`` for the N-th time the point is
reached), in which case the process kills itself with SIGKILL right there: no
cleanup, no flush, exactly like a power cut. The tests then run ``digest run`` again
and check that no subscriber got an edition twice and none was lost silently.

``faults.fail(name, subject)`` does nothing unless the environment says
``DIGEST_FAULT=name@TEXT`` and ``TEXT`` is the subject (``build-message@<subscriber
id>``) or occurs in it (``parse@TEXT`` for the feeds whose URL contains it), in which
case it raises ``InjectedFault``: an exception digest does not expect (a bug, a
library's surprise), for the tests that prove one item's failure (a feed, a
recipient's message) never stops a run. The environment is read where the point is
reached, so the parser processes see it too.
"""

from __future__ import annotations

import os
import signal

_ENV = "DIGEST_FAULT"
_hits: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """Raised by ``fail``: deliberately not a ``DigestError``, like a real bug."""


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
    wanted = os.environ.get(_ENV)
    if not wanted or "@" not in wanted:
        return
    target, _, text = wanted.partition("@")
    if target != name or not text:
        return
    if text == str(subject) or (isinstance(subject, str) and text in subject):
        raise InjectedFault(f"injected fault at {name!r} for {subject} (DIGEST_FAULT)")
