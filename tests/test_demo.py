"""`mlwatch demo` finds every problem it injects, and exits 0."""

from __future__ import annotations

from pathlib import Path

from mlwatch._runtime import RUNTIME
from mlwatch.demo import run_demo


def test_demo_detects_injected_trouble(tmp_path: Path) -> None:
    """Unit change, new category and rising missing share are all detected."""
    previous = RUNTIME.settings
    try:
        assert run_demo(calls=6_000, out=tmp_path, quiet=True) == 0
    finally:
        RUNTIME.configure(previous)
    assert list(tmp_path.rglob("*.mlw"))
