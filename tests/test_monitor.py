"""@monitor and observe(): what is captured, for every calling convention and input shape."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

import mlwatch
from mlwatch import ConfigError
from mlwatch.testing import capture


def test_sync_function_dict_features() -> None:
    """A dict of features: every key a column, the scalar result the 'prediction' output."""

    @mlwatch.monitor(model="t_sync", version="3.2")
    def predict(features: dict[str, object]) -> float:
        return float(features["amount"]) * 2  # type: ignore[arg-type]

    with capture() as cap:
        for i in range(100):
            assert predict({"amount": float(i), "country": "DE" if i % 2 else "FR"}) == 2.0 * i
        p = cap.assert_recorded("t_sync", calls=100, features=["amount", "country"], outputs=["prediction"])
    assert p.version == "3.2" and p.rows == 100
    assert p.columns["country"].category_counts() == {"DE": 50, "FR": 50}
    assert p.outputs["prediction"].numeric is not None and p.outputs["prediction"].numeric.max == 198.0
    assert p.latency is not None and p.latency.n == 100
    assert p.window_start is not None and p.window_start % 60 == 0 and p.window_end == p.window_start + 60


def test_exceptions_reraised_untouched() -> None:
    """The user's exception is the same object with the same traceback, and it is counted."""
    boom = ValueError("bad input")

    @mlwatch.monitor(model="t_err")
    def predict(x: float) -> float:
        raise boom

    with capture() as cap:
        with pytest.raises(ValueError, match="bad input") as info:
            predict(1.0)
        assert info.value is boom
        assert info.tb is not None and any(f.name == "predict" for f in __import__("traceback").extract_tb(info.tb))
        p = cap.assert_recorded("t_err", calls=1, errors={"ValueError": 1})
    assert "prediction" not in p.outputs


def test_positional_and_keyword_arguments_are_named() -> None:
    """Scalar arguments become features named after their parameters."""

    @mlwatch.monitor(model="t_args")
    def score(age: int, city: str, *, premium: bool = False) -> float:
        return 0.5

    with capture() as cap:
        score(30, "Paris", premium=True)
        score(40, city="Rome")
        p = cap.assert_recorded("t_args", calls=2, features=["age", "city", "premium"])
    assert p.columns["age"].count == 2 and p.columns["premium"].missing == 1  # absent = missing


def test_async_function_and_concurrent_tasks() -> None:
    """async def works the same; 10,000 concurrent tasks give an exact call count."""

    @mlwatch.monitor(model="t_async")
    async def rank(query: str, items: list[dict[str, float]]) -> list[float]:
        await asyncio.sleep(0)
        return [i["score"] for i in items]

    async def main() -> None:
        results = await asyncio.gather(*(rank("q", [{"score": 1.0}, {"score": 2.0}]) for _ in range(10_000)))
        assert all(r == [1.0, 2.0] for r in results)

    with capture(buffer_size=100_000) as cap:
        asyncio.run(main())
        p = cap.assert_recorded("t_async", calls=10_000, features=["query", "score"], outputs=["prediction"])
    assert p.columns["score"].count == 20_000


def test_methods_staticmethods_classmethods() -> None:
    """self and cls are never recorded; every flavour of method works."""

    class Model:
        factor = 3.0

        @mlwatch.monitor(model="t_meth")
        def predict(self, x: float) -> float:
            return x * self.factor

        @mlwatch.monitor(model="t_static")
        @staticmethod
        def static(x: float) -> float:
            return x

        @mlwatch.monitor(model="t_cls")
        @classmethod
        def klass(cls, x: float) -> float:
            return x * cls.factor

    with capture() as cap:
        m = Model()
        assert m.predict(2.0) == 6.0 and Model.static(1.0) == 1.0 and Model.klass(1.0) == 3.0 and m.klass(2.0) == 6.0
        for model in ("t_meth", "t_static", "t_cls"):
            p = cap.assert_recorded(model, features=["x"])
            assert "self" not in p.columns and "cls" not in p.columns


