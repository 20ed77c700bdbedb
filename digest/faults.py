"""Named fault points, for the crash-safety and fault-injection tests and nothing else.

``faults.point("batch-marked-sending")`` does nothing unless the environment says
``DIGEST_FAULT=batch-marked-sending`` (or ``name:N`` for the N-th time the point is
reached), in which case the process kills itself with SIGKILL right there: no
cleanup, no flush, exactly like a power cut. The tests then run ``digest run`` again
and check that no subscriber got an edition twice and none was lost silently.

``faults.fail("parse", url)`` does nothing unless the environment says
``DIGEST_FAULT=parse@TEXT`` and ``TEXT`` occurs in ``url``, in which case it raises
``InjectedFault``: an exception digest does not expect (a bug, a library's surprise),
for the tests that prove one feed's failure never stops a run. The environment is
read where the point is reached, so the parser processes see it too.
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


def fail(name: str, subject: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted or "@" not in wanted:
        return
    target, _, text = wanted.partition("@")
    if target == name and text and text in subject:
        raise InjectedFault(f"fault injected at {name!r} (DIGEST_FAULT)")
