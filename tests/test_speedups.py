"""The optional C loops (`mlwatch._speedups`): each function's contract, and that profiles made with
them hold exactly what the Python paths make of the same data."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from collections import deque
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlwatch
from mlwatch import Profile, _fast
from mlwatch._runtime import RUNTIME, _all_row_dicts
from mlwatch._snapshot import IMMUTABLE as _IMMUTABLE
from mlwatch._tabular import SCALAR_TYPES, StrCounts, to_columns
from mlwatch.column import ColumnProfile
from mlwatch.profiling import ProfileConfig, update_profile
from mlwatch.testing import capture

needs_speedups = pytest.mark.skipif(not _fast.AVAILABLE, reason="mlwatch._speedups was not built (no C compiler)")


def test_built_wherever_a_compiler_is() -> None:
    """An install with a C compiler has the C loops; a failed build would otherwise only show as slowness."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}): mlwatch runs on its Python paths")
    assert _fast.AVAILABLE
    assert mlwatch.health()["speedups"] is True


def test_turned_off_by_the_environment() -> None:
    """MLWATCH_SPEEDUPS=0: the Python paths everywhere, the hot path's included; same counts."""
    code = (
        "import mlwatch\n"
        "from mlwatch.testing import capture\n"
        "@mlwatch.monitor(model='m')\n"
        "def predict(x): return x['a'] * 2\n"
        "with capture() as cap:\n"
        "    for i in range(100): predict({'a': float(i), 's': 'x'})\n"
        "    p = cap.merged('m')\n"
        "print(mlwatch.health()['speedups'], p.calls, p.columns['a'].count, p.columns['s'].category_counts())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MLWATCH_SPEEDUPS": "0"}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(maxsplit=3) == ["False", "100", "100", "{'x': 100}"]


@pytest.fixture
def speedups() -> Any:
    if _fast.SPEEDUPS is None:
        pytest.skip("mlwatch._speedups was not built (no C compiler)")
    return _fast.SPEEDUPS


def test_fill_floats_takes_floats_and_exact_ints_only(speedups: Any) -> None:
    out = np.empty(4)
    assert speedups.fill_floats([1.5, 2, -(2**53), np.float64(0.25)], out)
    assert out.tolist() == [1.5, 2.0, -(2.0**53), 0.25]
    assert speedups.fill_floats((float("nan"), float("inf"), 0.0, 1), out)  # NaN and inf are the profile's to judge
    assert math.isnan(out[0]) and out[1] == math.inf
    one = np.empty(1)
    for value in (True, 2**53 + 1, -(2**53) - 1, 10**400, np.float32(1.0), np.int64(3), "1.5", None, [1.0]):
        assert not speedups.fill_floats([value], one), value
    assert speedups.fill_floats([], np.empty(0))


def test_fill_item_floats_reads_columns_of_buffered_records(speedups: Any) -> None:
    recs = [(1, 2.5, "GET", None), (3, 4, "POST", 7), (5, -(2**53), "GET", None)]
    out = np.empty(6)
    assert speedups.fill_item_floats(recs, 4, (1, 3), out)
    assert out[:3].tolist() == [2.5, 4.0, -(2.0**53)]
    assert math.isnan(out[3]) and out[4] == 7.0 and math.isnan(out[5])  # None: missing, as the profile counts it
    one = np.empty(1)
    for value in (True, 2**53 + 1, 10**400, np.int64(3), "1.5", [1.0]):
        assert not speedups.fill_item_floats([(0, value)], 2, (1,), one), value
    for records in ([[0, 1.0]], [(0, 1.0, 2.0)], [(0,)], [None]):  # not a tuple of the record's width
        assert not speedups.fill_item_floats(records, 2, (1,), one), records
    assert speedups.fill_item_floats([], 2, (0, 1), np.empty(0))
    for indices, error in (((2,), ValueError), ((-1,), ValueError), ([1], TypeError), (("a",), TypeError), (tuple(range(17)), TypeError)):
        with pytest.raises(error):
            speedups.fill_item_floats([(0, 1.0)], 2, indices, np.empty(len(indices) if isinstance(indices, tuple) else 1))
    with pytest.raises(ValueError, match="one item per value"):
        speedups.fill_item_floats([(0, 1.0)], 2, (0, 1), np.empty(3))
    with pytest.raises(TypeError):
        speedups.fill_item_floats(((0, 1.0),), 2, (1,), one)


