"""Offering the GIL to other threads from mlwatch's long work (aggregation, sketch updates).

Why: a thread that wakes from I/O (a server's event loop, a request thread) needs the GIL back.
While mlwatch's aggregator runs Python code, CPython hands it over only after
`sys.getswitchinterval()` (5 ms) and, while a native call runs that keeps it (datasketches never
releases it), not at all. So a request arriving during an aggregation pass waited up to 5 ms.
`offer()` releases the GIL (``time.sleep(0)``) once mlwatch has worked `HOLD_NS` since its last
offer: a waiting thread takes it within about that time. With nobody waiting, an offer is one
short system call per `HOLD_NS` of work (well under 1 %).
"""

from __future__ import annotations

import time

__all__ = ["HOLD_NS", "offer"]

#: Longest stretch of mlwatch work between two offers of the GIL (0.5 ms).
HOLD_NS = 500_000

_clock = time.perf_counter_ns
_sleep = time.sleep
_last = [0]  # last offer, shared by mlwatch's threads: only the aggregator works long


def offer() -> None:
    """Let a waiting thread run if mlwatch has held the GIL for `HOLD_NS` (cheap when not due)."""
    now = _clock()
    if now - _last[0] >= HOLD_NS:
        _sleep(0)
        _last[0] = _clock()
