"""How long a serving thread waits for the GIL behind mlwatch's aggregator.

What: the main thread plays a server: it calls a predict function `--calls` times (a burst of
requests), then waits 1 ms for I/O (``select``, which releases the GIL, as an event loop's
``epoll_wait`` does), over and over. The time ``select`` overshoots its 1 ms is how long the thread
waited to get the GIL back. Variants, each for `--seconds`:

- ``bare``: the undecorated function (the machine's own scheduling noise);
- ``mlwatch``: ``@monitor`` on it, the aggregator thread folding full batches meanwhile;
- ``mlwatch, no offers``: the same with `mlwatch._gil` offers switched off (how it was before);
- ``busy python thread``: a thread running pure Python (CPython's 5 ms switch interval).

Why: datasketches never releases the GIL and CPython hands it to a waiting thread only every
5 ms, so the aggregator's batches can delay the requests that arrive while it works (issue #3:
"a serving thread never waits more than a few milliseconds behind mlwatch").

Run: ``python benchmarks/bench_gil_wait.py`` (~20 s). Prints the overshoot's median, p99 and max.
"""

from __future__ import annotations

import argparse
import select
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import load_average
from benchmarks.bench_monitor import FEATURES, _predict

__all__ = ["main"]


def _serve(predict: Callable[[dict[str, object]], object], seconds: float, calls: int) -> list[float]:
    """Overshoots of a 1 ms I/O wait (µs), each after a burst of `calls` predictions."""
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(calls):
            predict(dict(FEATURES))
        t = time.perf_counter()
        select.select([], [], [], 0.001)
        out.append((time.perf_counter() - t - 0.001) * 1e6)
    return out


def _summary(name: str, waits: list[float]) -> dict[str, float]:
    waits = sorted(waits)
    row = {"p50": waits[len(waits) // 2], "p99": waits[int(len(waits) * 0.99)], "max": waits[-1], "n": len(waits)}
    print(f"{name:24s} wait for the GIL after a 1 ms I/O wait: median {row['p50']:7.0f} µs   p99 {row['p99']:7.0f} µs   max {row['max']:7.0f} µs   ({len(waits)} waits)", flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=4.0, help="per variant")
    ap.add_argument("--calls", type=int, default=100, help="predictions between two I/O waits")
    args = ap.parse_args(argv)

    import mlwatch
    from mlwatch import _gil
    from mlwatch.testing import InMemoryExporter

    print(f"load average before: {load_average()[0]:.2f}")
    results = {"bare": _summary("bare", _serve(_predict, args.seconds, args.calls))}
    mlwatch.configure(exporters=[InMemoryExporter()])
    monitored = mlwatch.monitor(model="gil_wait")(_predict)
    _serve(monitored, 1.0, args.calls)  # warm-up: the aggregator thread starts
    results["mlwatch"] = _summary("mlwatch", _serve(monitored, args.seconds, args.calls))
    hold = _gil.HOLD_NS
    _gil.HOLD_NS = 1 << 62
    try:
        results["mlwatch, no offers"] = _summary("mlwatch, no offers", _serve(monitored, args.seconds, args.calls))
    finally:
        _gil.HOLD_NS = hold
    health = mlwatch.health()
    print(f"mlwatch aggregated {health['aggregated_records']:,} calls, dropped {sum(health['dropped'].values()):,}, internal errors {health['internal_errors']}")

    stop = threading.Event()

    def busy() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        results["busy python thread"] = _summary("busy python thread", _serve(_predict, args.seconds, args.calls))
    finally:
        stop.set()
        thread.join()
    print(f"load average after: {load_average()[0]:.2f}")
    return results


if __name__ == "__main__":
    main()
