"""Hypothesis strategies shared by the analysis tests: small profiles of hostile, mixed data."""

from __future__ import annotations

from hypothesis import strategies as st

from mlwatch import Profile
from mlwatch.column import ColumnProfile, DeclaredKind

_KINDS: list[DeclaredKind | None] = [None, None, "categorical", "numeric", "text"]
_values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["a", "b", "c", "", "x" * 150]),
    st.booleans(),
)


@st.composite
def small_profiles(draw: st.DrawFn, *, with_outputs: bool = False) -> Profile:
    """A small profile with random columns of mixed, missing and non-finite values (maybe none),
    and, with `with_outputs`, maybe a float output column."""
    p = Profile("m")
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    n = draw(st.integers(0, 40))
    for name in names:
        col = ColumnProfile(name, kind=draw(st.sampled_from(_KINDS)))
        col.update(draw(st.lists(_values, min_size=n, max_size=n)))
        p.columns[name] = col
    if with_outputs and draw(st.booleans()):
        out = ColumnProfile("pred")
        out.update(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20)))
        p.outputs["pred"] = out
    return p
