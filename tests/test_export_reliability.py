"""Export reliability against real loopback servers that behave badly: retries, drops, bounds, blackholes."""

from __future__ import annotations

import asyncio
import time

import pytest
from otlp_receiver import Blackhole, HealthDelta, Receiver, Reply, window_profile

import mlwatch
from mlwatch._pending import PendingProfiles
from mlwatch._retry import Backoff, Outcome, classify
from mlwatch._runtime import Runtime
from mlwatch.otlp import OtlpExporter


def _wait(predicate: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------------------- what is retried
def test_retryable_statuses_are_retried() -> None:
    """503, 429, 502 and 504 are retried (Retry-After: 0 honoured) until the collector accepts."""
    with Receiver() as rx:
        rx.script = [Reply(code, {"Retry-After": "0"}) for code in (503, 429, 502, 504)]
        d = HealthDelta()
        exp = OtlpExporter(rx.url, metrics=False, timeout=5)
        exp.export([window_profile("retry", 5)])
        assert exp.force_flush(5)
        exp.shutdown()
        assert [r.status for r in rx.requests] == [503, 429, 502, 504, 200]
        assert [p.calls for p in rx.profiles()] == [5]
    assert d.exported("otlp_delivered") == 1 and d.failures("http_503") == 0


def test_retry_after_is_honoured() -> None:
    """A 503 with Retry-After: 1 delays the next attempt by one second (no sooner)."""
    with Receiver() as rx:
        rx.script = [Reply(503, {"Retry-After": "1"})]
        exp = OtlpExporter(rx.url, metrics=False, timeout=5)
        exp.export([window_profile("retry_after")])
        assert exp.force_flush(5)
        exp.shutdown()
        first, second = rx.requests
    assert 0.95 <= second.at - first.at < 1.6


def test_backoff_is_exponential_with_jitter() -> None:
    """Without Retry-After, attempts are spaced about 1 s then 2 s apart (±20% jitter)."""
    with Receiver() as rx:
        rx.script = [Reply(503), Reply(503)]
        exp = OtlpExporter(rx.url, metrics=False, timeout=10)
        exp.export([window_profile("backoff")])
        assert exp.force_flush(8)
        exp.shutdown()
        t = [r.at for r in rx.requests]
    assert len(t) == 3
    assert 0.75 <= t[1] - t[0] <= 1.3
    assert 1.55 <= t[2] - t[1] <= 2.5


def test_attempts_are_bounded_by_the_export_timeout() -> None:
    """A collector that keeps failing gets only the attempts that fit the timeout; the window stays pending."""
    with Receiver() as rx:
        rx.default = Reply(503)
        d = HealthDelta()
        exp = OtlpExporter(rx.url, metrics=False, timeout=1.5)
        t0 = time.monotonic()
        exp.export([window_profile("bounded", 6)])
        _wait(lambda: d.failures("http_503") == 1)
        assert time.monotonic() - t0 < 3.0
        assert len(rx.requests) == 2  # at 0 s and ~1 s; the next backoff (~2 s) would pass the deadline
        assert exp.pending == 1  # kept for a later cycle, not dropped
        exp.shutdown(timeout=1.0)  # one final attempt, no retries
        assert len(rx.requests) == 3
    assert d.dropped("export_shutdown") == 6


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500])
def test_non_retryable_statuses_are_dropped_with_reason(status: int) -> None:
    """400/401/403/413 (and any status OTLP does not call retryable) are never retried, and counted."""
    with Receiver() as rx:
        rx.script = [Reply(status)]
        d = HealthDelta()
        exp = OtlpExporter(rx.url, metrics=False, timeout=5)
        exp.export([window_profile("rejected", 5)])
        exp.force_flush(5)
        exp.shutdown()
        assert len(rx.requests) == 1
    assert d.dropped(f"export_http_{status}") == 5
    assert d.failures(f"http_{status}") == 1
    assert exp.pending == 0


