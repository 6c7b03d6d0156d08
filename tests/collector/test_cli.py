"""The command line: `mlwatch collector` serves in a real process, refuses unsafe binds, manages references."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mlwatch.cli import main as mlwatch_main
from mlwatch.collector.migrations import latest_version

from .conftest import make_profile


def test_reference_commands(tmp_path: Path, capsys: object) -> None:
    """`mlwatch collector reference add/show/delete` store a validated profile file in the database."""
    db = str(tmp_path / "c.db")
    ref = tmp_path / "ref.mlw"
    make_profile(n=100).save(ref)
    assert mlwatch_main(["collector", "reference", "add", str(ref), "--model", "fraud", "--db", db]) == 0
    assert mlwatch_main(["collector", "reference", "show", "--model", "fraud", "--db", db]) == 0
    assert mlwatch_main(["collector", "reference", "delete", "--model", "fraud", "--db", db]) == 0
    assert mlwatch_main(["collector", "reference", "show", "--model", "fraud", "--db", db]) == 1
    bad = tmp_path / "bad.mlw"
    bad.write_bytes(b"MLWP garbage")
    assert mlwatch_main(["collector", "reference", "add", str(bad), "--model", "fraud", "--db", db]) == 2


def test_refuses_network_bind_without_tokens(tmp_path: Path) -> None:
    """Binding 0.0.0.0 without a token exits with status 2 and says why."""
    env = {k: v for k, v in os.environ.items() if k != "MLWATCH_COLLECTOR_TOKENS"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlwatch.collector", "--host", "0.0.0.0", "--db", str(tmp_path / "c.db")],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0" in proc.stderr


def test_python_m_collector_serves(tmp_path: Path) -> None:
    """`python -m mlwatch.collector` starts a server that answers /health, and stops on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlwatch.collector", "--port", str(port), "--db", str(tmp_path / "c.db"), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["schema_version"] == latest_version()
    finally:
        proc.terminate()
        assert proc.wait(30) in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
