"""Headless Chromium for the page tests: the DOM after scripts ran, console output, a screenshot.

Why the command line and not Selenium or CDP: ``--dump-dom`` gives the DOM after the page's
scripts (``--virtual-time-budget`` waits for timers and fetches), ``--enable-logging=stderr``
prints every console message and uncaught exception as a ``CONSOLE`` line, and ``--screenshot``
renders a PNG; no driver or websocket client to install. Tests skip when chromium is absent
(``.ci/run`` installs Debian's package). Set ``MLWATCH_SCREENSHOTS=<dir>`` to keep the screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "Page", "needs_chromium", "render"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
]
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


@dataclass(frozen=True)
class Page:
    """What the browser saw: the final DOM and every console line (messages, errors, exceptions)."""

    dom: str
    console: list[str]


def _run(url: str, extra: list[str], budget_ms: int) -> tuple[str, str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="mlwatch-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--virtual-time-budget={budget_ms}", *extra, url],
            capture_output=True, text=True, timeout=120, check=False,
        )
    return proc.stdout, proc.stderr


def render(url: str, *, screenshot: Path | None = None, size: str = "1400,1000", budget_ms: int = 5000) -> Page:
    """Load `url` in headless Chromium; optionally save a screenshot of the first `size` pixels."""
    dom, log = _run(url, ["--dump-dom", f"--window-size={size}"], budget_ms)
    console = [m.group(1) for m in map(_CONSOLE.search, log.splitlines()) if m]
    if screenshot is not None:
        _, shot_log = _run(url, [f"--screenshot={screenshot}", f"--window-size={size}"], budget_ms)
        console += [m.group(1) for m in map(_CONSOLE.search, shot_log.splitlines()) if m]
        assert screenshot.exists(), shot_log[-2000:]
        keep = os.environ.get("MLWATCH_SCREENSHOTS")
        if keep:  # e.g. MLWATCH_SCREENSHOTS=/tmp/shots pytest ... to look at what the browser drew
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, Path(keep) / screenshot.name)
    return Page(dom, console)