def test_classify_follows_otlp() -> None:
    """Only 429/502/503/504, timeouts and connection errors are retryable."""
    assert [classify(Outcome(status=s)).retry for s in (429, 502, 503, 504)] == [True] * 4
    assert [classify(Outcome(status=s)).retry for s in (400, 401, 403, 413, 500)] == [False] * 5
    assert classify(Outcome(error="connection")) .retry and classify(Outcome(error="timeout")).retry
    assert not classify(Outcome(error="deadline")).retry and not classify(None).retry
    assert classify(Outcome(status=413)).reason == "http_413"


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    """Delays between export cycles double (jittered), are capped, and yield to a longer Retry-After."""
    b = Backoff(initial=1.0, maximum=8.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(5)]
    for got, base in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert 0.8 * base <= got <= min(8.0, 1.2 * base)
    assert b.next_delay(retry_after=30.0) == 8.0
    b.reset()
    assert b.next_delay(retry_after=3.0) == 3.0


# ---------------------------------------------------------------------------- bounded pending state
def test_failed_payload_is_retried_unchanged() -> None:
    """A failed payload is re-sent with the same bytes and id (it may have arrived: the receiver
    deduplicates), never merged with newer data of its window, which goes in its own payload."""
    with Receiver() as rx:
        rx.script = [Reply(503, {"Retry-After": "0"})] * 6  # the exporter's six attempts all fail
        d = HealthDelta()
        exp = OtlpExporter(rx.url, metrics=False, timeout=5)
        exp.export([window_profile("merge_back", 4)])
        _wait(lambda: d.failures("http_503") == 1)
        exp.export([window_profile("merge_back", 6)])  # late data for the same window
        assert exp.pending == 2
        assert exp.force_flush(5)
        exp.shutdown()
        assert sorted(p.calls for p in rx.profiles()) == [4, 6]
        ids = rx.payload_ids()
    failed_id = ids[0][1][0]
    delivered = [pid for status, batch in ids if status == 200 for pid in batch]
    assert failed_id in delivered and len(delivered) == 2  # the same id, finally accepted


def test_retried_payload_keeps_its_id() -> None:
    """The same bytes retried in a later cycle carry the same payload id, so a receiver can de-duplicate."""
    with Receiver() as rx:
        rx.script = [Reply(503, {"Retry-After": "0"})] * 6
        d = HealthDelta()
        exp = OtlpExporter(rx.url, metrics=False, timeout=5)
        exp.export([window_profile("same_id", 3)])
        _wait(lambda: d.failures("http_503") == 1)
        assert exp.force_flush(5)
        exp.shutdown()
        ids = {i for _, batch in rx.payload_ids() for i in batch}
        assert len(rx.payload_ids()) == 7 and len(ids) == 1


def test_pending_windows_are_capped_oldest_dropped() -> None:
    """Over max_pending_windows the oldest window is dropped and its calls counted."""
    probe = Receiver()
    port = probe.port
    probe.close()  # nothing listens: connection refused, a retryable failure
    d = HealthDelta()
    exp = OtlpExporter(f"http://127.0.0.1:{port}", metrics=False, timeout=0.5, max_pending_windows=2)
    for i, calls in enumerate((3, 4, 5)):
        exp.export([window_profile("capped", calls, window=60.0 * i)])
    _wait(lambda: d.failures("connection") >= 1)
    assert exp.pending <= 2
    assert d.dropped("export_pending_full") == 3
    with Receiver(port) as rx:  # the collector comes back on the same port
        assert exp.force_flush(5)
        exp.shutdown()
        assert sorted(p.calls for p in rx.profiles()) == [4, 5]


def test_pending_byte_cap_and_merge_unit() -> None:
    """PendingProfiles merges same-identity profiles and drops the oldest beyond its byte cap."""
    size = len(window_profile("u").to_bytes())
    pending = PendingProfiles(max_bytes=int(2.5 * size), max_windows=100, encode=lambda p: p.to_bytes())
    d = HealthDelta()
    pending.add([window_profile("u", 10, window=0.0), window_profile("u", 10, window=0.0)])
    assert len(pending) == 1 and pending.take()[0].profile.calls == 20
    pending.add([window_profile("u", 10, window=60.0 * i) for i in range(4)])
    assert len(pending) == 2 and pending.nbytes <= 2.5 * size
    assert [e.profile.window_start for e in pending.take()] == [120.0, 180.0]
    assert d.dropped("export_pending_full") == 20


