"""End to end: three real processes export over OTLP/HTTP to a loopback receiver; the profiles merge exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from otlp_receiver import Receiver

from mlwatch import merge

_CHILD = """
import sys
import mlwatch

url, n = sys.argv[1], int(sys.argv[2])
mlwatch.configure(endpoint=url)

@mlwatch.monitor(model="e2e", version="1", segment_by=["kind"])
def predict(row):
    if row["x"] % 50 == 49:
        raise ValueError("bad row")
    return row["x"] * 2.0

for i in range(n):
    try:
        predict({"x": float(i), "kind": "a" if i % 2 else "b"})
    except ValueError:
        pass
# no explicit flush: the interpreter's exit runs mlwatch's bounded shutdown, which sends the last windows
"""


def test_three_processes_merge_to_exactly_the_calls_made(tmp_path: Path) -> None:
    """3 processes x N monitored calls over real OTLP/HTTP: decoded, merged profiles hold exactly 3N calls."""
    n = 400
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with Receiver() as rx:
        procs = [
            subprocess.Popen([sys.executable, "-c", _CHILD, rx.url, str(n)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        records = list(rx.log_records())
        profiles = rx.profiles()
        metric_requests = rx.accepted("/v1/metrics")
    merged = merge(profiles)
    assert merged.calls == 3 * n
    assert merged.errors == {"ValueError": 3 * (n // 50)}
    assert merged.columns["x"].count == 3 * n
    assert merged.columns["kind"].category_counts() == {"a": 3 * n // 2, "b": 3 * n // 2}
    assert merged.latency is not None and merged.latency.n == 3 * n
    instances = {resource["service.instance.id"] for resource, _ in records}
    assert len(instances) == 3  # one per process: a collector merges workers instead of overwriting them
    assert len(metric_requests) >= 3
    assert not list(tmp_path.iterdir())  # OTLP replaced the local files
