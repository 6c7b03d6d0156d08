"""The mlwatch command line: profile a file, show it, compare two profiles (exit codes included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlwatch.cli import main


@pytest.fixture
def frames(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A reference CSV, a same-distribution CSV and a drifted Parquet file."""
    rng = np.random.default_rng(5)
    n = 20_000

    def frame(shift: float, new_cat: bool) -> pd.DataFrame:
        cats = ["a", "b", "c"] + (["zzz"] if new_cat else [])
        return pd.DataFrame(
            {
                "amount": rng.lognormal(3 + shift, 1, n),
                "age": rng.integers(18, 90, n),
                "country": rng.choice(cats, n),
            }
        )

    ref, same, drifted = tmp_path / "ref.csv", tmp_path / "same.csv", tmp_path / "cur.parquet"
    frame(0, False).to_csv(ref, index=False)
    frame(0, False).to_csv(same, index=False)
    frame(1.0, True).assign(age=lambda d: d.age * 12).to_parquet(drifted)
    return ref, same, drifted


def test_profile_show_drift_round_trip(frames: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """profile -> show -> drift, with --fail-on-drift giving exit code 1 only on drift."""
    ref, same, drifted = frames
    for src, out in ((ref, "ref.mlw"), (same, "same.mlw"), (drifted, "cur.mlw")):
        assert main(["profile", str(src), "-o", str(tmp_path / out), "--model", "fraud", "-q"]) == 0
    assert main(["show", str(tmp_path / "ref.mlw")]) == 0
    shown = capsys.readouterr().out
    assert "amount" in shown and "country" in shown and "20,000" in shown
    assert main(["drift", str(tmp_path / "ref.mlw"), str(tmp_path / "same.mlw"), "--fail-on-drift"]) == 0
    capsys.readouterr()
    assert main(["drift", str(tmp_path / "ref.mlw"), str(tmp_path / "cur.mlw"), "--fail-on-drift", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["dataset_drift"] is True
    assert main(["drift", str(tmp_path / "ref.mlw"), str(tmp_path / "cur.mlw")]) == 0  # without the flag: report only


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt profile or an unknown file type gives exit code 2 and one clear line."""
    bad = tmp_path / "bad.mlw"
    bad.write_bytes(b"MLWP" + b"\0" * 100)
    assert main(["show", str(bad)]) == 2
    assert "mlwatch: error:" in capsys.readouterr().err
    other = tmp_path / "data.xlsx"
    other.write_bytes(b"x")
    assert main(["profile", str(other), "-o", str(tmp_path / "x.mlw")]) == 2
    assert "unsupported file type" in capsys.readouterr().err


def test_console_script_installed() -> None:
    """`python -m mlwatch.cli --help` works (the `mlwatch` entry point calls the same main)."""
    out = subprocess.run([sys.executable, "-m", "mlwatch.cli", "--help"], capture_output=True, text=True, check=True)
    assert "profile" in out.stdout and "drift" in out.stdout
