"""`mlwatch demo`: a real model served over HTTP, trouble injected halfway, mlwatch finds all of it.

What happens, all on loopback: a collector starts (``python -m mlwatch.collector``, SQLite in the
demo's directory), and so does the service (``python -m mlwatch._demo_app``): a fraud model
(scikit-learn, trained at start on generated transactions) behind FastAPI under uvicorn,
instrumented with `mlwatch.integrations.fastapi.instrument_app`, exporting one-second windows to
the collector. This process then plays the bank: it sends transactions over HTTP with httpx
(a progress bar per phase), keeps each answer's prediction id (``X-Prediction-Id`` header) and,
a little later, posts the true labels to the service's ``/feedback`` route, which joins them with
`mlwatch.log_outcome`. Halfway the trouble starts (see `mlwatch._demo_app`): amounts in cents, a
new country, device_age going missing, and a change of fraud pattern in France that only the
labels reveal.

The collector runs with an alert rule (`ALERT_RULES`: a feature's missing share above 20 % for two
windows), evaluated on each window as it completes; the demo checks it fired on device_age alone,
and the dashboard's alerts panel shows it.

At the end everything is read back from the collector: the first half becomes the reference
(uploaded, so the dashboard compares against it), the second half the current data; the demo
checks that the collector counted every request it sent, writes the HTML report and prints each
problem as found or missed, then where the dashboard is. Every child process is stopped on the
way out, also on an error, Ctrl-C or SIGTERM; ``keep_running`` leaves the service and the
dashboard up until then. It needs ``pip install "mlwatch[demo]"`` (the collector, FastAPI,
uvicorn and scikit-learn) and takes well under two minutes on two cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlwatch._demo_app import COUNTRIES, HEADER, MODEL, NEW_COUNTRY, QUALITY_SEGMENT, WINDOW_SECONDS, transactions

__all__ = ["INJECTED", "UNTOUCHED", "run_demo", "worse_segments"]

#: Input features the trouble changes, and those it leaves alone (a problem found there is a false alarm).
INJECTED = ("amount", "country", "device_age")
UNTOUCHED = ("channel", "hour", "n_txn_24h")
_NEEDS = {"starlette": "collector", "uvicorn": "collector", "opentelemetry.proto": "collector", "fastapi": "fastapi", "sklearn": "demo"}
_HTTP_MODEL = "http.server"
#: The collector's alert rules in the demo (no channel: they show on the dashboard, the API and /metrics).
ALERT_RULES = f"""grace = "1s"

[[rules]]
name = "missing values"
model = "{MODEL}"
metric = "missing_share"
features = "all"
above = 0.2
for_windows = 2
"""
_SERVICE_MODULE = "mlwatch._demo_app"
_SEED = 42
_CONCURRENCY = 4
_LABEL_DELAY = 1.0  # seconds between a prediction and its label (the bank learns the truth later)


def _missing_extras() -> list[str]:
    import importlib.util

    return sorted({m for m in _NEEDS if importlib.util.find_spec(m) is None})


def _free_port() -> int:
    with socket.socket() as sock:  # released just before the child binds it
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Child:
    """One child process on a loopback port: started in its own session (so Ctrl-C in the terminal
    reaches only the demo, which stops it in order), its output in a log file, stopped with SIGTERM."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path, ready_path: str) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def ready(self) -> bool:
        """True once it answers its readiness path; raises if it exited."""
        import httpx

        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the {self.name} exited with status {self.proc.returncode} (log {self.log_path}):\n{tail}")
        try:
            return httpx.get(self.url + self.ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; never raises."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        except OSError:
            pass


@contextmanager
def _children(directory: Path) -> Iterator[tuple[_Child, _Child]]:
    """The collector and the served model, started together; both stopped on the way out, whatever happens."""
    started: list[_Child] = []
    try:
        cport, sport = _free_port(), _free_port()
        alerts = directory / "alerts.toml"
        alerts.write_text(ALERT_RULES)
        collector = _Child(
            "collector",
            [sys.executable, "-m", "mlwatch.collector", "--db", str(directory / "collector.db"), "--port", str(cport),
             "--evaluate-interval", "1", "--alerts", str(alerts), "--log-level", "warning"],
            cport, directory / "collector.log", "/health",
        )
        started.append(collector)
        service = _Child(
            "model service",
            [sys.executable, "-m", _SERVICE_MODULE, "--port", str(sport), "--collector", collector.url, "--dir", str(directory)],
            sport, directory / "service.log", "/healthz",
        )
        started.append(service)
        deadline = time.monotonic() + 90
        waiting = list(started)
        while waiting:
            waiting = [c for c in waiting if not c.ready()]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"the {waiting[0].name} did not start within 90 s (see {waiting[0].log_path})")
            time.sleep(0.1)
        yield collector, service
    finally:
        for child in reversed(started):  # the service first: its last windows go to a collector still up
            child.stop()


@contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM (and SIGINT, which may be ignored when started in the background) raise KeyboardInterrupt here."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------- the client
class _Traffic:
    """Sends transactions to the service and their labels to its feedback route; counts every request."""

    def __init__(self, url: str, quiet: bool) -> None:
        self.url = url
        self.quiet = quiet
        self.requests = 0  # every request the service answered (all are recorded by its middleware)
        self.predictions = 0
        self.labels = 0
        self.not_counted = 0
        self.missing_ids = 0
        self._before = 0

    async def phase(self, name: str, rows: list[dict[str, Any]], truth: list[int], seconds: float) -> None:
        """Send `rows` over about `seconds` (as fast as possible if the service is slower), with a progress bar;
        each label follows its prediction about `_LABEL_DELAY` seconds later; returns once every label went out."""
        import httpx

        from mlwatch._progress import Progress

        pending: list[tuple[float, str, int]] = []  # (sent at, prediction id, label)
        done = asyncio.Event()
        started = time.monotonic()
        rate = len(rows) / seconds if seconds > 0 else math.inf
        order = iter(range(len(rows)))
        limits = httpx.Limits(max_connections=_CONCURRENCY + 1, max_keepalive_connections=_CONCURRENCY + 1)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:

            async def predict() -> None:
                for i in order:
                    wait = started + i / rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    resp = await client.post("/predict", json=rows[i])
                    resp.raise_for_status()
                    self.requests += 1
                    self.predictions += 1
                    pid = resp.headers.get(HEADER)
                    if pid is None:
                        self.missing_ids += 1
                    else:
                        pending.append((time.monotonic(), pid, truth[i]))

            async def feedback() -> None:
                while True:
                    finished = done.is_set()
                    cutoff = math.inf if finished else time.monotonic() - _LABEL_DELAY
                    ready = [p for p in pending if p[0] <= cutoff]
                    del pending[: len(ready)]  # appended in time order: the ready ones are the first
                    for k in range(0, len(ready), 500):
                        batch = [{"prediction_id": pid, "label": label} for _, pid, label in ready[k : k + 500]]
                        resp = await client.post("/feedback", json={"labels": batch})
                        resp.raise_for_status()
                        self.requests += 1
                        answer = resp.json()
                        self.labels += answer["counted"]
                        self.not_counted += answer["not_counted"]
                    if finished:
                        return
                    await asyncio.sleep(0.25)

            with Progress(f"  {name:9s}", enabled=not self.quiet) as bar:
                labels = asyncio.create_task(feedback())
                senders = [asyncio.create_task(predict()) for _ in range(_CONCURRENCY)]
                try:
                    while not all(s.done() for s in senders):
                        await asyncio.wait(senders, timeout=0.1)
                        sent = self.predictions - self._before
                        bar.update(sent / len(rows), f"{sent:,}/{len(rows):,} predictions, {self.labels:,} labels")
                    for s in senders:
                        s.result()  # an HTTP error ends the demo
                    done.set()
                    await labels
                finally:
                    for task in [*senders, labels]:
                        task.cancel()
                bar.update(1.0, f"{len(rows):,}/{len(rows):,} predictions, {self.labels:,} labels", force=True)

    def run(self, name: str, rows: list[dict[str, Any]], truth: list[int], seconds: float) -> float:
        """One phase (see `phase`); returns its duration in seconds."""
        self._before = self.predictions
        t0 = time.monotonic()
        asyncio.run(self.phase(name, rows, truth, seconds))
        return time.monotonic() - t0


