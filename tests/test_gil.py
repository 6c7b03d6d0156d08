"""mlwatch's long work offers the GIL to other threads: when, and that aggregation really does."""

from __future__ import annotations

import pytest

import mlwatch
from mlwatch import _fast, _gil
from mlwatch._runtime import RUNTIME
from mlwatch._tabular import READ_CHUNK
from mlwatch.testing import capture


class _Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def test_offer_releases_only_when_the_hold_is_used_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sleeps = _Clock(), []
    monkeypatch.setattr(_gil, "_clock", clock)
    monkeypatch.setattr(_gil, "_sleep", sleeps.append)
    monkeypatch.setattr(_gil, "_last", [clock.now])
    _gil.offer()
    clock.now += _gil.HOLD_NS - 1
    _gil.offer()
    assert sleeps == []  # not due: costs a clock read, no system call
    clock.now += 1
    _gil.offer()
    assert sleeps == [0]
    _gil.offer()  # the hold starts again after an offer
    assert sleeps == [0]


def test_aggregating_a_batch_offers_the_gil_between_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of calls is folded column by column, with an offer before each column's sketches."""
    features = {f"f{i}": float(i) for i in range(12)} | {"country": "DE"}

    @mlwatch.monitor(model="t_gil")
    def predict(x: dict[str, object]) -> float:
        return 1.0

    with capture(flush_interval=60.0):  # the aggregator thread stays asleep
        for _ in range(2000):
            predict(features)
        sleeps: list[float] = []
        monkeypatch.setattr(_gil, "HOLD_NS", 0)  # every offer is due
        monkeypatch.setattr(_gil, "_sleep", sleeps.append)
        RUNTIME.process(close_all=False)
    # 13 columns read from the dict rows (one at a time, or all in one C pass offering the GIL
    # every READ_CHUNK values), then 13 input and one output column profiled.
    reads = -(-2000 // max(1, READ_CHUNK // len(features))) if _fast.AVAILABLE else len(features)
    assert len(sleeps) >= reads + len(features) + 1
