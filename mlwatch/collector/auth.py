"""Bearer-token authentication, compared in constant time.

Every configured token is compared (no early exit on the first match) and comparisons run on
SHA-256 digests, so neither the token's length nor which token matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from mlwatch.collector.errors import HttpError

__all__ = ["TokenAuth"]


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against a fixed set; no tokens means no auth."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def verify(self, token: str) -> bool:
        """True when `token` is one of the configured tokens (constant time in the token set)."""
        given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(given, digest)
        return ok

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise a 401 `HttpError` unless the request carries a valid bearer token (when auth is on)."""
        if not self._digests:
            return
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "unauthenticated", "a bearer token is required", {"WWW-Authenticate": 'Bearer realm="mlwatch"'})
        if not self.verify(token.strip()):
            raise HttpError(401, "unauthenticated", "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