# ---------------------------------------------------------------------------- reading back
def _wait_until_stored(collector: str, traffic: _Traffic, timeout: float = 45.0) -> dict[str, float]:
    """Poll the collector until it counted every request, prediction and label sent (exports are asynchronous)."""
    import httpx

    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=collector, timeout=30) as client:
        while True:
            for model in (MODEL, _HTTP_MODEL):
                r = client.get(f"/api/models/{model}/windows", params={"start": "0"})
                seen[model] = sum(w["calls"] for w in r.json()["windows"]) if r.status_code == 200 else 0
            r = client.get(f"/api/models/{MODEL}/model-quality", params={"start": "0"})
            seen["labels"] = (r.json()["overall"].get("n_labeled") or 0) if r.status_code == 200 else 0
            if (seen[MODEL], seen[_HTTP_MODEL], seen["labels"]) == (traffic.predictions, traffic.requests, traffic.labels):
                return seen
            if time.monotonic() > deadline:
                return seen
            time.sleep(0.25)


def _profile(client: Any, start: float, end: float | None = None, segment: str | None = None) -> Any:
    from mlwatch.profile import Profile

    params: dict[str, Any] = {"start": repr(start), "format": "mlw"}
    if end is not None:
        params["end"] = repr(end)
    if segment is not None:
        params["segment"] = segment
    r = client.get(f"/api/models/{MODEL}/profile", params=params)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return Profile.from_bytes(r.content)


def _segment_quality(client: Any, start: float, end: float | None = None) -> dict[str, dict[str, float]]:
    params = {"start": repr(start)} | ({"end": repr(end)} if end is not None else {})
    r = client.get(f"/api/models/{MODEL}/model-quality", params=params)
    r.raise_for_status()
    segments: dict[str, dict[str, float]] = r.json()["segments"]
    return segments


def _alerts_fired(client: Any, timeout: float = 30.0) -> set[tuple[str, str]]:
    """(rule, feature) of every alert the collector's rules raised, once they evaluated the model's last window."""
    windows = client.get(f"/api/models/{MODEL}/windows", params={"start": "0"}).json()["windows"]
    last = max((w["window_start"] for w in windows), default=math.inf)
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/api/alerts", params={"model": MODEL, "limit": 500}).json()
        done = body.get("evaluated", {}).get(MODEL, -math.inf) >= last
        if done or time.monotonic() > deadline:
            return {(e["rule"], e.get("feature") or "") for e in body.get("events", []) if e.get("state") == "firing"}
        time.sleep(0.25)


def worse_segments(current: Sequence[Any]) -> dict[str, list[str]]:
    """Segments the report marks worse than the whole: {segment key: [metrics more than the report's gap below]}."""
    from mlwatch.outcomes import quality
    from mlwatch.report import _HIGHER_IS_BETTER, QUALITY_GAP

    mq = quality(list(current))
    overall = mq.to_dict()
    out: dict[str, list[str]] = {}
    for key, metrics in mq.segments().items():
        worse = [m for m in sorted(_HIGHER_IS_BETTER) if metrics.get(m) is not None and overall.get(m) is not None
                 and metrics[m] < overall[m] - QUALITY_GAP]
        if worse:
            out[key] = worse
    return out


