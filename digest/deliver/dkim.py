"""DKIM signatures (RFC 6376) for the SMTP backend: relaxed/relaxed, over-signed.

**What is signed.** ``c=relaxed/relaxed``: a mail system that re-folds a header or
adds or removes trailing whitespace on its way (many do) leaves the signature valid,
where ``relaxed/simple`` failed on one trailing space. Every header of ``SIGNED`` is
*over-signed*: named in ``h=`` once more than it occurs, so a copy added after signing
(a second ``List-Unsubscribe`` pointing elsewhere, a second ``From``, a ``Cc``) makes
the signature fail instead of riding along under it. That covers ``List-Unsubscribe``
and ``List-Unsubscribe-Post``, as RFC 8058 asks for one-click unsubscribe. ``l=`` (a
body length limit, which would let anyone append to the body) is never used.

**Keys.** RSA (``rsa-sha256``, 1024 bits at least; 2048 is what to publish) and
Ed25519 (``ed25519-sha256``, RFC 8463), from a PEM file. ``public_record`` is the TXT
record to publish at ``<selector>._domainkey.<domain>``.

**Speed.** The canonicalization and hashing are done here with ``hashlib`` and two
byte-level regular expressions; the signature itself with ``cryptography`` (OpenSSL).
dkimpy, which digest used before, signs RSA in pure Python: about 90 messages a second
a core against more than 1,000 now (docs/performance.md). The tests verify every
signature with dkimpy, an implementation digest did not write.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

#: The headers the signature covers, each over-signed (those absent are signed absent:
#: one added later breaks the signature too).
SIGNED = (
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
)
#: Whitespace that relaxed canonicalization changes: a run of two or more, or a tab
#: (matching single spaces too would make a replacement of every space of the body).
_WSP_RUN = re.compile(rb" [ \t]+|\t[ \t]*")
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_LINE = 76


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    private_key: RSAPrivateKey | Ed25519PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if _is_rsa(self.private_key) else "ed25519-sha256"

    def sign(self, message: bytes, timestamp: int | None = None) -> bytes:
        """``message`` (CRLF line ends) with a DKIM-Signature header in front."""
        head, body = _split(message)
        fields = _fields(head)
        names = [n.lower() for n, _v in fields]
        signed = [name.lower() for name in SIGNED for _ in range(names.count(name.lower()) + 1)]
        tags = [
            ("v", "1"),
            ("a", self.algorithm),
            ("c", "relaxed/relaxed"),
            ("d", self.domain),
            ("s", self.selector),
            *([("t", str(timestamp))] if timestamp is not None else []),
            ("h", ":".join(signed)),
            ("bh", base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()),
        ]
        header = _fold(tags)  # "DKIM-Signature: ...; b=", the signature still empty
        digest = hashlib.sha256()
        for name in _pick(fields, signed):
            digest.update(name)
        digest.update(relaxed_header(header.encode("ascii")).rstrip(b"\r\n"))
        signature = base64.b64encode(self._sign(digest.digest())).decode("ascii")
        return (
            (header + _fold_value(signature, len(header.rsplit("\n", 1)[-1]))).encode("ascii")
            + b"\r\n"
            + message
        )

    def _sign(self, digest: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return key.sign(digest)  # RFC 8463: Ed25519 signs the SHA-256 hash of the headers

    def public_record(self) -> str:
        """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def _is_rsa(key: object) -> bool:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    return isinstance(key, RSAPrivateKey)


def load_dkim_key(path: Path, selector: str, domain: str) -> DkimKey:
    """Read the key (PEM: RSA of 1024 bits or more, or Ed25519) and sign once with it, so
    a bad key fails at start-up, not at the first message. Raises ValueError with a
    sentence a person understands."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the DKIM key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a usable DKIM private key (PEM, RSA or Ed25519, without a "
            f"passphrase): {exc}"
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ValueError(
                f"{path} is a {key.key_size}-bit RSA key: receivers ignore DKIM keys under "
                "1024 bits; make a 2048-bit one (openssl genrsa -out dkim.pem 2048)"
            )
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path} is not a usable DKIM private key: DKIM takes RSA or Ed25519")
    dkim_key = DkimKey(selector, domain, key)
    dkim_key.sign(b"From: a@example.org\r\nSubject: t\r\n\r\nt\r\n")
    return dkim_key


# -- canonicalization (RFC 6376 §3.4) ------------------------------------------------------


def relaxed_header(field_bytes: bytes) -> bytes:
    """One header field ("Name: value", folded or not) in relaxed form, ending in CRLF."""
    name, _, value = field_bytes.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """The body in relaxed form: runs of whitespace one space, none at a line's end,
    no empty lines at the end."""
    body = _WSP_RUN.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n").rstrip(b" \r\n")
    return body + b"\r\n" if body else b""


def _split(message: bytes) -> tuple[bytes, bytes]:
    if b"\r\n" not in message:
        message = message.replace(b"\n", b"\r\n")
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    head, sep, body = message.partition(b"\r\n\r\n")
    return head, body if sep else b""


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """The header fields, in order: (name, the whole field as written, without its CRLF)."""
    out = []
    for raw in _FIELD_START.split(head):
        if raw:
            out.append((raw.partition(b":")[0].strip().decode("ascii", "replace"), raw))
    return out


def _pick(fields: list[tuple[str, bytes]], signed: list[str]) -> list[bytes]:
    """Each name of ``h=`` takes that header's instances from the bottom up (RFC 6376
    §5.4.2); a name listed once more than it occurs takes nothing: the over-signing."""
    left: dict[str, list[bytes]] = {}
    for name, raw in fields:
        left.setdefault(name.lower(), []).append(raw)
    out = []
    for name in signed:
        instances = left.get(name)
        if instances:
            out.append(relaxed_header(instances.pop()))
    return out


def _fold(tags: list[tuple[str, str]]) -> str:
    """``DKIM-Signature: tag=value; ...; b=`` in lines of at most 76 characters (the
    ``h=`` list broken after a colon where it must be)."""
    lines = ["DKIM-Signature:"]
    for name, value in [*tags, ("b", "")]:
        text = f" {name}={value}" + (";" if name != "b" else "")
        pieces = text.split(":") if name == "h" else [text]
        for i, piece in enumerate(pieces):
            piece += ":" if name == "h" and i < len(pieces) - 1 else ""
            if len(lines[-1]) + len(piece) > _LINE and lines[-1].strip():
                lines.append("")
                piece = piece if piece.startswith(" ") else " " + piece
            lines[-1] += piece
    return "\r\n".join(lines)


def _fold_value(value: str, used: int) -> str:
    """The signature's base64 on the rest of the line and on lines of its own."""
    first = max(_LINE - used, 0)
    out = [value[:first]]
    rest = value[first:]
    while rest:
        out.append(" " + rest[: _LINE - 1])
        rest = rest[_LINE - 1 :]
    return "\r\n".join(out)
