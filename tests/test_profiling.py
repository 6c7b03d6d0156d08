"""mlwatch.profile(): every input shape, options validated, odd data counted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import mlwatch
from mlwatch import ConfigError


def test_pandas_frame_with_missing_and_categories(rng: np.random.Generator) -> None:
    """A pandas frame: one column per frame column, NaN counted as missing."""
    df = pd.DataFrame({"x": rng.normal(size=100), "c": rng.choice(["a", "b"], 100)})
    df.loc[:9, "x"] = np.nan
    p = mlwatch.profile(df, model="fraud", version="3")
    assert p.rows == 100 and set(p.columns) == {"x", "c"}
    assert p.columns["x"].missing == 10 and p.columns["c"].kind == "categorical"


def test_pandas_extension_dtypes() -> None:
    """Nullable ints, categoricals, strings and tz-aware datetimes are all understood."""
    df = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "cat": pd.Categorical(["x", "y", None]),
            "s": pd.array(["p", None, "q"], dtype="string"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "t": pd.to_datetime(["2026-01-01", None, "2026-01-02"]).tz_localize("UTC"),
        }
    )
    p = mlwatch.profile(df)
    assert {n: c.missing for n, c in p.columns.items()} == {"i": 1, "cat": 1, "s": 1, "b": 1, "t": 1}
    assert p.columns["i"].kind == "numeric" and p.columns["cat"].kind == "categorical"
    assert p.columns["b"].category_counts() == {"True": 1, "False": 1}
    assert p.columns["t"].kind == "numeric"


def test_polars_frame() -> None:
    """A polars frame profiles like pandas."""
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"x": [1.0, None, 3.0], "c": ["a", "b", None]})
    p = mlwatch.profile(df)
    assert p.rows == 3 and p.columns["x"].missing == 1 and p.columns["c"].missing == 1


def test_numpy_array_with_names_and_rows_of_dicts() -> None:
    """2-D arrays take feature_names; dict rows with differing keys count absent keys as missing."""
    p = mlwatch.profile(np.arange(12.0).reshape(4, 3), feature_names=["a", "b", "c"])
    assert set(p.columns) == {"a", "b", "c"} and p.rows == 4
    q = mlwatch.profile([{"a": 1, "b": "x"}, {"a": 2}, {"b": "y", "c": None}])
    assert q.rows == 3 and q.columns["a"].missing == 1 and q.columns["c"].missing == 3


def test_dict_of_columns_and_dataclass_row() -> None:
    """A dict of columns, and a dataclass as one row."""

    @dataclasses.dataclass
    class Row:
        amount: float
        country: str

    assert mlwatch.profile({"a": [1, 2, 3]}).rows == 3
    p = mlwatch.profile(Row(3.5, "DE"))
    assert p.rows == 1 and p.columns["country"].category_counts() == {"DE": 1}


def test_outputs_and_declarations() -> None:
    """Outputs are profiled apart; declared kinds and exclusions apply."""
    p = mlwatch.profile(
        {"zip": [1, 2, 2], "note": ["hi", "there", "x"], "id": [1, 2, 3]},
        outputs={"score": [0.1, 0.2, 0.9]},
        categorical=["zip"],
        text=["note"],
        exclude=["id"],
    )
    assert set(p.columns) == {"zip", "note"} and set(p.outputs) == {"score"}
    assert p.columns["zip"].kind == "categorical" and p.columns["note"].kind == "text"


def test_empty_and_all_missing() -> None:
    """Empty frames and all-missing columns give empty-kind columns, not errors."""
    assert mlwatch.profile(pd.DataFrame({"x": []})).rows == 0
    p = mlwatch.profile({"x": [None, None]})
    assert p.columns["x"].kind == "empty" and p.columns["x"].missing_share == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kll_k": 2}, "kll_k must be an integer in"),
        ({"categorical": "zip"}, "must be a list of column names"),
        ({"categorical": ["a"], "text": ["a"]}, "two kinds"),
        ({"colour": 1}, "unknown profile option"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    """Wrong options fail at call time with a precise ConfigError."""
    with pytest.raises(ConfigError, match=message):
        mlwatch.profile({"a": [1]}, **kwargs)  # type: ignore[arg-type]
