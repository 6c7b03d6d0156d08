"""Never hurt the host: arbitrary data, failing internals, backwards clocks and forks."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlwatch
from mlwatch.column import ColumnProfile
from mlwatch.testing import capture


class Hostile:
    """An object that raises from every dunder mlwatch might touch."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __copy__(self) -> Hostile:
        raise RuntimeError("copy")


def _gen() -> Any:
    yield 1


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.just("x" * 10_000_000),
    st.binary(max_size=10),
    st.builds(Hostile),
    st.builds(_gen),
    st.just(np.array([np.nan, np.inf, 1.0])),
    st.just(np.array([[1, 2], [3, 4]], dtype=object)),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(args=st.lists(_value, max_size=3), kwargs=st.dictionaries(st.sampled_from(["a", "b", "c"]), _value, max_size=3), result=_value)
def test_arbitrary_inputs_and_outputs_never_raise(args: list[Any], kwargs: dict[str, Any], result: Any) -> None:
    """The decorated function returns exactly what the undecorated one does, whatever the data."""

    def raw(*a: Any, **k: Any) -> Any:
        return result

    wrapped = mlwatch.monitor(model="t_fuzz")(raw)
    with capture() as cap:
        assert wrapped(*args, **kwargs) is raw(*args, **kwargs)
        assert wrapped(*args, **kwargs) is result
        cap.profiles("t_fuzz")  # aggregation and export of that data must not raise either


def test_failing_internals_are_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sketch update that raises is counted under 'aggregate'; the calls still succeed."""

    def broken(self: ColumnProfile, values: Any) -> None:
        raise MemoryError("sketch exploded") if False else RuntimeError("sketch exploded")

    @mlwatch.monitor(model="t_fault")
    def f(features: dict[str, float]) -> float:
        return 1.0

    monkeypatch.setattr(ColumnProfile, "update", broken)
    before = mlwatch.health()["internal_errors"].get("aggregate", 0)
    with capture():
        assert [f({"a": 1.0}) for _ in range(10)] == [1.0] * 10
        mlwatch.flush()
    assert mlwatch.health()["internal_errors"].get("aggregate", 0) > before


def test_uncopyable_argument_keeps_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """An argument that cannot be copied loses its data, not the call count."""

    @mlwatch.monitor(model="t_nocopy")
    def f(x: Hostile) -> float:
        return 1.0

    with capture() as cap:
        for _ in range(5):
            assert f(Hostile()) == 1.0
        assert cap.merged("t_nocopy").calls == 5


def test_clock_going_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that jumps backwards gives no negative latencies and no exceptions."""
    import mlwatch.monitoring as mon

    ticks = iter([10_000_000_000, 5_000_000_000] * 100 + list(range(10**9, 10**9 + 10**6, 1000)))
    monkeypatch.setattr(mon, "perf_counter_ns", lambda: next(ticks))

    @mlwatch.monitor(model="t_clock")
    def f(x: float) -> float:
        return x

    with capture() as cap:
        for i in range(100):
            assert f(float(i)) == float(i)
        p = cap.merged("t_clock")
    assert p.calls == 100
    assert p.latency is None or p.latency.min >= 0


def test_shutdown_is_bounded_and_idempotent() -> None:
    """shutdown() twice is fine, and monitoring resumes after configure()."""
    from mlwatch._runtime import RUNTIME

    with capture():
        mlwatch.shutdown()
        mlwatch.shutdown()
    RUNTIME.restart()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_mid_aggregation_starts_clean() -> None:
    """Children forked while a thread records and the worker aggregates neither deadlock nor
    inherit the parent's records; each gets its own worker."""

    @mlwatch.monitor(model="t_fork")
    def f(features: dict[str, float]) -> float:
        return features["a"]

    stop = threading.Event()
    parent_calls = 0

    def busy() -> None:
        nonlocal parent_calls
        row = {"a": 1.0, "b": 2.0}
        while not stop.is_set():
            f(row)
            parent_calls += 1

    dropped_before = mlwatch.health()["dropped"].get("buffer_full", 0)
    with capture(flush_interval=0.01, buffer_size=2_000_000) as cap:
        t = threading.Thread(target=busy, daemon=True)
        t.start()
        time.sleep(0.2)
        children = []
        for _ in range(5):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: 10 calls of its own, flushed, count reported
                try:
                    signal.alarm(20)
                    os.close(r)
                    cap.exporter.clear()  # windows the parent exported before the fork are not the child's
                    for _ in range(10):
                        f({"a": 5.0, "b": 6.0})
                    time.sleep(0.05)  # the child's own worker runs too
                    mlwatch.flush()
                    mine = [p for p in cap.exporter.profiles if p.model == "t_fork"]
                    calls = sum(p.calls for p in mine)
                    values = {c.numeric.max for p in mine for c in [p.columns["a"]] if c.numeric is not None}
                    os.write(w, f"{calls} {sorted(values)}".encode())
                finally:
                    os._exit(0)
            os.close(w)
            children.append((pid, r))
            time.sleep(0.05)
        outputs = []
        for pid, r in children:
            _, status = os.waitpid(pid, 0)
            outputs.append((os.read(r, 1000).decode(), status))
            os.close(r)
        stop.set()
        t.join()
        for out, status in outputs:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            assert out.startswith("10 "), f"child recorded {out!r}, expected exactly its own 10 calls"
        parent = cap.merged("t_fork")
    dropped = mlwatch.health()["dropped"].get("buffer_full", 0) - dropped_before
    assert parent.calls + dropped == parent_calls  # no child's calls, none lost uncounted


def test_health_reports_costs() -> None:
    """health() exposes queue sizes, worker CPU time and export counts."""
    h = mlwatch.health()
    assert {"internal_errors", "dropped", "queued_records", "worker_cpu_seconds", "exported"} <= set(h)
    assert math.isfinite(h["worker_cpu_seconds"])
