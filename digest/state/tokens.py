"""Signed tokens for links that act on a subscriber (unsubscribe, preferences, confirm).

A token names the subscriber and carries an HMAC-SHA256 over the purpose, the
subscriber id and their address, so it cannot be forged, and a token made for one
address is worthless for another. Compact and URL-safe (about 30 characters) and
cheap: about a microsecond each, a million per edition is a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

import sqlalchemy as sa

from .. import redact
from ..errors import ConfigError
from .db import schema

SECRET_ENV = "DIGEST_SECRET"
MIN_KEY_BYTES = 16
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


class Signer:
    """Makes and checks tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the signing key must be at least {MIN_KEY_BYTES} bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def _sign(self, purpose: str, subscriber_id: int, email: str, extra: str = "") -> str:
        mac = self._mac.copy()
        mac.update(f"{purpose}\x1f{subscriber_id}\x1f{email.lower()}\x1f{extra}".encode())
        return _b64(mac.digest()[:_MAC_BYTES])

    def token(self, subscriber_id: int, email: str, purpose: str = "manage") -> str:
        """A token for links in every mail (unsubscribe, preferences)."""
        return f"{_b36(subscriber_id)}.{self._sign(purpose, subscriber_id, email)}"

    def verify(self, token: str, subscriber_id: int, email: str, purpose: str = "manage") -> bool:
        parts = token.split(".")
        if len(parts) != 2 or parts[0] != _b36(subscriber_id):
            return False
        return hmac.compare_digest(parts[1], self._sign(purpose, subscriber_id, email))

    def timed_token(
        self, subscriber_id: int, email: str, purpose: str, now: float | None = None
    ) -> str:
        """A token that also carries when it was made (for confirmation links that expire)."""
        stamp = _b36(int(now if now is not None else time.time()))
        return f"{_b36(subscriber_id)}.{stamp}.{self._sign(purpose, subscriber_id, email, stamp)}"

    def verify_timed(
        self,
        token: str,
        subscriber_id: int,
        email: str,
        purpose: str,
        max_age: float,
        now: float | None = None,
    ) -> bool:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _b36(subscriber_id):
            return False
        if not parts[1] or len(parts[1]) > 8 or not (parts[1].isascii() and parts[1].isalnum()):
            return False
        made = int(parts[1], 36)
        if (now if now is not None else time.time()) - made > max_age:
            return False
        return hmac.compare_digest(parts[2], self._sign(purpose, subscriber_id, email, parts[1]))


def subscriber_id(token: str) -> int | None:
    """The subscriber a token names (not yet verified: load them, then call ``verify``)."""
    head = token.split(".", 1)[0]
    if not head or len(head) > 7 or not (head.isascii() and head.isalnum()):
        return None  # 7 base-36 digits hold every id up to schema.MAX_ID
    n = int(head, 36)
    return n if n <= schema.MAX_ID else None


def env_key() -> bytes | None:
    """``$DIGEST_SECRET`` (None when unset), or a ConfigError when it is too short to sign
    with: checked by every command that signs or previews links, ``digest check`` too."""
    value = os.environ.get(SECRET_ENV)
    if not value:
        return None
    redact.secret(value)
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            "the environment",
            [
                f"{SECRET_ENV}: {len(key)} bytes long, and the key that signs subscribers' "
                f"links must be at least {MIN_KEY_BYTES} bytes: set it to a long random "
                'string (python -c "import secrets; print(secrets.token_urlsafe(32))"), or '
                "unset it to use a key generated once and kept in the database"
            ],
        )
    return key


def load_key(engine: sa.Engine) -> bytes:
    """The signing key: ``$DIGEST_SECRET``, else one generated once and kept in the database."""
    from_env = env_key()
    if from_env is not None:
        return from_env
    query = sa.select(schema.meta.c.value).where(schema.meta.c.key == "secret")
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is not None:
        redact.secret(str(row[0]))
        return str(row[0]).encode()
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(schema.meta).values(key="secret", value=secrets.token_urlsafe(32))
            )
    except sa.exc.IntegrityError:
        pass  # another process made it first: use theirs
    with engine.connect() as conn:
        made = str(conn.execute(query).scalar_one())
    redact.secret(made)
    return made.encode()
