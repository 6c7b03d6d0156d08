"""Helpers for the integration tests: free ports, servers started and stopped on loopback, the driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
APPS = HERE / "http_apps"
DRIVER = HERE / "driver.py"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(endpoint: str | None = None) -> dict[str, str]:
    """The environment of a server process: no OTEL_* from the outside, our endpoint if any."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["MLWATCH_TEST_ENDPOINT"] = endpoint
    return env


@contextmanager
def server(
    cmd: Sequence[str], port: int, env: dict[str, str], cwd: Path, log: Path, ready_path: str = "/healthz", ready_timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd`, wait until GET `ready_path` answers, yield; then SIGTERM and wait for a clean exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {ready_timeout:g} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"server did not stop within 30 s of SIGTERM:\n{log.read_text()}") from None


@contextmanager
def collector(tmp: Path) -> Iterator[str]:
    """A real `mlwatch collector` (SQLite) on a free loopback port; yields its base URL; stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlwatch.collector", "--port", str(port), "--db", str(tmp / "collector.db"), "--log-level", "warning"]
    with server(cmd, port, child_env(), tmp, tmp / "collector.log", ready_path="/health", ready_timeout=60):
        yield f"http://127.0.0.1:{port}"


def drive(base_url: str, plan: list[dict[str, Any]], concurrency: int, tmp: Path) -> list[tuple[int, float]]:
    """Send `plan` from a separate process (driver.py); [(status, client seconds)] in plan order."""
    return driver_results(start_driver(base_url, plan, concurrency, tmp))


def start_driver(base_url: str, plan: list[dict[str, Any]], concurrency: int, tmp: Path) -> subprocess.Popen[str]:
    """Start sending `plan` from a separate process (driver.py) and return at once; see `driver_results`."""
    plan_file = tmp / f"plan-{time.monotonic_ns()}.json"
    plan_file.write_text(json.dumps(plan))
    return subprocess.Popen(
        [sys.executable, str(DRIVER), base_url, str(plan_file), str(concurrency)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )


def driver_results(proc: subprocess.Popen[str]) -> list[tuple[int, float]]:
    """Wait for a driver; [(status, client seconds)] in plan order."""
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0 and not err, err
    return [(int(s), float(t)) for s, t in json.loads(out)]
