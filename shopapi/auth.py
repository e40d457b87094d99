"""Bearer tokens (API_TOKENS) and each integration's request rate.

A token is looked up by comparing its SHA-256 with every configured token's in constant time
(``hmac.compare_digest``, no early exit), so neither a token's content nor its length nor its
place in the list shows in the answer's timing. Only the integration's name is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# 32 characters of `secrets.token_urlsafe` carry 190 bits; a shorter token is a typo or a word.
MIN_TOKEN_LENGTH = 32
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_tokens(raw: str) -> dict[str, str]:
    """``name:token,name:token`` -> {name: token}; raises ValueError with one line naming
    what is wrong (never the token itself)."""
    tokens: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, colon, token = part.partition(":")
        name, token = name.strip(), token.strip()
        if not colon or not _NAME.fullmatch(name):
            raise ValueError(
                f"entry {i + 1}: expected name:token with a name of 1-64 letters, digits,"
                " '_', '.' or '-'"
            )
        if name in tokens:
            raise ValueError(f"the name {name} is given twice")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ValueError(
                f"the token of {name} must be at least {MIN_TOKEN_LENGTH} characters without"
                " spaces, e.g. from python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        tokens[name] = token
    return tokens


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class Tokens:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._known = [(name, _digest(token)) for name, token in tokens.items()]

    def name_of(self, header: str | None) -> str | None:
        """The integration whose token the Authorization header carries, or None."""
        if header is None:
            return None
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        digest = _digest(given.strip())
        found: str | None = None
        for name, known in self._known:
            # Every token is compared, whichever matches: no early exit to time.
            if hmac.compare_digest(digest, known) and found is None:
                found = name
        return found


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimit:
    """A token bucket per integration: ``rate`` requests a second on average, bursts of up
    to ``burst``. ``clock`` is monotonic seconds (tests give their own)."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, name: str) -> float:
        """0 when the request may go ahead; else the seconds until it may (Retry-After)."""
        now = self.clock()
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / self.rate


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
