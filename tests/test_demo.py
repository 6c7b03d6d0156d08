"""`mlwatch demo` finds every problem it injects, shows it in the report and the collector, and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlwatch._runtime import RUNTIME
from mlwatch.demo import run_demo


def test_demo_detects_injected_trouble(tmp_path: Path) -> None:
    """Unit change, new category and rising missing share are all detected (in-process, no collector)."""
    previous = RUNTIME.settings
    try:
        assert run_demo(calls=6_000, out=tmp_path, quiet=True, collector=False) == 0
    finally:
        RUNTIME.configure(previous)
    assert list(tmp_path.rglob("*.mlw"))
    assert "amount" in (tmp_path / "report.html").read_text()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_demo_command_with_collector(tmp_path: Path) -> None:
    """`mlwatch demo` starts a collector, feeds it, writes the report, prints the dashboard and stops it."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlwatch.cli", "demo", "--calls", "6000", "--phase-seconds", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[found] profiles stored by the collector" in proc.stdout
    assert "dashboard:   http://127.0.0.1:" in proc.stdout
    assert "MISSED" not in proc.stdout
    page = (tmp_path / "report.html").read_text()
    for problem in ("amount", "BR", "missing_share"):
        assert problem in page
    import mlwatch

    if hasattr(mlwatch, "log_outcome"):  # labels arrive: France's accuracy drop is found and shown
        assert "[found] accuracy drop in segment country=FR" in proc.stdout
        assert 'class="num worse"' in page
    assert (tmp_path / "collector.db").exists()
    assert _processes_mentioning(str(tmp_path / "collector.db")) == []  # the collector was stopped
