"""digest: feeds in, one clean e-mail digest out, to every subscriber, exactly once.

The pipeline, one module per stage::

    fetch → parse → clean → pick → render → deliver → record

``digest.pipeline.run`` drives it; the CLI (``digest.cli``), the scheduler and the web
app are thin shells around it.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
