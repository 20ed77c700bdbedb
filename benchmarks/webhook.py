"""How fast the SendGrid webhook records a batch of events, against a plain bulk insert.

    python benchmarks/webhook.py [--events 2000] [--subscribers 10000] [--repeat 3]

SendGrid posts up to ~768 KB at a time (about 2,000 events). Measured in the same
run, on the same kind of SQLite database:

- baseline: one executemany INSERT of the same rows into ``events`` (no dedupe, no
  subscriber lookup, no suppression);
- record: ``webhook.record_events`` (dedupe on sg_event_id, look the subscriber up,
  suppress on bounces and spam reports), as the endpoint does;
- repeat: the same batch again (SendGrid retries): every event a duplicate;
- verify: the ECDSA signature check of the body, against ``json.loads`` of it.

Prints each time and its ratio to the baseline (the machine is shared and noisy:
ratios, not seconds, are what to compare).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from digest.state import db
from digest.state.db import schema
from digest.web import webhook

NOW = datetime(2027, 3, 15, 12, tzinfo=UTC)
KINDS = ["delivered"] * 80 + ["open"] * 12 + ["deferred"] * 4 + ["bounce"] * 3 + ["spamreport"]


def database(folder: Path, name: str, subscribers: int) -> sa.Engine:
    engine = db.connect(f"sqlite:///{folder / name}")
    rows = [
        {
            "email": f"reader{i}@example.org",
            "email_key": f"reader{i}@example.org",
            "status": "active",
            "source": "import",
            "created_at": NOW,
            "updated_at": NOW,
        }
        for i in range(subscribers)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.subscribers), rows)
    return engine


def events(count: int, subscribers: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choice(KINDS)
        event: dict[str, object] = {
            "email": f"reader{rng.randrange(subscribers)}@example.org",
            "event": kind,
            "sg_event_id": f"ev-{seed}-{i}",
            "sg_message_id": f"msg-{i // 1000}.filter",
            "timestamp": int(NOW.timestamp()),
        }
        if kind == "bounce":
            event.update(type="bounce", reason="550 5.1.1 no such user", status="5.1.1")
        out.append(event)
    return out


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def insert_plain(engine: sa.Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.events), rows)


def record(engine: sa.Engine, batch: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        webhook.record_events(conn, batch, NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    public = webhook.load_public_key(
        base64.b64encode(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
    )
    results: dict[str, list[float]] = {"baseline": [], "record": [], "repeat": []}
    verify_t, parse_t = [], []
    for r in range(args.repeat):
        batch = events(args.events, args.subscribers, r)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            plain = database(folder, "plain.db", args.subscribers)
            real = database(folder, "real.db", args.subscribers)
            rows = [
                {
                    "event_id": e["sg_event_id"],
                    "kind": e["event"],
                    "email": e["email"],
                    "subscriber_id": None,
                    "edition_id": None,
                    "received_at": NOW,
                    "payload": json.dumps(e, sort_keys=True),
                }
                for e in batch
            ]
            results["baseline"].append(timed(insert_plain, plain, rows))
            results["record"].append(timed(record, real, batch))
            results["repeat"].append(timed(record, real, batch))
            plain.dispose()
            real.dispose()
        body = json.dumps(batch).encode()
        stamp = str(int(NOW.timestamp()))
        signature = base64.b64encode(
            key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
        verify_t.append(
            timed(
                webhook.verify,
                public,
                body,
                signature,
                stamp,
                NOW + timedelta(seconds=1),
                timedelta(minutes=10),
            )
        )
        parse_t.append(timed(json.loads, body))
    base = statistics.median(results["baseline"])
    print(f"{args.events} events, {args.subscribers} subscribers, median of {args.repeat}")
    for name, times in results.items():
        t = statistics.median(times)
        print(
            f"  {name:<9} {t * 1000:8.1f} ms   {t / base:5.2f}x baseline   "
            f"{args.events / t:9.0f} events/s"
        )
    v, p = statistics.median(verify_t), statistics.median(parse_t)
    print(f"  verify    {v * 1000:8.2f} ms   {v / p:5.2f}x json.loads of the body")


if __name__ == "__main__":
    main()
