"""`mlwatch demo`: a monitored model runs, trouble is injected halfway, mlwatch finds it.

Runs entirely in-process in a few seconds: a small fraud-scoring model decorated with
`@mlwatch.monitor`, one-second windows written as profile files to a temporary directory, a
reference profile from the first half of the traffic, and drift and data-quality reports of the
second half against it. The trouble injected halfway: the `amount` feature switches from euros
to cents, a new `country` appears, and `device_age` starts to go missing.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo"]

COUNTRIES = ["DE", "FR", "IT", "ES"]


def _traffic(rng: np.random.Generator, n: int, *, troubled: bool) -> list[dict[str, Any]]:
    amounts = rng.lognormal(3.5, 1.0, n) * (100.0 if troubled else 1.0)  # euros -> cents
    countries = rng.choice(COUNTRIES + (["BR"] if troubled else []), n).tolist()
    device_age = rng.gamma(2.0, 200.0, n)
    rows = []
    for i in range(n):
        missing = troubled and rng.random() < 0.3
        rows.append(
            {
                "amount": float(amounts[i]),
                "country": countries[i],
                "device_age": None if missing else float(device_age[i]),
                "hour": int(rng.integers(0, 24)),
            }
        )
    return rows


def run_demo(*, calls: int = 20_000, out: Path | None = None, quiet: bool = False) -> int:
    """Run the demo; returns 0 when every injected problem was detected, 1 otherwise."""
    import mlwatch
    from mlwatch.local_export import LocalFileExporter

    directory = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mlwatch-demo-"))
    say = (lambda *a: None) if quiet else print
    mlwatch.configure(window_seconds=1, flush_interval=0.1, exporters=[LocalFileExporter(directory)])

    @mlwatch.monitor(model="fraud", version="1.0", segment_by=["country"])
    def predict(features: dict[str, Any]) -> float:
        z = 0.002 * features["amount"] - 0.001 * (features["device_age"] or 0.0) - 1.0
        return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))

    rng = np.random.default_rng(42)
    half = calls // 2
    say(f"mlwatch demo: {calls:,} monitored predictions; trouble starts after {half:,}")
    started = time.perf_counter()
    phases: list[list[Path]] = []
    for phase, troubled in (("healthy", False), ("troubled", True)):
        for row in _traffic(rng, half, troubled=troubled):
            predict(row)
        mlwatch.flush()  # close this phase's windows: its files are complete
        before = {f for files in phases for f in files}
        phases.append(sorted(set(directory.rglob("*.mlw")) - before))
        say(f"  {phase} traffic sent ({half:,} calls, {len(phases[-1])} window/segment profiles)")
    elapsed = time.perf_counter() - started
    reference = [mlwatch.load(f) for f in phases[0]]
    current = [mlwatch.load(f) for f in phases[1]]
    if not reference or not current:
        say("the demo produced no profiles")
        return 1
    ref, cur = mlwatch.merge(reference), mlwatch.merge(current)
    report = mlwatch.drift(ref, cur)
    quality = mlwatch.check_quality(ref, cur)
    say(f"\nprofiles written to {directory} ({elapsed:.1f} s of traffic); reference = first half, current = second half\n")
    say(report)
    say("")
    say(quality)
    checks = {
        "amount drift (euros -> cents)": "amount" in report.drifted_columns,
        "new country 'BR'": any(i.column == "country" and i.check == "new_categories" for i in quality.issues),
        "device_age going missing": any(i.column == "device_age" and i.check == "missing_share" for i in quality.issues),
    }
    say("")
    for name, found in checks.items():
        say(f"  [{'found' if found else 'MISSED'}] {name}")
    return 0 if all(checks.values()) else 1