def test_same_items_compares_records_fields_as_python_groups_them(speedups: Any) -> None:
    route = "/items/{id}"
    base = (0, 1, "GET", route, 200, None)
    assert speedups.same_items([base, (9, 8, "GET", "".join(["/items/", "{id}"]), 200, None)], 6, (2, 3, 4, 5))  # equal, not the same object
    assert speedups.same_items([base], 6, (2, 3)) and speedups.same_items([], 6, (2,))
    for other in ((0, 1, "POST", route, 200, None), (0, 1, "GET", route, 404, None), (0, 1, "GET", route, 200, "KeyError")):
        assert not speedups.same_items([base, base, other], 6, (2, 3, 4, 5)), other
    assert not speedups.same_items([base, (0, 1, "GET", route, 200.0, None)], 6, (4,))  # equal in Python, not compared here: grouped by the caller
    assert speedups.same_items([base, (7, 7, "GET", route, 200, None)], 6, (2, 3, 4, 5))  # other fields are not looked at
    assert not speedups.same_items([base, [0, 1, "GET", route, 200, None]], 6, (2,))
    assert not speedups.same_items([base, base[:5]], 6, (2,))
    with pytest.raises(ValueError, match="outside the records"):
        speedups.same_items([base], 6, (6,))


@given(st.lists(st.tuples(st.sampled_from(["GET", "POST"]), st.sampled_from([200, 404, 2**70]), st.none() | st.just("ValueError")), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_same_items_agrees_with_python_equality(fields: list[tuple[Any, ...]]) -> None:
    if _fast.SPEEDUPS is None:
        pytest.skip("mlwatch._speedups was not built (no C compiler)")
    recs = [(0, 1, m, "/r", int(str(s)), e) for m, s, e in fields]  # ints made anew: equal, not identical
    want = all(r[2:] == recs[0][2:] for r in recs)
    assert _fast.SPEEDUPS.same_items(recs, 6, (2, 3, 4, 5)) == want


def test_flat_dict_rows_follows_the_scalar_types_given(speedups: Any) -> None:
    rows = [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "d": True}]
    assert speedups.flat_dict_rows(rows, SCALAR_TYPES, 8)
    assert not speedups.flat_dict_rows(rows, frozenset({int, float, str, type(None)}), 8)  # bool not among them
    assert not speedups.flat_dict_rows(rows, frozenset({float, str, type(None), bool}), 8)  # int not among them
    assert not speedups.flat_dict_rows([{"a": [1]}], SCALAR_TYPES, 8)
    assert speedups.flat_dict_rows([{"a": [1]}], frozenset({list}), 8)  # another type: looked up in the set
    assert not speedups.flat_dict_rows(rows, SCALAR_TYPES, 2)


def test_buffers_are_checked(speedups: Any) -> None:
    for bad in (np.empty(3), np.empty(2, dtype=np.float32), np.empty(4)[::2], b"x" * 16):
        with pytest.raises((ValueError, TypeError, BufferError)):
            speedups.fill_floats([1.0, 2.0], bad)
    readonly = np.empty(2)
    readonly.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        speedups.fill_floats([1.0, 2.0], readonly)
    with pytest.raises(TypeError):
        speedups.fill_floats({1.0, 2.0}, np.empty(2))
    with pytest.raises(TypeError):
        speedups.columns_from_dicts(({"a": 1.0},), ("a",), np.empty(1), True)
    with pytest.raises(ValueError, match="one item per value"):
        speedups.columns_from_dicts([{"a": 1.0}], ("a",), np.empty(2), True)


def test_columns_from_dicts_reads_each_column_by_its_first_row(speedups: Any) -> None:
    rows = [
        {"x": 1.0, "n": 3, "s": "DE", "late_none": 1.0, "mixed": "a", "big": 1, "b": True, "absent": 1.0},
        {"x": 2.5, "n": 4, "s": "FR", "late_none": None, "mixed": 2.0, "big": 2**60, "b": False},
        {"x": -1.0, "n": 5, "s": "DE", "late_none": 2.0, "mixed": "a", "big": 3, "b": True, "absent": 2.0},
    ]
    keys = tuple(rows[0])
    block = np.empty((len(keys), len(rows)))
    got = dict(zip(keys, speedups.columns_from_dicts(rows, keys, block, True), strict=True))
    assert got == {"x": True, "n": True, "s": {"DE": 2, "FR": 1}, "late_none": None, "mixed": None, "big": None, "b": None, "absent": None}
    assert block[0].tolist() == [1.0, 2.5, -1.0] and block[1].tolist() == [3.0, 4.0, 5.0]
    assert speedups.columns_from_dicts(rows, ("s",), np.empty((1, 3)), False) == [None]  # strings only when asked
    assert speedups.columns_from_dicts([{"a": 1.0}, [1.0]], ("a",), np.empty((1, 2)), True) == [None]  # not a dict
    assert speedups.columns_from_dicts([], ("a",), np.empty((1, 0)), True) == [None]  # no first row: nothing decided
    assert speedups.columns_from_dicts([{"a": 1.0}], (), np.empty(0), True) == []


def test_columns_from_dicts_pauses_every_so_many_rows(speedups: Any) -> None:
    """The GIL is offered (pause()) between rows; whatever runs meanwhile may change the rows."""
    rows = [{"x": float(i), "s": "a"} for i in range(10)]
    pauses: list[int] = []
    got = speedups.columns_from_dicts(rows, ("x", "s"), np.empty((2, 10)), True, lambda: pauses.append(1), 3)
    assert got == [True, {"a": 10}] and len(pauses) == 3  # before rows 3, 6 and 9

    def shrink() -> None:
        del rows[4:]

    assert speedups.columns_from_dicts(rows, ("x",), np.empty((1, 10)), True, shrink, 4) == [None]  # rows 4.. gone

    def fail() -> None:
        raise RuntimeError("pause failed")

    with pytest.raises(RuntimeError, match="pause failed"):
        speedups.columns_from_dicts(rows, ("x",), np.empty((1, 4)), True, fail, 1)
    with pytest.raises(ValueError, match="positive"):
        speedups.columns_from_dicts(rows, ("x",), np.empty((1, 4)), True, fail, 0)


def test_a_key_whose_eq_mutates_the_rows_does_not_crash(speedups: Any) -> None:
    """A dict lookup may run a key's __eq__ (equal hashes): the rows may change under the C loop."""
    rows: list[dict[Any, Any]] = []
    armed = False

    class Evil:
        def __hash__(self) -> int:
            return hash("ab")

        def __eq__(self, other: object) -> bool:
            if armed:
                rows.clear()
            return False

    rows.extend({Evil(): 0, "".join(["a", "b"]): float(i)} for i in range(100))  # each row its own "ab" object
    armed = True
    key = "".join(["a", "b"])  # not the rows' key objects: every value is looked up, meeting Evil
    assert speedups.columns_from_dicts(rows, (key,), np.empty((1, 100)), True) == [None]
    assert rows == []


def test_rows_laid_out_alike_are_walked_without_lookups(speedups: Any) -> None:
    """Copies of one dict hold the same key objects in the same order: their values are read by
    walking the entries, with no hashing (a key's __eq__ never runs); any other row is looked up."""
    calls = []

    class Loud:
        def __hash__(self) -> int:
            return hash("x")

        def __eq__(self, other: object) -> bool:
            calls.append(other)
            return False

    template = {Loud(): 0, "x": 1.0, "s": "DE"}
    rows = [template.copy() for _ in range(50)]
    rows.append({"s": "FR", "x": 2.0})  # other order: looked up, still read right
    rows.append({"x": 3, "s": "DE", "extra": 1})
    calls.clear()  # building the template compared its keys
    keys = ("x", "s")
    block = np.empty((2, len(rows)))
    assert speedups.columns_from_dicts(rows, keys, block, True) == [True, {"DE": 51, "FR": 1}]
    assert block[0].tolist() == [1.0] * 50 + [2.0, 3.0]
    assert calls == []  # the 50 copies were walked; the other two hold no Loud key


def test_an_interrupt_in_a_keys_hash_is_not_swallowed(speedups: Any) -> None:
    class Interrupting:
        def __hash__(self) -> int:
            raise KeyboardInterrupt

    rows = [{"a": 1.0}]
    with pytest.raises(KeyboardInterrupt):
        speedups.columns_from_dicts(rows, (Interrupting(),), np.empty((1, 1)), True)

    class Failing:
        def __hash__(self) -> int:
            raise ValueError("odd key")

    assert speedups.columns_from_dicts(rows, (Failing(),), np.empty((1, 1)), True) == [None]  # the Python path meets it


def test_record_plain_buffers_what_the_python_recorder_would(speedups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path's C fast path appends the very record `Recorder.record` appends, and leaves
    every other case (and every buffer event: full, batch complete, worker stopped) to it."""

    def predict(features: dict[str, Any]) -> Any:
        return features["x"]

    wrapped = mlwatch.monitor(model="t_record_plain")(predict)
    rec = wrapped.__mlwatch_recorder__  # type: ignore[attr-defined]
    state = rec.plain_state()
    assert state is not None
    runtime = state[0]
    monkeypatch.setattr(runtime, "running", True)
    monkeypatch.setattr(runtime, "capacity", 10)
    monkeypatch.setattr(runtime, "batch_size", 5)
    rec.queue.clear()
    features = {"x": 1.5, "s": "a"}
    assert speedups.record_plain(state, 7, 3, (features,), {}, 1.5)
    assert speedups.record_plain(state, 8, 4, (features,), None, "label")
    (r1, r2) = list(rec.queue)
    assert r1 == (7, 3, features, None, 1.5, None, 2) and r1[2] is not features  # a copy: the caller may change its dict
    assert r2 == (8, 4, features, None, "label", None, 2)
    assert not gc.is_tracked(r1) and not gc.is_tracked(r2)  # plain values only: no cycle possible, out of the collector's sight
    nested = {"x": 1.5, "l": [1]}
    assert speedups.record_plain(state, 9, 5, (nested,), None, 1.5)
    assert gc.is_tracked(list(rec.queue)[-1])  # a list inside: tracked, as the collector would keep it
    rec.queue.clear()
    rec.record(7, 3, (features,), {}, 1.5, None)
    assert list(rec.queue) == [r1]  # what the Python recorder appends
    rec.queue.clear()
    for args, kwargs, result in (
        ((features,), {"k": 1}, 1.0),  # keywords
        ((features, 2), {}, 1.0),  # two arguments
        ((features.items(),), {}, 1.0),  # not a dict
        ((features,), {}, [1.0]),  # a mutable result
        ((), {}, 1.0),
    ):
        assert not speedups.record_plain(state, 1, 1, args, kwargs, result)
    assert len(rec.queue) == 0
    for _ in range(4):
        assert speedups.record_plain(state, 1, 1, (features,), None, 1.0)
    assert not speedups.record_plain(state, 1, 1, (features,), None, 1.0)  # the 5th completes a batch: Python wakes the worker
    rec.record(1, 1, (features,), None, 1.0, None)
    for _ in range(5):
        assert speedups.record_plain(state, 1, 1, (features,), None, 1.0)  # past the batch: C again
    assert len(rec.queue) == 10
    assert not speedups.record_plain(state, 1, 1, (features,), None, 1.0)  # full: Python drops and counts it
    monkeypatch.setattr(runtime, "running", False)
    assert not speedups.record_plain(state, 1, 1, (features,), None, 1.0)  # the worker must be started: Python's job
    assert not speedups.record_plain((1, 2), 1, 1, (features,), None, 1.0)  # odd state: no
    assert not speedups.record_plain(state, 1, 1, [features], None, 1.0)


class _Runtime:
    """What record_plain reads of the runtime."""

    capacity, batch_size, running = 100, 5, True


def test_record_plain_looks_again_after_the_copy(speedups: Any) -> None:
    """Copying the dict may run the garbage collector (and a __del__ making a call of its own, or
    letting another thread run): a record that would then complete the batch is left to Python,
    which wakes the aggregator."""
    queue: deque[Any] = deque(["x"] * 3)
    state = (_Runtime(), queue, queue.append, 0, _IMMUTABLE, 2)

    class Other:
        def __del__(self) -> None:
            queue.append("another call")

    def garbage() -> None:
        a = Other()
        a.self = a  # type: ignore[attr-defined]

    gc.disable()
    old = gc.get_threshold()
    gc.set_threshold(1)
    keep = [{} for _ in range(200)]  # empty the dict free list: the copy allocates through the GC
    garbage()
    gc.enable()
    try:
        answered = speedups.record_plain(state, 1, 2, ({"a": 1.0},), {}, 1.0)
    finally:
        gc.set_threshold(*old)
    del keep
    assert list(queue) == ["x", "x", "x", "another call"]  # the collection ran inside the copy
    assert answered is False  # 4 + 1 completes the batch of 5: Python's to append, and to wake the aggregator


def test_record_plain_lets_an_interrupt_through(speedups: Any) -> None:
    class Meta(type):
        def __hash__(cls) -> int:
            raise KeyboardInterrupt

    class Odd(metaclass=Meta):
        pass

    queue: deque[Any] = deque()
    state = (_Runtime(), queue, queue.append, 0, frozenset({float}), 2)
    with pytest.raises(KeyboardInterrupt):
        speedups.record_plain(state, 1, 2, ({"a": 1.0},), {}, Odd())
    assert not queue


def test_plain_calls(speedups: Any) -> None:
    """The common batch (one argument, no keywords, no error, kept) in one pass; anything else: None."""
    recs = [(1, 100, {"a": 1}, None, 0.5, None, 2), (2, 200, {"a": 2}, None, 3, None, 2)]
    lat, res = np.empty(2), np.empty(2)
    args, results_ok = speedups.plain_calls(recs, 2, lat, res)
    assert args == [{"a": 1}, {"a": 2}] and args[0] is recs[0][2] and results_ok
    assert lat.tolist() == [100.0, 200.0] and res.tolist() == [0.5, 3.0]
    recs.append((3, 300, {"a": 3}, None, "label", None, 2))
    assert speedups.plain_calls(recs, 2, np.empty(3), np.empty(3))[1] is False  # results not all numbers
    for odd in ((3, 300, {}, {"k": 1}, 0.5, None, 2), (3, 300, {}, None, None, "ValueError", 2), (3, 300, None, None, None, None, 0),
                (3, 300, (1, 2), None, 0.5, None, 1), (3, 2**60, {}, None, 0.5, None, 2), (3, 300.0, {}, None, 0.5, None, 2), (1, 2)):
        assert speedups.plain_calls([recs[0], odd], 2, np.empty(2), np.empty(2)) is None, odd
    with pytest.raises(ValueError, match="one item per"):
        speedups.plain_calls(recs, 2, np.empty(3), np.empty(2))


def test_dict_rows_width(speedups: Any) -> None:
    assert speedups.dict_rows_width([{"a": 1}, {"b": 2}]) == 1
    assert speedups.dict_rows_width([{"a": 1}, {"a": 1, "b": 2}]) == -1
    assert speedups.dict_rows_width([{"a": 1}, {"a": 1, "b": 2}, [1]]) == -2  # not a dict, after differing lengths
    assert speedups.dict_rows_width([{"a": 1}, [1]]) == -2
    assert speedups.dict_rows_width([]) == -1
    with pytest.raises(TypeError):
        speedups.dict_rows_width(({"a": 1},))


def test_all_row_dicts(speedups: Any) -> None:
    assert speedups.all_row_dicts([{"a": 1.0}, {"b": "x"}, {}], SCALAR_TYPES)
    assert not speedups.all_row_dicts([{"a": 1.0}, {"a": [1.0, 2.0]}], SCALAR_TYPES)  # a dict of columns
    assert not speedups.all_row_dicts([{"a": 1.0}, [1.0]], SCALAR_TYPES)
    assert speedups.all_row_dicts([], SCALAR_TYPES)
    with pytest.raises(TypeError):
        speedups.all_row_dicts([{}], set(SCALAR_TYPES))
    for values in ([], [{"a": 1.0}], [{"a": [1.0]}], [{"a": 1.0}, 2.0]):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_fast, "SPEEDUPS", None)
            python = _all_row_dicts(values)
        assert python == speedups.all_row_dicts(values, SCALAR_TYPES), values


@needs_speedups
def test_string_columns_come_counted_only_for_profiling() -> None:
    rows = [{"s": "a", "x": 1.0}, {"s": "b", "x": 2.0}]
    _, plain = to_columns(rows)  # what a segment split reads: the values themselves
    assert plain["s"] == ["a", "b"] and plain["x"] == [1.0, 2.0]
    _, floats = to_columns(rows, float_arrays=True)
    assert floats["s"] == ["a", "b"] and floats["x"].tolist() == [1.0, 2.0]
    _, counted = to_columns(rows, float_arrays=True, string_counts=True)
    assert isinstance(counted["s"], StrCounts) and counted["s"].counts == {"a": 1, "b": 1} and counted["s"].n == 2


# Values a feature may hold: every type the C loops take, and what they must hand back.
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**60), 2**60),
    st.integers(-5, 5),
    st.sampled_from(["DE", "FR", "", "x" * 150]),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.integers(-5, 5).map(np.int64),
    st.just([1.0]),
)


@st.composite
def _rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Dict rows with a few columns, each of one type or mixed, keys sometimes absent or extra."""
    n = draw(st.integers(1, 40))
    columns = {}
    for name in draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, min_size=1, max_size=4)):
        single = draw(st.booleans())
        strategy = draw(st.sampled_from([st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**60), 2**60), st.sampled_from(["DE", "FR", "x" * 150])])) if single else _values
        columns[name] = draw(st.lists(strategy, min_size=n, max_size=n))
    rows = [{name: values[i] for name, values in columns.items()} for i in range(n)]
    for row in rows:
        if draw(st.integers(0, 9)) == 0 and row:
            row.pop(draw(st.sampled_from(sorted(row))))
        if draw(st.integers(0, 9)) == 0:
            row["extra"] = draw(_values)
    return rows