# ---------------------------------------------------------------------------- the demo
def run_demo(
    *,
    calls: int = 4_000,
    out: Path | None = None,
    quiet: bool = False,
    report: Path | None = None,
    keep_running: bool = False,
    phase_seconds: float = 10.0,
) -> int:
    """Run the demo; 0 when every injected problem was found (and nothing else), 1 otherwise, 2 when it cannot run.

    `calls`: predictions in all (half healthy, half troubled). `out`: the directory for the
    collector's database, the logs, the report and ``demo.json`` (a summary of what was sent and
    found); default a new temporary directory. `report`: where to write the HTML report (default
    ``report.html`` in `out`). `keep_running`: leave the service and the collector's dashboard up
    until Ctrl-C. `phase_seconds`: spread each half of the traffic over about this many seconds
    (0: as fast as the service answers).
    """
    say: Callable[..., None] = (lambda *a: None) if quiet else print
    missing = _missing_extras()
    if missing:
        extras = sorted({_NEEDS[m] for m in missing})
        say(f"mlwatch demo needs {', '.join(missing)}: pip install \"mlwatch[demo]\" (extras {', '.join(extras)})")
        return 2
    directory = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mlwatch-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("collector.db*"):  # a fresh collector: counts must equal this run's requests
        stale.unlink()
    started = time.monotonic()
    code: int | None = None
    try:
        with _interrupts(), _children(directory) as (collector, service):
            say(f"mlwatch demo: collector at {collector.url} (SQLite in {directory}); fraud model served at {service.url}")
            code = _run(directory, collector, service, calls, say, quiet, report, phase_seconds, started)
            if keep_running:
                say(f"\nthe model service and the collector keep running (model API: {service.url}/docs); press Ctrl-C to stop them")
                while collector.alive() and service.alive():
                    time.sleep(0.5)
                say("a child process exited; stopping")
            return code
    except KeyboardInterrupt:  # the children were stopped on the way out of `_children`
        say("\nstopped")
        return code if code is not None else 130
    except Exception as exc:  # a child that did not start, an HTTP error: say so (the logs are in the directory)
        print(f"mlwatch demo failed: {type(exc).__name__}: {exc}\n(logs: {directory / 'collector.log'}, {directory / 'service.log'})",
              file=sys.stderr)
        return 1


