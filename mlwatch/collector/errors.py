"""The one exception the HTTP layer turns into a JSON error response, and the response itself.

Every failure a client can cause maps to an `HttpError` with the status OTLP clients understand
(400 malformed, 401 auth, 413 too large, 415 content type, 429 overloaded, ...) and a short
machine-readable code, so handlers never build error responses by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["HttpError", "error_body"]


class HttpError(Exception):
    """A client-visible failure: HTTP status, stable error code, human message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The JSON body of every error response: ``{"error": code, "message": ..., "status": n}``."""
    return {"error": code, "message": message, "status": status}
