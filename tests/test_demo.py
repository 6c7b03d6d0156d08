"""`mlwatch demo`: a model served over HTTP, trouble injected halfway, every problem found and shown, nothing left running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import mlwatch.demo
from mlwatch.demo import INJECTED, run_demo


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (the demo's children name its directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def _report_findings(page: str) -> tuple[dict[str, str], set[tuple[str, str]], set[str], set[str]]:
    """From the report's HTML: {drifted feature: role}, {(column, check)} of the quality table, the segments
    marked worse than the whole in the model-quality table, and every feature row's name."""
    rows = re.findall(r'<tr class="feature-row( drifted)?" data-feature="([^"]*)" data-drifted="(?:true|false)">.*?<td data-sort="(input|output)">', page)
    drifted = {name: role for flag, name, role in rows if flag}
    issues = set(re.findall(r'<tr class="quality-row"><td>([^<]*)</td><td>(?:input|output)</td><td>([^<]*)</td>', page))
    table = page.split('id="model-quality"', 1)[1].split("</table>", 1)[0]
    heads = re.findall(r"<th>([^<]*)</th>", table.split("</thead>", 1)[0])
    worse = set()
    for row in re.findall(r'<tr class="model-quality-row">(.*?)</tr>', table):
        cells = re.findall(r'<td( class="[^"]*")?>', row)
        worse |= {heads[i] for i, cls in enumerate(cells) if "worse" in cls}
    return drifted, issues, worse, {name for _, name, _ in rows}


@pytest.mark.slow
def test_demo_serves_finds_every_problem_and_cleans_up(tmp_path: Path) -> None:
    """`mlwatch demo --keep-running`: counts in the collector equal the requests sent, the report names exactly
    the injected problems, the dashboard and the service stay up, and Ctrl-C stops every process."""
    for module in ("starlette", "uvicorn", "fastapi", "sklearn"):
        pytest.importorskip(module)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mlwatch.cli", "demo", "--out", str(tmp_path), "--keep-running"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        while not any("press Ctrl-C" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() - t0 < 120, "the demo took more than two minutes:\n" + "".join(lines)
            time.sleep(0.2)
        output = "".join(lines)
        assert "MISSED" not in output and output.count("[found]") == 8, output
        summary = json.loads((tmp_path / "demo.json").read_text())
        collector = summary["dashboard"].rstrip("/")
        service = re.search(r"fraud model served at (http://127\.0\.0\.1:\d+)", output)
        assert service is not None
        with httpx.Client(base_url=collector, timeout=30) as client:  # the live collector, asked independently
            calls = {m: sum(w["calls"] for w in client.get(f"/api/models/{m}/windows", params={"start": 0}).json()["windows"])
                     for m in ("fraud", "http.server")}
            labeled = client.get("/api/models/fraud/model-quality", params={"start": 0}).json()["overall"]["n_labeled"]
            assert client.get("/").status_code == 200
            alerts = client.get("/api/alerts", params={"model": "fraud"}).json()
            fired = {(e["rule"], e["feature"]) for e in alerts["events"] if e["state"] == "firing"}
        assert fired == {("missing values", "device_age")}  # the collector's rule, on the one feature whose missing share rose
        assert calls == {"fraud": summary["predictions"], "http.server": summary["requests"]} and summary["predictions"] == 4000
        assert labeled == summary["labels"] == 4000
        assert httpx.get(service.group(1) + "/healthz", timeout=10).status_code == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        reader.join(10)
    assert code == 0, "".join(lines)
    assert _processes_mentioning(str(tmp_path)) == []  # the collector and the service were stopped

    drifted, issues, worse, features = _report_findings((tmp_path / "report.html").read_text())
    inputs = {f for f, role in drifted.items() if role == "input"} | {column for column, _ in issues}
    assert inputs == set(INJECTED)
    assert issues == {("amount", "out_of_range"), ("amount", "outliers"), ("country", "new_categories"), ("device_age", "missing_share")}
    assert set(drifted) - inputs <= {"score", "prediction"}  # the model's outputs move with its inputs: a consequence, not a cause
    assert worse == {"country=FR"}  # the one segment whose fraud pattern changed
    assert features == {*INJECTED, *mlwatch.demo.UNTOUCHED, "score", "prediction"}


def test_demo_stops_the_collector_when_the_service_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A service that cannot start ends the demo with a message and exit code 1; the collector already started is stopped."""
    pytest.importorskip("starlette")
    monkeypatch.setattr(mlwatch.demo, "_SERVICE_MODULE", "mlwatch._no_such_module")
    assert run_demo(out=tmp_path, quiet=True) == 1
    assert "the model service exited" in capsys.readouterr().err
    assert _processes_mentioning(str(tmp_path)) == []


def test_demo_without_its_extras(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without scikit-learn (or the collector, or FastAPI) the demo says which extra to install and starts nothing."""
    monkeypatch.setattr(mlwatch.demo, "_missing_extras", lambda: ["sklearn"])
    assert run_demo(out=tmp_path) == 2
    assert 'pip install "mlwatch[demo]"' in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