def test_generators_are_timed_to_exhaustion() -> None:
    """Generator functions yield the same items and are recorded when they finish."""

    @mlwatch.monitor(model="t_gen")
    def stream(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    with capture() as cap:
        assert list(stream(3)) == [0, 1, 2]
        cap.assert_recorded("t_gen", calls=1, features=["n"])


def test_dataframe_and_array_batches(rng: np.random.Generator) -> None:
    """Frames and 2-D arrays: every row counts; names from the frame or from feature_names."""

    class Churn:
        @mlwatch.monitor(model="t_frame")
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.asarray(X["a"] > 0, dtype=float)

    @mlwatch.monitor(model="t_array", feature_names=["height", "weight"])
    def proba(X: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-X[:, 0]))
        return np.column_stack([1 - p, p])

    with capture() as cap:
        df = pd.DataFrame({"a": rng.normal(size=1000), "b": rng.choice(["x", "y"], 1000)})
        Churn().predict(df)
        proba(rng.normal(size=(500, 2)))
        p = cap.assert_recorded("t_frame", calls=1, features=["a", "b"], outputs=["prediction"])
        assert p.rows == 1000 and p.outputs["prediction"].count == 1000
        q = cap.assert_recorded("t_array", features=["height", "weight"], outputs=["predicted_class", "score"])
    assert q.outputs["predicted_class"].kind == "categorical"
    assert set(q.outputs["predicted_class"].category_counts()) <= {"0", "1"}
    assert q.outputs["score"].numeric is not None and q.outputs["score"].numeric.min >= 0.5


