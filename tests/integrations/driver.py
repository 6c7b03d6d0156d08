"""A load driver run as its own process by the server tests: sends a plan of requests with httpx.

Usage: ``python driver.py BASE_URL PLAN.json CONCURRENCY``. The plan is a JSON list of requests
``{"method", "path", "json"?, "content"?, "headers"?, "disconnect"?}``; each thread uses its own
``httpx.Client``. Prints one JSON list to stdout: per request, in plan order, ``[status,
seconds]`` as the client saw them (status -1 for a request the client dropped on purpose: it reads
the response headers and closes the connection mid-body).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx


def _disconnect(base: str, path: str) -> None:
    """GET `path` over a raw socket, read the first bytes of the answer, and hang up."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        sock.recv(64)


def main() -> None:
    base, plan_path, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(plan_path) as fh:
        plan: list[dict[str, Any]] = json.load(fh)
    results: list[tuple[int, float] | None] = [None] * len(plan)
    next_index = iter(range(len(plan)))
    lock = threading.Lock()

    def worker() -> None:
        # No keep-alive: a server closes the connection after an unhandled exception, and a request
        # racing that close on a pooled connection would be lost (not the behaviour under test).
        with httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                req = plan[i]
                try:
                    if req.get("disconnect"):
                        _disconnect(base, req["path"])
                        results[i] = (-1, 0.0)
                        continue
                    t0 = time.perf_counter()
                    r = client.request(req.get("method", "GET"), req["path"], json=req.get("json"), content=req.get("content"), headers=req.get("headers"))
                    results[i] = (r.status_code, time.perf_counter() - t0)
                except Exception as exc:  # reported, and the test fails on the status
                    print(f"request {i} {req['path']}: {exc!r}", file=sys.stderr)
                    results[i] = (-2, 0.0)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
