"""Named crash points, for the crash-safety tests and nothing else.

``faults.point("batch-marked-sending")`` does nothing unless the environment says
``DIGEST_FAULT=batch-marked-sending`` (or ``name:N`` for the N-th time the point is
reached), in which case the process kills itself with SIGKILL right there: no
cleanup, no flush, exactly like a power cut. The tests then run ``digest run`` again
and check that no subscriber got an edition twice and none was lost silently.
"""

from __future__ import annotations

import os
import signal

_ENV = "DIGEST_FAULT"
_hits: dict[str, int] = {}


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
