"""Deep-link codes for order e-mails: `t.me/<bot>?start=<code>` links a chat to a customer.

A code is signed with the shop's secret, names the customer (and optionally one order), expires,
and carries a token id that the store consumes on first use. Telegram allows 64 characters of
`[A-Za-z0-9_-]` in a start parameter, so the code is a packed struct plus a truncated HMAC in
URL-safe base64 (38 characters), not a JSON web token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

_VERSION = 1
_BODY = struct.Struct(">BIII5s")  # version, customer id, order id (0: none), expiry, token id
_MAC_BYTES = 10


# Signs codes in the local sandbox only. It is printed in the README, so anyone can sign with it:
# a bot with a real token refuses to start with it, and the admin CLI warns when it uses it.
DEVELOPMENT_SECRET = "change-me-in-production"
# 32 characters of `secrets.token_urlsafe` carry 190 bits; a shorter secret is a typo or a word.
MIN_SECRET_LENGTH = 32


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` must not sign codes that a real bot accepts, or None when it may."""
    if secret.strip() == DEVELOPMENT_SECRET:
        return "is the sandbox's development secret, which anyone can read in the README"
    if len(secret.strip()) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters"
    return None


@dataclass(frozen=True)
class LinkCode:
    token_id: str
    customer_id: int
    order_id: int | None
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def make_link_code(
    secret: str, customer_id: int, *, expires_at: datetime, order_id: int | None = None
) -> str:
    body = _BODY.pack(
        _VERSION, customer_id, order_id or 0, int(expires_at.timestamp()), secrets.token_bytes(5)
    )
    return base64.urlsafe_b64encode(body + _mac(secret, body)).decode().rstrip("=")


def read_link_code(secret: str, code: str) -> LinkCode | None:
    """The code's content, or None when it is malformed or not signed with this secret."""
    if not code or len(code) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
    except (ValueError, TypeError):
        return None
    if len(raw) != _BODY.size + _MAC_BYTES:
        return None
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    version, customer_id, order_id, expires, token = _BODY.unpack(body)
    if version != _VERSION:
        return None
    return LinkCode(
        token_id=token.hex(),
        customer_id=customer_id,
        order_id=order_id or None,
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()[:_MAC_BYTES]