def _digest(col: ColumnProfile) -> tuple[Any, ...]:
    """Everything a column holds. Not its bytes: a frequent-items sketch's layout follows the order
    values were first seen in, which differs (np.unique sorts a float column's categories)."""
    num = col.numeric
    numeric = None if num is None else (num.n, num.mean, num.m2, num.min, num.max, num.low.tolist(), num.high.tolist(), [a.tolist() for a in num.kll.items()])
    text = None if col.text_length is None else [a.tolist() for a in col.text_length.items()]
    counters = (col.count, col.missing, col.non_finite, col.n_numeric, col.n_categorical, col.n_text, col.n_other, col.kind)
    return counters, numeric, sorted(col.category_counts().items()), col.distinct_estimate(), text


def _profile_both_ways(rows: list[dict[str, Any]], config: ProfileConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast, slow = Profile("m"), Profile("m")
    update_profile(fast, [r.copy() for r in rows], config)
    with monkeypatch.context() as m:
        m.setattr(_fast, "SPEEDUPS", None)
        update_profile(slow, [r.copy() for r in rows], config)
    return [(name, _digest(c)) for name, c in fast.columns.items()], [(name, _digest(c)) for name, c in slow.columns.items()]


@needs_speedups
@settings(max_examples=300, deadline=None)
@given(rows=_rows(), kind=st.sampled_from([None, "numeric", "categorical", "text"]))
def test_profiles_equal_the_python_paths(rows: list[dict[str, Any]], kind: str | None) -> None:
    config = ProfileConfig.build(**({kind: ["a", "b"]} if kind else {}))
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = _profile_both_ways(rows, config, monkeypatch)
    assert repr(fast) == repr(slow)  # repr: NaN equals NaN


@needs_speedups
def test_categorical_numbers_past_the_frequent_items_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the frequent-items sketch purges, what it keeps depends on the order categories arrive
    in: a float column (C path) must feed them in the order a list of them (Python path) does."""
    rng = np.random.default_rng(7)
    rows = [{"a": float(v)} for v in rng.integers(0, 5000, size=6000)]
    fast, slow = _profile_both_ways(rows, ProfileConfig.build(categorical=["a"]), monkeypatch)
    assert repr(fast) == repr(slow)
    as_list, as_array = ColumnProfile("a", kind="categorical"), ColumnProfile("a", kind="categorical")
    as_list.update([r["a"] for r in rows])
    as_array.update(np.array([r["a"] for r in rows]))
    assert repr(_digest(as_list)) == repr(_digest(as_array))
    assert as_list.freq is not None and not as_list.freq.is_exact()  # the sketch did purge


@needs_speedups
def test_integer_segment_values_of_a_batch_keep_their_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splitting a batch by segment reads the values themselves: store 3 is "3", not "3.0"."""

    @mlwatch.monitor(model="t_speedups_seg", segment_by="store")
    def predict(rows: Any) -> Any:
        return [0.5] * len(rows) if isinstance(rows, list) else 0.5

    def keys() -> list[str]:
        with capture(flush_interval=60.0) as cap:
            predict([{"store": 3, "x": 1.0}, {"store": 4, "x": 2.0}])
            predict({"store": 3, "x": 1.0})
            return sorted({p.segment_key for p in cap.profiles("t_speedups_seg")})

    fast = keys()
    monkeypatch.setattr(_fast, "SPEEDUPS", None)
    assert fast == keys()
    assert "store=3" in fast and "store=4" in fast and not any(k.endswith(".0") for k in fast)


def test_lists_of_numbers_and_float_arrays_agree_in_a_categorical_column() -> None:
    """The same values, as a list or as a float array, give the same profile: ±inf is non-finite."""
    values = [1.0, 2.0, math.inf, -math.inf, math.nan, 2.0]
    as_list, as_array = ColumnProfile("c", kind="categorical"), ColumnProfile("c", kind="categorical")
    as_list.update(values)
    as_array.update(np.array(values))
    for col in (as_list, as_array):
        assert (col.count, col.missing, col.non_finite, col.n_categorical) == (6, 1, 2, 3)
        assert col.category_counts() == {"1": 1, "2": 2}


@needs_speedups
def test_monitored_calls_profile_the_same_with_and_without_the_c_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    @mlwatch.monitor(model="t_speedups")
    def predict(features: dict[str, Any]) -> Any:
        if features["n"] == 99:
            raise ValueError("a failing call: its batch is not plain")
        if features["n"] == 120:
            return "a label"  # one result not a number
        return features["x"] * 2 if features["x"] is not None else None

    # Fewer values than KLL's k: its compactions (random) never run, so its items can be compared.
    calls = [{"x": float(i), "n": i, "country": "DE" if i % 3 else "FR"} for i in range(150)]
    calls[7]["x"] = None
    calls[9]["country"] = 3

    def run() -> Profile:
        with capture(flush_interval=60.0) as cap:
            for i, features in enumerate(calls):
                with contextlib.suppress(ValueError):
                    predict(features)
                if i in (60, 110):  # batches of each kind: plain with numbers, with an error, plain with a label
                    RUNTIME.process(close_all=False)
            return cap.merged("t_speedups")

    fast = run()
    monkeypatch.setattr(_fast, "SPEEDUPS", None)
    slow = run()
    assert fast.calls == slow.calls == 150 and fast.errors == slow.errors
    for a, b in ((fast.columns, slow.columns), (fast.outputs, slow.outputs)):
        assert sorted(a) == sorted(b)
        for name in a:
            assert repr(_digest(a[name])) == repr(_digest(b[name])), name