def test_outage_then_recovery_totals_reconcile(runtime: Runtime) -> None:
    """Collector failing under load: calls stay fast, pending stays capped, delivered + dropped == calls made."""
    with Receiver() as rx:
        rx.default = Reply(503, {"Retry-After": "0"})
        mlwatch.configure(endpoint=rx.url, export_timeout=1.0, window_seconds=1, flush_interval=0.05, max_pending_windows=2, export_metrics=False)
        d = HealthDelta()

        @mlwatch.monitor(model="outage")
        def predict(x: float) -> float:
            return x

        made, worst, most_pending = 0, 0.0, 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            t = time.perf_counter()
            predict(float(made))
            worst = max(worst, time.perf_counter() - t)
            made += 1
            if made % 200 == 0:
                exp = runtime.exporters()[0]
                most_pending = max(most_pending, len(exp._pending))  # type: ignore[attr-defined]
                time.sleep(0.005)
        assert d.failures("http_503") >= 1  # the outage was seen
        rx.default = Reply(200)
        mlwatch.flush(timeout=5)
        delivered = sum(p.calls for p in rx.profiles() if p.model == "outage")
    dropped = sum(d.dropped(r) for r in ("export_pending_full", "buffer_full", "export_shutdown"))
    assert delivered + dropped == made
    assert most_pending <= 2
    assert worst < 0.05  # the serving path never waited on the collector


# ---------------------------------------------------------------------------- blackholes and shutdown
def test_blackholed_collector_blocks_neither_callers_nor_event_loop(runtime: Runtime) -> None:
    """A collector that accepts TCP and never answers: flushes return at once, the loop keeps ticking."""
    with Blackhole() as bh:
        mlwatch.configure(endpoint=bh.url, export_timeout=30.0, window_seconds=1, flush_interval=0.05)
        d = HealthDelta()

        @mlwatch.monitor(model="blackhole")
        async def predict(x: float) -> float:
            return x

        async def main() -> list[float]:
            loop = asyncio.get_running_loop()
            lags: list[float] = []

            async def ticker() -> None:
                for _ in range(150):  # ~1.5 s: windows close and go to the hung collector meanwhile
                    t = loop.time()
                    await asyncio.sleep(0.01)
                    lags.append(loop.time() - t - 0.01)

            async def calls() -> None:
                for i in range(3000):
                    await predict(float(i))
                    if i % 20 == 0:
                        await asyncio.sleep(0.01)

            await asyncio.gather(ticker(), calls())
            return lags

        lags = asyncio.run(main())
        t = time.perf_counter()
        runtime.flush()  # closes windows and hands them over: no network on this thread
        assert time.perf_counter() - t < 0.5
        assert max(lags) < 0.2
        t = time.perf_counter()
        mlwatch.flush(timeout=0.3)  # asks for delivery, bounded
        assert time.perf_counter() - t < 1.0
        assert d.dropped("buffer_full") == 0 and d.errors() == {}
        mlwatch.configure(shutdown_timeout=1.0)
        t = time.perf_counter()
        runtime.shutdown()
        assert time.perf_counter() - t < 2.0


def test_shutdown_is_bounded_and_counts_what_it_could_not_send() -> None:
    """Shutdown against a blackhole returns within its timeout; the lost calls end up counted."""
    with Blackhole() as bh:
        d = HealthDelta()
        exp = OtlpExporter(bh.url, metrics=False, timeout=30.0)
        exp.export([window_profile("hung", 7, window=0.0)])
        _wait(lambda: len(bh.conns) >= 1)  # the sender is now stuck on the first window
        exp.export([window_profile("hung", 5, window=60.0)])
        t = time.perf_counter()
        exp.shutdown(timeout=0.5)
        assert time.perf_counter() - t < 1.0
        assert d.dropped("export_shutdown") == 5  # still pending at the deadline
    _wait(lambda: d.dropped("export_shutdown") == 12)  # the in-flight one, once its connection died


def test_shutdown_flushes_the_last_window() -> None:
    """A healthy collector gets the windows handed over at shutdown, in one final attempt."""
    with Receiver() as rx:
        exp = OtlpExporter(rx.url, metrics=False)
        exp.export([window_profile("last", 9)])
        exp.shutdown()
        assert [p.calls for p in rx.profiles()] == [9]
        d = HealthDelta()
        exp.export([window_profile("last", 1)])  # after shutdown: counted, never raised
    assert d.dropped("export_closed") == 1