def test_pydantic_dataclass_and_dict_outputs() -> None:
    """Pydantic models and dataclasses are rows; dict results are named outputs."""
    pydantic = pytest.importorskip("pydantic")

    class Req(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        amount: float
        country: str

    @dataclasses.dataclass
    class Row:
        amount: float

    @mlwatch.monitor(model="t_pyd")
    def predict(req: Req) -> dict[str, object]:
        return {"label": "fraud", "score": 0.9}

    @mlwatch.monitor(model="t_dc")
    def predict2(row: Row) -> float:
        return row.amount

    with capture() as cap:
        predict(Req(amount=3.0, country="DE"))
        predict2(Row(1.5))
        cap.assert_recorded("t_pyd", features=["amount", "country"], outputs=["label", "score"])
        cap.assert_recorded("t_dc", features=["amount"])


def test_dict_outputs_read_in_bulk_as_call_by_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of dict results is read in one pass when every one is a row of named outputs; batches
    mixing rows with dicts of columns, empty dicts and errors (no result) go call by call. Both
    give the profile the call-by-call reading gives."""
    from mlwatch._extract import apply_rows, split_outputs
    from mlwatch.profiling import ProfileConfig, update_profile_batches

    def expected(results: list[object]) -> mlwatch.Profile:
        rows: list[dict[str, object]] = []
        batches: list[object] = []
        for r in results:
            split_outputs(r, rows, batches)
        prof = mlwatch.Profile("x")
        apply_rows(prof, rows, ProfileConfig(), "outputs")
        update_profile_batches(prof, batches, ProfileConfig(), section="outputs")
        return prof

    shapes: dict[str, list[object]] = {
        "rows": [{"label": "a" if i % 3 else "b", "score": i / 10} for i in range(50)] + [None, None],
        "mixed": [{"score": 0.5}, {"score": [0.1, 0.2]}, {}, None, {"score": 0.7, "label": "x"}],
    }
    import mlwatch._runtime

    per_call: list[object] = []
    monkeypatch.setattr(mlwatch._runtime, "split_outputs", lambda r, rows, batches: (per_call.append(r), split_outputs(r, rows, batches)))
    for name, results in shapes.items():
        per_call.clear()
        @mlwatch.monitor(model=f"t_dict_out_{name}")
        def predict(it: Iterator[object]) -> object:
            r = next(it)
            if r is None:
                raise ValueError("no result")
            return r

        with capture() as cap:
            it = iter(results)
            for _ in results:
                with contextlib.suppress(ValueError):
                    predict(it)
            got = cap.merged(f"t_dict_out_{name}")
        assert (len(per_call) == 0) == (name == "rows"), name  # the bulk path took the rows, and only them
        want = expected(results)
        assert set(got.outputs) == set(want.outputs), name
        for col, prof in want.outputs.items():
            assert got.outputs[col].summary() == prof.summary(), (name, col)


def test_inputs_and_exclude_select_features() -> None:
    """inputs= keeps only the named features; exclude= drops some."""

    @mlwatch.monitor(model="t_sel", inputs=["a", "b"])
    def f(x: dict[str, float]) -> float:
        return 0.0

    @mlwatch.monitor(model="t_excl", exclude=["secret"])
    def g(x: dict[str, object]) -> float:
        return 0.0

    with capture() as cap:
        f({"a": 1.0, "b": 2.0, "c": 3.0})
        g({"a": 1.0, "secret": "x"})
        assert set(cap.merged("t_sel").columns) == {"a", "b"}
        assert set(cap.merged("t_excl").columns) == {"a"}


def test_segments_and_their_cap() -> None:
    """segment_by gives one profile per value; beyond max_segments values go to __other__."""

    @mlwatch.monitor(model="t_seg", segment_by=["country"])
    def predict(features: dict[str, object]) -> float:
        return 1.0

    with capture(max_segments=3) as cap:
        for c in ["DE", "FR", "IT", "ES", "PT", "DE"]:
            predict({"country": c, "x": 1.0})
        predict({"x": 2.0})
        segs = {p.segment["country"]: p.calls for p in cap.profiles("t_seg")}
    assert segs == {"DE": 2, "FR": 1, "IT": 1, "__other__": 3}  # ES, PT and the missing one


def test_batch_rows_split_by_segment(rng: np.random.Generator) -> None:
    """A frame's rows go to the segment named by their own column."""

    @mlwatch.monitor(model="t_segframe", segment_by=["tier"])
    def predict(X: pd.DataFrame) -> None:
        return None

    with capture() as cap:
        predict(pd.DataFrame({"tier": ["gold"] * 30 + ["free"] * 70, "v": rng.normal(size=100)}))
        rows = {p.segment["tier"]: p.columns["v"].count for p in cap.profiles("t_segframe") if "v" in p.columns}
    assert rows == {"gold": 30, "free": 70}


def test_sample_rate_keeps_calls_exact() -> None:
    """With sampling, calls, latency and errors stay exact; features cover about the sampled share."""

    @mlwatch.monitor(model="t_sample", sample_rate=0.1)
    def f(x: float) -> float:
        return x

    with capture() as cap:
        for i in range(5000):
            f(float(i))
        p = cap.assert_recorded("t_sample", calls=5000)
    assert p.latency is not None and p.latency.n == 5000
    assert 300 < p.columns["x"].count < 700


def test_recorded_values_are_those_the_model_saw() -> None:
    """Mutating the input dict or array after the call does not change the record."""

    @mlwatch.monitor(model="t_mut")
    def f(features: dict[str, float]) -> float:
        return 0.0

    @mlwatch.monitor(model="t_mut_arr")
    def g(x: np.ndarray) -> float:
        return 0.0

    with capture() as cap:
        buf = {"a": 1.0}
        arr = np.ones(4)
        for _ in range(10):
            f(buf)
            buf["a"] = 99.0  # a server reusing its dict
            buf["a"] = 1.0
            g(arr)
            arr[:] = 7.0
            arr[:] = 1.0
        f(buf)
        buf["a"] = 5.0
        g(arr)
        arr[:] = 5.0
        a = cap.merged("t_mut").columns["a"].numeric
        x = cap.merged("t_mut_arr").columns["value"].numeric
    assert a is not None and a.min == a.max == 1.0
    assert x is not None and x.min == x.max == 1.0


def test_full_buffer_drops_and_counts() -> None:
    """When the buffer is full, calls still return and drops are counted."""

    @mlwatch.monitor(model="t_drop")
    def f(x: float) -> float:
        return x

    with capture(buffer_size=10, flush_interval=60) as cap:
        from mlwatch._runtime import RUNTIME

        old = RUNTIME.batch_size
        RUNTIME.batch_size = 10**9
        before = mlwatch.health()["dropped"].get("buffer_full", 0)
        try:
            assert [f(float(i)) for i in range(50)] == [float(i) for i in range(50)]
        finally:
            RUNTIME.batch_size = old
        dropped = mlwatch.health()["dropped"].get("buffer_full", 0) - before
        p = cap.merged("t_drop")
    assert dropped == 40 and p.calls == 10
    assert p.dropped == 40  # the model's own windows say so too: calls + dropped = calls made


def test_small_buffer_wakes_the_aggregator_before_it_fills() -> None:
    """A buffer smaller than the default batch still wakes the aggregator (at a quarter full), so
    calls are aggregated long before the flush interval instead of being dropped."""
    import time

    from mlwatch._runtime import RUNTIME

    @mlwatch.monitor(model="t_small_buffer")
    def f(x: float) -> float:
        return x

    with capture(buffer_size=100, flush_interval=60) as cap:
        assert RUNTIME.batch_size == 25
        for _ in range(10):  # 10 x 60 calls: far more than the buffer holds at once
            for i in range(60):
                f(float(i))
            deadline = time.monotonic() + 10
            while len(f.__mlwatch_recorder__.queue) >= 25 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.001)
        p = cap.merged("t_small_buffer")
    assert p.calls + p.dropped == 600 and p.calls >= 500


