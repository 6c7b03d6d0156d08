"""`mlwatch demo`: a monitored model runs, trouble is injected halfway, mlwatch finds it and shows it.

Runs on one machine in well under a minute, with nothing to install beyond the ``collector``
extra: a collector is started on loopback (SQLite in a temporary directory) as a child process;
a small fraud-scoring model decorated with `@mlwatch.monitor` exports one-second window profiles
both to that collector (OTLP/HTTP) and to local files; the first half of the traffic becomes the
reference (uploaded to the collector, so its dashboard compares against it). The trouble injected
halfway: the `amount` feature switches from euros to cents, a new `country` appears,
`device_age` starts to go missing, and the labels that arrive for France disagree with the model
(its accuracy in that segment drops; logged with `mlwatch.log_outcome`). The demo prints the drift and data-quality verdicts, writes the
HTML report, prints where the dashboard is, and stops the collector (``keep_running`` leaves it
up until Ctrl-C). Without the collector extra (or with ``collector=False``) it runs in-process
only, with local files and the report.

Not in the demo yet: serving the model behind FastAPI with the mlwatch middleware (issue 6), and
the collector's alert rules (issue 7).
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
#: The segment whose labels start to disagree with the model halfway (its quality drops).
QUALITY_SEGMENT = "FR"


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


class _Collector:
    """`python -m mlwatch.collector` as a child process on 127.0.0.1 with a SQLite file; stopped on exit."""

    def __init__(self, directory: Path) -> None:
        import socket
        import subprocess
        import sys

        with socket.socket() as sock:  # a free port (released just before the child binds it)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(directory / "collector.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlwatch.collector", "--db", str(directory / "collector.db"), "--port", str(self.port),
             "--evaluate-interval", "0", "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the collector did not start (see {self.log.name})")

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _collector_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("starlette", "uvicorn", "opentelemetry.proto"))


def run_demo(
    *,
    calls: int = 20_000,
    out: Path | None = None,
    quiet: bool = False,
    collector: bool = True,
    report: Path | None = None,
    keep_running: bool = False,
    phase_seconds: float = 0.0,
) -> int:
    """Run the demo; returns 0 when every injected problem was detected (and shown), 1 otherwise.

    `report`: where to write the HTML report (default ``report.html`` in the output directory).
    `collector`: start a collector on loopback and send the profiles to it (when its extra is installed).
    `keep_running`: leave the collector and its dashboard up until Ctrl-C.
    `phase_seconds`: spread each half of the traffic over about this many seconds (one-second
    windows), so the report and dashboard have a timeline to draw; 0 sends it as fast as possible.
    """
    import mlwatch
    from mlwatch.local_export import LocalFileExporter

    directory = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mlwatch-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    server: _Collector | None = None
    if collector and not _collector_available():
        say('(no collector: pip install "mlwatch[collector]" to see the dashboard too)')
        collector = False
    try:
        exporters: list[Any] = [LocalFileExporter(directory / "profiles")]
        if collector:
            server = _Collector(directory)
            server.wait_ready()
            exporters.append(mlwatch.OtlpExporter(server.url, service_name="mlwatch-demo", metrics=False))
            say(f"mlwatch demo: collector started at {server.url} (SQLite in {directory})")
        mlwatch.configure(window_seconds=1, flush_interval=0.1, exporters=exporters)
        return _run(directory, calls, say, quiet, server, report, keep_running, phase_seconds)
    finally:
        if server is not None:
            server.stop()


def _run(
    directory: Path, calls: int, say: Any, quiet: bool,
    server: _Collector | None, report: Path | None, keep_running: bool, phase_seconds: float,
) -> int:
    import mlwatch
    from mlwatch._progress import Progress

    @mlwatch.monitor(model="fraud", version="1.0", segment_by=["country"])
    def predict(features: dict[str, Any]) -> float:
        z = 0.002 * features["amount"] - 0.001 * (features["device_age"] or 0.0) - 1.0
        return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))

    rng = np.random.default_rng(42)
    labels = np.random.default_rng(7)
    log_outcome = getattr(mlwatch, "log_outcome", None)  # model quality from labels (issue 7), when present
    half = calls // 2
    say(f"mlwatch demo: {calls:,} monitored predictions; trouble starts after {half:,}")
    started = time.perf_counter()
    phases: list[list[Path]] = []
    profiles_dir = directory / "profiles"
    for phase, troubled in (("healthy", False), ("troubled", True)):
        rows = _traffic(rng, half, troubled=troubled)
        per_window = max(1, half // max(1, round(phase_seconds)))
        with Progress(f"  {phase:8s} traffic", enabled=not quiet) as bar:
            tick = time.monotonic()
            for i, row in enumerate(rows):
                score = predict(row)
                if log_outcome is not None:  # the label arrives; from halfway on, France's labels disagree
                    label = int(labels.random() < score)
                    if troubled and row["country"] == QUALITY_SEGMENT:
                        label = 1 - label
                    log_outcome(model="fraud", label=label, prediction=score, segment={"country": row["country"]}, version="1.0")
                if i % 500 == 0:
                    bar.update(i / half, f"{i:,} calls")
                if phase_seconds > 0 and (i + 1) % per_window == 0:  # spread the phase over several 1 s windows
                    tick += 1.0
                    time.sleep(max(0.0, tick - time.monotonic()))
        mlwatch.flush()  # close this phase's windows: its files are complete
        before = {f for files in phases for f in files}
        phases.append(sorted(set(profiles_dir.rglob("*.mlw")) - before))
    elapsed = time.perf_counter() - started
    reference = [mlwatch.load(f) for f in phases[0]]
    current = [mlwatch.load(f) for f in phases[1]]
    if not reference or not current:
        say("the demo produced no profiles")
        return 1
    ref, cur = mlwatch.merge(reference), mlwatch.merge(current)
    drift_report = mlwatch.drift(ref, cur)
    quality = mlwatch.check_quality(ref, cur)
    say(f"\nprofiles written to {profiles_dir} ({elapsed:.1f} s of traffic); reference = first half, current = second half\n")
    say(drift_report)
    say("")
    say(quality)
    checks = {
        "amount drift (euros -> cents)": "amount" in drift_report.drifted_columns,
        "new country 'BR'": any(i.column == "country" and i.check == "new_categories" for i in quality.issues),
        "device_age going missing": any(i.column == "device_age" and i.check == "missing_share" for i in quality.issues),
    }
    if log_outcome is not None:
        key = f"country={QUALITY_SEGMENT}"
        acc_before = mlwatch.quality(reference).segments().get(key, {}).get("accuracy", math.nan)
        acc_after = mlwatch.quality(current).segments().get(key, {}).get("accuracy", math.nan)
        say(f"\nmodel quality from labels, segment {key}: accuracy {acc_before:.3f} -> {acc_after:.3f}")
        checks[f"accuracy drop in segment {key}"] = acc_after < acc_before - 0.1
    from mlwatch.report import write_report

    ref_path = directory / "reference.mlw"
    ref.save(ref_path)
    report_path = write_report(report or directory / "report.html", ref, current, title="mlwatch demo: fraud model",
                               history=reference + current)
    if server is not None:
        checks["profiles stored by the collector"] = _publish(server, ref.to_bytes())
    say("")
    for name, found in checks.items():
        say(f"  [{'found' if found else 'MISSED'}] {name}")
    say(f"\nHTML report: {report_path}")
    if server is not None:
        say(f"dashboard:   {server.url}/  (reference uploaded; API at {server.url}/api/models)")
        if keep_running:
            say("the collector keeps running; press Ctrl-C to stop it")
            _stop_on_signals()
            try:
                while server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                say("")
    return 0 if all(checks.values()) else 1


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM end the wait (SIGINT may be ignored when started in the background)."""
    import signal

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _publish(server: _Collector, reference: bytes) -> bool:
    """Upload the reference and check the collector stored the demo's windows (OTLP delivery is async)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/api/models/fraud/reference", content=reference, params={"source": "mlwatch demo"}).raise_for_status()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            resp = client.get("/api/models/fraud/windows", params={"start": "0"})
            if resp.status_code == 200 and resp.json()["windows"]:
                return client.get("/").status_code == 200
            time.sleep(0.2)
    return False
