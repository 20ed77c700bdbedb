"""DKIM signing speed (issue 14): digest's signer against the bare signature operation,
and against dkimpy, in the same run.

    python benchmarks/dkim_sign.py [--messages 2000] [--repeat 3]

The messages are real: the sample edition built by ``deliver/message.py`` for
``--messages`` different recipients (each has its own To, Message-ID, unsubscribe links
and so its own body hash), about 21 KB each, as the SMTP backend signs them. Timed per
key type (RSA 2048, Ed25519), in CPU seconds of this one process (the machine is shared:
messages per CPU-second is messages per second per core):

- floor: what any DKIM signer must do at least: SHA-256 over the whole message and one
  signature of a 32-byte hash with ``cryptography`` (no canonicalization, no header);
- digest: ``DkimKey.sign`` (relaxed/relaxed canonicalization, over-signed headers, the
  folded DKIM-Signature header);
- dkimpy: ``dkim.sign`` with the same headers (RSA only: its Ed25519 needs PyNaCl and a
  raw key), on a tenth of the messages (it is slow).

Prints messages/s per core and the ratio to the floor; the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils  # noqa: E402

from digest.deliver.base import Letterhead, Personalizer  # noqa: E402
from digest.deliver.dkim import SIGNED, DkimKey  # noqa: E402
from digest.deliver.message import encode  # noqa: E402
from digest.model import Recipient  # noqa: E402
from digest.render import sample  # noqa: E402
from digest.render.edition import Renderer, RenderSettings  # noqa: E402
from digest.state.tokens import Signer  # noqa: E402

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def messages(count: int) -> list[bytes]:
    head = Letterhead(
        "The Weekly Harbour <digest@example.org>",
        "editor@example.org",
        "The Weekly Harbour <harbour.example.org>",
        "https://digest.example.org",
    )
    personal = Personalizer(Signer(b"b" * 32), head.base_url)
    composed = Renderer(
        RenderSettings("The Weekly Harbour", head.base_url, "1 Quay Street", "Europe/London")
    ).compose(12, sample.selection(NOW), NOW, "bench")
    out = []
    for i in range(count):
        r = Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}")
        out.append(encode(composed, r, personal.values(r), head, "\r\n").data)
    return out


def rate(work: Callable[[bytes], object], batch: list[bytes]) -> float:
    started = time.process_time()
    for message in batch:
        work(message)
    return len(batch) / (time.process_time() - started)


def floor(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Callable[[bytes], object]:
    if isinstance(key, rsa.RSAPrivateKey):
        pad, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        return lambda m: key.sign(hashlib.sha256(m).digest(), pad, prehashed)
    return lambda m: key.sign(hashlib.sha256(m).digest())


def dkimpy(key: rsa.RSAPrivateKey) -> Callable[[bytes], object]:
    import dkim

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    names = [h.encode() for h in SIGNED]
    return lambda m: dkim.sign(
        m,
        b"digest",
        b"example.org",
        pem,
        include_headers=names,
        canonicalize=(b"relaxed", b"relaxed"),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    batch = messages(args.messages)
    size = sum(map(len, batch)) // len(batch)
    print(f"{len(batch):,} messages of about {size:,} bytes; messages/s per core (CPU time)")
    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
        "RSA 2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "Ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    for name, key in keys.items():
        signer = DkimKey("digest", "example.org", key)
        runs: dict[str, list[float]] = {"floor": [], "digest": [], "dkimpy": []}
        for _ in range(args.repeat):
            runs["floor"].append(rate(floor(key), batch))
            runs["digest"].append(rate(signer.sign, batch))
            if isinstance(key, rsa.RSAPrivateKey):
                runs["dkimpy"].append(rate(dkimpy(key), batch[: max(10, len(batch) // 10)]))
        base = statistics.median(runs["floor"])
        for what, values in runs.items():
            if values:
                r = statistics.median(values)
                print(f"  {name:<9} {what:<7} {r:>9,.0f}/s   {base / r:5.2f}x the floor's time")


if __name__ == "__main__":
    main()