def _run(
    directory: Path, collector: Any, service: Any, calls: int, say: Callable[..., None], quiet: bool,
    report: Path | None, phase_seconds: float, started: float,
) -> int:
    import httpx

    import mlwatch
    from mlwatch.report import load_profiles, write_report

    half = max(calls // 2, 50)
    rng = np.random.default_rng(_SEED)
    traffic = _Traffic(service.url, quiet)
    say(f"sending {2 * half:,} transactions over HTTP ({half:,} healthy, then {half:,} with trouble), labels following")
    rows, truth = transactions(rng, half)
    took = traffic.run("healthy", rows, truth, phase_seconds)
    say(f"  healthy:  {half:,} predictions in {took:.1f} s ({half / took:,.0f}/s) and their labels")
    boundary = math.ceil(time.time() / WINDOW_SECONDS) * WINDOW_SECONDS  # the trouble starts with a new window
    time.sleep(max(0.0, boundary - time.time()) + 0.02)
    rows, truth = transactions(rng, half, troubled=True)
    took = traffic.run("troubled", rows, truth, phase_seconds)
    say(f"  troubled: {half:,} predictions in {took:.1f} s ({half / took:,.0f}/s) and their labels")
    t0 = time.monotonic()
    seen = _wait_until_stored(collector.url, traffic)
    say(f"  the collector had everything {time.monotonic() - t0:.1f} s later")

    with httpx.Client(base_url=collector.url, timeout=60) as client:
        reference = _profile(client, 0, boundary)
        current = [p for p in (_profile(client, boundary, segment=f"country={c}") for c in [*COUNTRIES, NEW_COUNTRY]) if p is not None]
        if reference is None or not current:
            say("the collector holds no profiles of the demo's model (see the logs in", directory, ")")
            return 1
        client.put(f"/api/models/{MODEL}/reference", content=reference.to_bytes(), params={"source": "mlwatch demo"}).raise_for_status()
        fired = _alerts_fired(client)
        before = _segment_quality(client, 0, boundary).get(f"country={QUALITY_SEGMENT}", {})
        after = _segment_quality(client, boundary).get(f"country={QUALITY_SEGMENT}", {})
        dashboard_ok = client.get("/").status_code == 200
    history = load_profiles(collector.url, model=MODEL)
    cur = mlwatch.merge(current)
    drift = mlwatch.drift(reference, cur)
    quality = mlwatch.check_quality(reference, cur)
    worse = worse_segments(current)
    report_path = write_report(report or directory / "report.html", reference, current, history=history,
                               title="mlwatch demo: a fraud model served over HTTP")

    flagged = {c.column for c in drift.columns if c.drifted and c.role == "input"} | {i.column for i in quality.issues if i.role == "input"}
    issues = {(i.column, i.check) for i in quality.issues}
    key = f"country={QUALITY_SEGMENT}"
    checks = {
        f"every request reached the collector ({traffic.predictions:,} predictions, {traffic.requests:,} requests, "
        f"{traffic.labels:,} labels)": (seen.get(MODEL), seen.get(_HTTP_MODEL), seen.get("labels"))
        == (traffic.predictions, traffic.requests, traffic.labels) and traffic.missing_ids == 0 and traffic.not_counted == 0,
        "amount: unit changed (euros -> cents): drift and values out of range": "amount" in drift.drifted_columns
        and any(col == "amount" and check in ("out_of_range", "outliers") for col, check in issues),
        f"country: new category {NEW_COUNTRY!r}": any(i.column == "country" and i.check == "new_categories" and NEW_COUNTRY in i.message
                                                   for i in quality.issues),
        "device_age: missing values rose": ("device_age", "missing_share") in issues,
        f"segment {key}: model quality dropped once labels arrived (f1 {before.get('f1', math.nan):.2f} -> "
        f"{after.get('f1', math.nan):.2f}, ROC AUC {before.get('roc_auc', math.nan):.2f} -> {after.get('roc_auc', math.nan):.2f})":
        list(worse) == [key] and after.get("f1", 1.0) < before.get("f1", 0.0) - 0.1,
        f"no false alarm on untouched features ({', '.join(UNTOUCHED)}) or other segments": not (flagged - set(INJECTED))
        and set(worse) <= {key},
        f"collector alert fired: {', '.join(f'{r} on {f}' for r, f in sorted(fired)) or 'none'}": fired == {("missing values", "device_age")},
        "dashboard served": dashboard_ok,
    }
    say(f"\n{traffic.predictions:,} predictions and {traffic.labels:,} labels in {time.monotonic() - started:.0f} s; "
        f"reference = the first half, current = the second half\n")
    say(drift)
    say("")
    say(quality)
    say("")
    for name, found in checks.items():
        say(f"  [{'found' if found else 'MISSED'}] {name}")
    say(f"\nHTML report: {report_path}")
    say(f"dashboard:   {collector.url}/?model={MODEL}  (reference uploaded; API at {collector.url}/api/models)")
    summary = {
        "requests": traffic.requests, "predictions": traffic.predictions, "labels": traffic.labels,
        "collector": seen, "boundary": boundary, "flagged_inputs": sorted(flagged), "worse_segments": worse,
        "drifted": drift.drifted_columns, "issues": sorted(f"{c}:{k}" for c, k in issues),
        "checks": checks, "report": str(report_path), "dashboard": f"{collector.url}/",
    }
    (directory / "demo.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(checks.values()) else 1
