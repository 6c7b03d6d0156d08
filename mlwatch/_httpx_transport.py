"""An httpx transport for the official OpenTelemetry OTLP/HTTP exporters.

What: `HttpxTransport` implements `BaseHTTPTransport` from ``opentelemetry-exporter-http-transport``
(the interface the OTLP/HTTP exporters 1.45 send through) on one `httpx.Client`. It is registered
under the entry-point group ``opentelemetry_http_transport`` as ``httpx`` (see pyproject.toml), and
mlwatch hands it to its exporters directly (their ``_transport=`` argument): in 1.45 the exporters
accept a transport object but do not yet look one up by name, so registration alone would not be
enough.

Why our own transport rather than the default (requests): httpx is mlwatch's HTTP client, and
owning the transport lets mlwatch

- see the outcome of the last attempt (HTTP status, ``Retry-After``, timeout or connection
  error), which the OTel exporters reduce to success/failure: mlwatch needs it to decide between
  keeping a window for later and dropping it with a reason (`mlwatch._retry`);
- enforce an absolute deadline and a "final attempt" mode at shutdown, so the last flush never
  waits on the exporter's own retries and never outlives its bound.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

from mlwatch._retry import RETRYABLE_STATUS, Outcome

__all__ = ["HttpxResult", "HttpxTransport", "error_kind", "parse_retry_after"]

_DEFAULT_TIMEOUT = 10.0


class _FinalAttemptError(Exception):
    """A retryable failure reported as final: the exporter must not retry during shutdown."""


@dataclass(frozen=True, slots=True)
class HttpxResult(BaseHTTPResult):
    """The result of one request, with the httpx response when the server answered."""

    response: httpx.Response | None = field(default=None, hash=False, compare=False)

    def content(self) -> bytes:
        return b"" if self.response is None else self.response.content

    def headers(self) -> Mapping[str, str]:
        return {} if self.response is None else self.response.headers


def error_kind(exc: BaseException | None) -> str:
    """``timeout``, ``connection`` or ``error``: the label of a transport failure."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return "connection"
    return "error"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _ssl_context(verify: bool | str, cert: str | tuple[str, str] | None) -> ssl.SSLContext | bool:
    if verify is False and cert is None:
        return False
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if isinstance(cert, tuple):
        ctx.load_cert_chain(cert[0], cert[1])
    elif isinstance(cert, str):
        ctx.load_cert_chain(cert)
    return ctx


class HttpxTransport(BaseHTTPTransport):
    """`BaseHTTPTransport` on an `httpx.Client` (thread-safe; one per exporter and process).

    - ``deadline`` (a `time.monotonic()` value or None): no request runs past it.
    - ``final``: report retryable failures as final so the exporter does not retry (shutdown).
    - `take_outcome()`: the last attempt's `Outcome` on the calling thread, then forget it.
    """

    def __init__(
        self,
        *,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        client: httpx.Client | None = None,
        **kwargs: Any,
    ) -> None:
        self._client = client if client is not None else httpx.Client(verify=_ssl_context(verify, cert), follow_redirects=False)
        self._local = threading.local()
        self.deadline: float | None = None
        self.final = False

    # ------------------------------------------------------------------ BaseHTTPTransport
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        budget = _DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = self.deadline
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
            if budget <= 0:
                self._record(Outcome(error="deadline"))
                return HttpxResult(error=_FinalAttemptError("mlwatch export deadline passed"))
        try:
            response = self._client.request(method, url, headers=headers, content=data, timeout=budget)
        except Exception as exc:  # every failure becomes a result: the exporter never sees an exception
            self._record(Outcome(error=error_kind(exc)))
            if self.final:
                return HttpxResult(error=_FinalAttemptError(f"{type(exc).__name__}: {exc}"))
            return HttpxResult(error=exc)
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        self._record(Outcome(status=status, retry_after=retry_after))
        if self.final and status in RETRYABLE_STATUS:
            return HttpxResult(error=_FinalAttemptError(f"HTTP {status} during the final flush"))
        return HttpxResult(status_code=status, reason=response.reason_phrase, response=response)

    def is_connection_error(self, exception: Exception | None) -> bool:
        if self.final or exception is None or isinstance(exception, _FinalAttemptError):
            return False
        return error_kind(exception) in ("timeout", "connection")

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ mlwatch's view
    def _record(self, outcome: Outcome) -> None:
        self._local.outcome = outcome

    def take_outcome(self) -> Outcome | None:
        """The outcome of this thread's last request since the previous call (None if none)."""
        outcome: Outcome | None = getattr(self._local, "outcome", None)
        self._local.outcome = None
        return outcome
