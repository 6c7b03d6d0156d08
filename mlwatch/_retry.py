"""What to do after a failed OTLP export: retry later, or drop and say why.

What: `classify` turns the outcome of one export (an HTTP status, a transport error) into a
verdict (retry or drop) and a short reason used as the label of mlwatch's health counters;
`Backoff` spaces the export cycles that follow a failure (exponential, with jitter, honouring
``Retry-After``).

Why here and not only in the OpenTelemetry exporter: the official OTLP/HTTP client already
retries inside one export call (429, 502, 503, 504 and connection errors; ``Retry-After``;
exponential backoff with jitter; bounded by the export timeout), and mlwatch relies on that.
But once that call gives up, the window's profile must not be lost: it goes back to mlwatch's
bounded pending state and a later cycle tries again. This module decides between "keep it for a
later cycle" and "drop it and count it", following the OTLP specification: only 429, 502, 503,
504 and connection failures are retryable; anything else (400, 401, 403, 413, ...) never is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["NEVER_RETRY", "RETRYABLE_STATUS", "Backoff", "Outcome", "Verdict", "classify"]

#: HTTP statuses that OTLP/HTTP says a client may retry.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

#: Statuses that are common enough to get their own reason label (any other non-retryable status
#: is reported as ``http_<code>`` too; this set only documents the ones the issue names).
NEVER_RETRY = frozenset({400, 401, 403, 413})


@dataclass(frozen=True)
class Outcome:
    """The last HTTP attempt of one export, as seen by mlwatch's transport.

    ``status`` is the HTTP status when the server answered; ``error`` the transport error's kind
    (``"timeout"``, ``"connection"``, ``"deadline"``, ``"error"``) when it did not.
    """

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a failed export's profiles are kept for a later cycle, and the reason label."""

    retry: bool
    reason: str


def classify(outcome: Outcome | None) -> Verdict:
    """The verdict for a failed export whose last attempt ended in `outcome`.

    No outcome means the exporter failed before any HTTP attempt (encoding, size limit, an
    exporter already shut down): not retryable.
    """
    if outcome is None:
        return Verdict(False, "not_sent")
    if outcome.status is not None:
        return Verdict(outcome.status in RETRYABLE_STATUS, f"http_{outcome.status}")
    error = outcome.error or "error"
    return Verdict(error in ("timeout", "connection"), error)


class Backoff:
    """Delays between export cycles after failures: ``initial * 2**n``, jittered, capped.

    A server's ``Retry-After`` wins when it asks for longer (still capped by `maximum`).
    """

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, jitter: float = 0.2, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self, retry_after: float | None = None) -> float:
        """Count one more failure and return the seconds to wait before the next cycle."""
        base = min(self.maximum, self.initial * 2.0 ** min(self.failures, 30))
        self.failures += 1
        delay = base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return min(delay, self.maximum)

    def reset(self) -> None:
        """A cycle succeeded: start again from `initial`."""
        self.failures = 0