def test_calls_plus_dropped_is_exact_under_threads() -> None:
    """With a buffer far too small for 8 threads in tight loops, every call is still accounted for:
    the exported windows' calls plus dropped equal the calls made (drops are counted without a lock)."""

    @mlwatch.monitor(model="t_drop_threads")
    def f(x: float) -> float:
        return x

    def worker() -> None:
        for i in range(5_000):
            f(float(i))

    with capture(buffer_size=64, flush_interval=60) as cap:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mlwatch.flush()
        p = cap.merged("t_drop_threads")
    assert p.calls + p.dropped == 40_000 and p.dropped > 0


def test_threads_exact_counts() -> None:
    """32 threads x 10,000 calls give exactly 320,000 recorded calls."""

    @mlwatch.monitor(model="t_threads")
    def f(features: dict[str, float]) -> float:
        return features["a"]

    def worker() -> None:
        row = {"a": 1.0, "b": 2.0}
        for _ in range(10_000):
            f(row)

    with capture(buffer_size=1_000_000) as cap:
        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p = cap.merged("t_threads")
    assert p.calls == 320_000 and p.columns["a"].count == 320_000


def test_observe_block() -> None:
    """observe() records code that is not one function, including errors."""
    with capture() as cap:
        with mlwatch.observe(model="t_obs") as obs:
            feats = {"a": 1.0}
            obs.inputs(feats)
            feats["a"] = 2.0  # changed after being handed over: the record keeps 1.0
            obs.outputs(0.7)
        with pytest.raises(KeyError), mlwatch.observe(model="t_obs") as obs:
            raise KeyError("x")
        p = cap.assert_recorded("t_obs", calls=2, features=["a"], outputs=["prediction"], errors={"KeyError": 1})
    assert p.columns["a"].numeric is not None and p.columns["a"].numeric.max == 1.0


def test_bare_decorator_uses_function_name() -> None:
    """@mlwatch.monitor without arguments names the model after the function."""

    @mlwatch.monitor
    def churn_model(x: float) -> float:
        return x

    with capture() as cap:
        churn_model(1.0)
        cap.assert_recorded("churn_model", calls=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"model": "m", "window_seconds": 7}, "window_seconds must divide 86400"),
        ({"model": "m", "window_seconds": 0}, "window_seconds must divide"),
        ({"model": "m", "sample_rate": 0}, "sample_rate must be in"),
        ({"model": "m", "colour": "red"}, "unknown monitor option"),
        ({"model": "m", "kll_k": 3}, "kll_k must be"),
        ({"model": "m", "segment_by": [1]}, "segment_by must be a list"),
    ],
)
def test_bad_options_fail_at_decoration(kwargs: dict[str, object], message: str) -> None:
    """Wrong options raise ConfigError when decorating, never at call time."""
    with pytest.raises(ConfigError, match=message):
        mlwatch.monitor(**kwargs)  # type: ignore[call-overload]


