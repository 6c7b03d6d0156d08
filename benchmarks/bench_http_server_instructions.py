"""Instructions per request of the real server: uvicorn serving `bench_http`'s FastAPI app, under callgrind.

Why: `bench_http.py`'s latencies and CPU times on this shared 2-core virtual machine swing by tens of
percent between rounds of a few seconds (the plain server's CPU per request ranged 291-578 µs in one
run), which is the size of what is measured. Instruction counts do not move with other jobs. Here
each variant's uvicorn process runs under ``valgrind --tool=callgrind`` with instrumentation off
while it starts and warms up; it is switched on (``callgrind_control -i on``) for a fixed number of
sequential keep-alive requests from a client in this process, then off, and counted per thread:
the event loop's thread (the request path, the server and the app) and mlwatch's aggregator thread
(batches of 4,096 requests, as under load: ``flush_interval`` is raised so that the slowed-down
server's drains are not tiny batches).

    python benchmarks/bench_http_server_instructions.py [--requests 4500]   # ~3 minutes; needs valgrind

Instructions are not nanoseconds (a cache miss costs many, and callgrind runs the threads one at a
time, so GIL hand-overs cost nothing here): this is the work mlwatch adds, not its wall time.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_http import BODY

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "mlwatch")

_FACTORY = '''
import sys, tempfile
sys.path.insert(0, {root!r})
from benchmarks import bench_http as b

def create_plain():
    return b.create_plain()

def create_mlwatch():
    import mlwatch
    app = b.create_mlwatch()
    mlwatch.configure(data_dir=tempfile.mkdtemp(prefix="mlwatch-bench-"), flush_interval=60.0)  # batches of 4,096
    return app
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(python: str, variant: str, requests: int, warmup: int, work: Path) -> dict[str, int]:
    """{thread number: instructions} while `requests` requests were served."""
    port = _free_port()
    out = work / f"cg-{variant}"
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", f"--callgrind-out-file={out}.%p",
        python, "-m", "uvicorn", f"cg_factory:create_{variant}", "--factory", "--app-dir", str(work),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]
    with open(work / f"{variant}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONHASHSEED="0"))
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{variant} server did not start: {(work / f'{variant}.log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        body = json.dumps(BODY, separators=(",", ":")).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def send(n: int) -> None:
            for _ in range(n):
                conn.request("POST", "/predict", body, {"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{variant} answered {response.status}")

        send(warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        send(requests)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(300)
    threads: dict[str, int] = {}
    for path in sorted(glob.glob(f"{out}.*")):
        totals = re.search(r"^totals:\s*(\d+)", Path(path).read_text(), re.M)
        if totals and int(totals.group(1)):
            threads[path.rsplit("-", 1)[-1]] = int(totals.group(1))
    return threads


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=4500, help="requests counted per variant (one aggregation batch is 4,096)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--python", default=sys.executable, help="the interpreter to run uvicorn with (a real binary, not a shim)")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-cg-") as tmp:
        work = Path(tmp)
        (work / "cg_factory.py").write_text(_FACTORY.format(root=str(ROOT)))
        for variant in VARIANTS:
            threads = count(args.python, variant, args.requests, args.warmup, work)
            ordered = sorted(threads.values(), reverse=True)  # the event loop's thread does the most
            out[variant] = {"loop_thread": ordered[0] / args.requests, "other_threads": sum(ordered[1:]) / args.requests}
            print(f"{variant:>8}: {out[variant]['loop_thread']:>12,.0f} instructions per request on the event loop's thread, "
                  f"{out[variant]['other_threads']:>10,.0f} on other threads", flush=True)
    plain, watched = out["plain"], out["mlwatch"]
    path = watched["loop_thread"] - plain["loop_thread"]
    total = path + watched["other_threads"] - plain["other_threads"]
    base = plain["loop_thread"] + plain["other_threads"]
    print(f"mlwatch adds {path:,.0f} on the request path and {total:,.0f} in all per request: "
          f"{path / base:.1%} and {total / base:.1%} of the plain server's {base:,.0f}")
    return out


if __name__ == "__main__":
    main()
