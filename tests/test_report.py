"""The HTML report: content from the analysis, escaping, self-containment, the CLI, and a real browser."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import needs_chromium, render

import mlwatch
from mlwatch.cli import main
from mlwatch.report import build_report, load_profiles, window_series, write_report

DOCS = Path(__file__).resolve().parent.parent / "docs"
EVIL = '<script>alert("x")</script>'


def _rows(rng: np.random.Generator, n: int, *, troubled: bool) -> dict[str, Any]:
    amount = rng.lognormal(3.5, 1.0, n) * (100.0 if troubled else 1.0)
    device_age = rng.gamma(2.0, 200.0, n)
    if troubled:
        device_age[rng.random(n) < 0.3] = np.nan
    countries = ["DE", "FR", "IT", "ES"] + (["BR", EVIL] if troubled else [])
    return {
        "amount": amount,
        "country": rng.choice(countries, n).tolist(),
        "device_age": device_age,
        "hour": rng.integers(0, 24, n).astype(float),
        EVIL: rng.normal(0.0, 1.0, n),
    }


def _windows(rng: np.random.Generator, n_windows: int = 6, n: int = 1200) -> list[mlwatch.Profile]:
    out = []
    for w in range(n_windows):
        p = mlwatch.profile(_rows(rng, n, troubled=w >= n_windows // 2), model="fraud")
        p.window_start, p.window_end = 1_800_000_000.0 + 60 * w, 1_800_000_060.0 + 60 * w
        p.calls = n
        p.errors = {"ValueError": w}
        p.record_latency(rng.gamma(2.0, 0.002 * (1 + (w >= n_windows // 2)), n))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def profiles() -> tuple[mlwatch.Profile, list[mlwatch.Profile]]:
    """A reference and six current windows of 1,200 calls (distance methods: stable verdicts), the last three troubled."""
    rng = np.random.default_rng(7)
    return mlwatch.profile(_rows(rng, 3000, troubled=False), model="fraud"), _windows(rng)


class _Facts(HTMLParser):
    """Collects what the tests check: drifted names, feature rows, bars per feature card, external refs."""

    def __init__(self) -> None:
        super().__init__()
        self.drifted_list: list[str] = []
        self.rows: list[tuple[str, str]] = []
        self.bars: dict[str, int] = {}
        self.external: list[str] = []
        self.scripts = 0
        self._in_li = False
        self._card: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        for key in ("src", "href"):
            if (a.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(a[key] or "")
        if tag == "link":
            self.external.append(str(a))
        if tag == "script":
            self.scripts += 1
        if tag == "li" and "drifted-feature" in cls:
            self._in_li = True
            self.drifted_list.append("")
        if tag == "tr" and "feature-row" in cls:
            self.rows.append((a.get("data-feature") or "", a.get("data-drifted") or ""))
        if tag == "section" and "feature" in cls:
            self._card = a.get("data-feature") or ""
            self.bars[self._card] = 0
        if tag == "rect" and "bar" in cls and self._card is not None:
            self.bars[self._card] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._in_li = False
        if tag == "section":
            self._card = None

    def handle_data(self, data: str) -> None:
        if self._in_li:
            self.drifted_list[-1] += data


def _facts(page: str) -> _Facts:
    facts = _Facts()
    facts.feed(page)
    return facts


def test_report_names_exactly_the_drifted_features(profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """The page lists and flags exactly the columns `mlwatch.drift` finds drifted."""
    ref, cur = profiles
    expected = mlwatch.drift(ref, mlwatch.merge(cur)).drifted_columns
    assert {"amount", "country"} <= set(expected)
    facts = _facts(build_report(ref, cur))
    assert sorted(facts.drifted_list) == sorted(expected)
    assert sorted(name for name, d in facts.rows if d == "true") == sorted(expected)
    assert all(n > 0 for n in facts.bars.values()) and len(facts.bars) == len(facts.rows)


def test_report_escapes_untrusted_names(profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """Column, category and model names cannot inject markup: one script element, the report's own."""
    ref, cur = profiles
    page = build_report(ref, cur, title=EVIL)
    assert EVIL not in page
    assert html.escape(EVIL) in page
    assert _facts(page).scripts == 1


def test_report_is_self_contained(profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """No stylesheet, script, image or font is fetched from anywhere."""
    ref, cur = profiles
    page = build_report(ref, cur)
    assert _facts(page).external == []
    assert "@import" not in page and "url(" not in page


def test_window_series_sees_the_trouble_start(profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """Per-window drift is low before the trouble and high after; calls and errors are per window."""
    ref, cur = profiles
    points = window_series(ref, cur)
    assert [p.calls for p in points] == [1200] * 6
    assert [p.errors for p in points] == list(range(6))
    assert max(p.drift_share for p in points[:3]) < min(p.drift_share for p in points[3:])


def test_single_profile_report_has_no_series(profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """One current profile: summary, table and plots, but no over-time section."""
    ref, cur = profiles
    page = build_report(ref, cur[-1])
    assert "Over time" not in page and "feature-row" in page


def test_cli_report_from_directory_and_file(tmp_path: Path, profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """`mlwatch report` reads a directory of window files or one file and writes the HTML."""
    ref, cur = profiles
    ref.save(tmp_path / "ref.mlw")
    (tmp_path / "windows").mkdir()
    for i, p in enumerate(cur):
        p.save(tmp_path / "windows" / f"{i}.mlw")
    out = tmp_path / "r.html"
    assert main(["report", "--reference", str(tmp_path / "ref.mlw"), "--current", str(tmp_path / "windows"), "-o", str(out), "-q"]) == 0
    assert "Over time" in out.read_text()
    assert main(["report", "--reference", str(tmp_path / "ref.mlw"), "--current", str(tmp_path / "windows" / "0.mlw"), "-o", str(out), "-q"]) == 0
    assert main(["report", "--reference", str(tmp_path / "ref.mlw"), "--current", str(tmp_path / "nope"), "-o", str(out), "-q"]) == 2
    assert len(load_profiles(str(tmp_path / "windows"), model="fraud")) == 6


def test_import_mlwatch_does_not_load_the_report() -> None:
    """`import mlwatch` stays cheap: no report module, no template engine."""
    code = "import sys, mlwatch; print(sorted(m for m in sys.modules if m in ('mlwatch.report', 'mlwatch._svg', 'jinja2')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@needs_chromium
def test_report_in_chromium(tmp_path: Path, profiles: tuple[mlwatch.Profile, list[mlwatch.Profile]]) -> None:
    """Chromium renders the report without console errors, with bars drawn and the right drifted features."""
    ref, cur = profiles
    path = write_report(tmp_path / "report.html", ref, cur, title="mlwatch report: fraud model")
    shot = tmp_path / "report.png"
    page = render(path.as_uri(), screenshot=shot, size="1400,2400")
    assert page.console == []
    assert 'data-ready="1"' in page.dom  # the script ran to its end
    facts = _facts(page.dom)
    expected = mlwatch.drift(ref, mlwatch.merge(cur)).drifted_columns
    assert sorted(facts.drifted_list) == sorted(expected)
    assert sorted(name for name, d in facts.rows if d == "true") == sorted(expected)
    assert facts.bars and all(n > 0 for n in facts.bars.values())
    assert re.search(r'<th[^>]*data-default-sort="desc"[^>]*class="desc"', page.dom)  # the table script sorted on load
    assert shot.stat().st_size > 20_000