def test_segment_by_naming_no_argument() -> None:
    """segment_by that no argument can provide is rejected at decoration time."""
    with pytest.raises(ConfigError, match="names no argument"):

        @mlwatch.monitor(model="m", segment_by=["country"])
        def f(x: float, y: int) -> float:
            return x


def test_configure_rejects_unknown_and_bad_options() -> None:
    """configure() validates names (with a suggestion) and values."""
    with pytest.raises(ConfigError, match="did you mean 'window_seconds'"):
        mlwatch.configure(window_second=60)
    with pytest.raises(ConfigError, match="buffer_size"):
        mlwatch.configure(buffer_size=-1)


def test_windows_aligned_and_split_by_time() -> None:
    """Calls in different epoch-aligned windows land in different profiles."""

    @mlwatch.monitor(model="t_win", window_seconds=1)
    def f(x: float) -> float:
        return x

    import time

    with capture() as cap:
        f(1.0)
        start = time.time()
        time.sleep(1.05 - (start % 1.0) if start % 1.0 > 0.05 else 1.0)
        f(2.0)
        profiles = cap.profiles("t_win")
    assert len(profiles) == 2
    assert all(p.window_start is not None and p.window_start == int(p.window_start) for p in profiles)
    assert sum(p.calls for p in profiles) == 2


def test_local_files_by_default(tmp_path: object) -> None:
    """Without exporters, closed windows become files that mlwatch.load reads."""
    import pathlib

    from mlwatch._runtime import RUNTIME

    previous = RUNTIME.settings
    mlwatch.configure(data_dir=str(tmp_path), exporters=None)
    try:

        @mlwatch.monitor(model="t_files")
        def f(x: float) -> float:
            return x

        f(1.0)
        assert mlwatch.flush() >= 1
        files = list(pathlib.Path(str(tmp_path)).rglob("*.mlw"))
        assert files and mlwatch.load(str(files[0])).model == "t_files"
    finally:
        RUNTIME.configure(previous)


def test_import_is_cheap() -> None:
    """import mlwatch pulls in no pandas, polars, scipy or web framework."""
    import subprocess

    code = "import sys, mlwatch; print(sorted(m for m in ('pandas','polars','scipy','pyarrow','starlette','fastapi','flask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_dict_of_columns_after_dict_rows() -> None:
    """A call passing a dict of columns is read as a batch even when earlier calls passed rows."""

    @mlwatch.monitor(model="t_mixed_dicts")
    def f(features: dict[str, object]) -> None:
        return None

    with capture() as cap:
        f({"a": 1.0})
        f({"a": [2.0, 3.0, 4.0]})
        col = cap.merged("t_mixed_dicts").columns["a"]
    assert col.count == 4 and col.n_numeric == 4 and col.n_other == 0


def test_a_call_counts_in_the_window_it_started_in_whatever_the_buffer_order() -> None:
    """Calls are buffered when they end, so a long call that started in the previous window can sit
    between two calls of the next one; it still counts in the window it started in."""
    import time

    @mlwatch.monitor(model="t_window_order")
    def predict(x: float) -> float:
        return x

    recorder = predict.__mlwatch_recorder__  # type: ignore[attr-defined]
    with capture() as cap:
        offset = time.time_ns() - time.perf_counter_ns()
        boundary = (time.time_ns() // 60_000_000_000) * 60_000_000_000  # the current minute window's start
        for wall in (boundary + 10 * 10**9, boundary - 10 * 10**9, boundary + 20 * 10**9):
            recorder.record(wall - offset, 1_000_000, (1.0,), None, 1.0, None)
        calls = {p.window_start: p.calls for p in cap.profiles("t_window_order")}
    assert calls == {boundary / 1e9 - 60: 1, boundary / 1e9: 2}
