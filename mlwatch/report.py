"""`mlwatch report`: one self-contained HTML file of drift, data quality, latency and errors.

What: `build_report(reference, current)` renders a reference profile against the current
profiles (one or several windows) as a single HTML page: a summary, a per-feature table sortable
by drift score, a reference-vs-current plot per feature, latency and error panels, and series
over windows when several windows are given. `load_profiles` reads the current side from a
profile file, a directory of window files, or a collector URL.

Why this shape: the page must open anywhere, offline, and be attachable to a ticket, so CSS, JS
and SVG are inline and nothing is fetched. Plots are drawn from the sketches alone (histograms on
bins of the reference's range, frequency bars for categories): no raw data exists to draw from.
Every user-controlled string (model, column and category names) is escaped with `html.escape`.
The module is imported lazily by the CLI; `import mlwatch` does not load it.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlwatch import _svg
from mlwatch._errors import MlwatchError
from mlwatch._stats import SketchDistribution
from mlwatch.column import ColumnProfile
from mlwatch.drift import ColumnDrift, DriftReport, drift
from mlwatch.profile import Profile, merge
from mlwatch.quality_checks import QualityReport, check_quality

__all__ = ["WindowPoint", "build_report", "load_profiles", "window_series", "write_report"]

#: Equal-width bins over the reference's central range (plus under/overflow bins).
BINS = 20
#: Categories drawn per feature; the rest are summed into "(other)".
MAX_CATEGORIES = 12
#: Windows drawn in the series (the latest ones).
MAX_WINDOWS = 500
#: A segment's metric this far below the overall one is highlighted.
QUALITY_GAP = 0.1
_HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "tpr", "ndcg", "precision_at_k"})
#: Shown for a value that does not exist (an en dash).
DASH = "\u2013"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# ============================================================================ loading
def load_profiles(source: str, *, model: str | None = None, token: str | None = None, timeout: float = 30.0) -> list[Profile]:
    """Profiles from a ``.mlw`` file, a directory of them (searched recursively), or a collector URL.

    With a collector URL (``http(s)://host:port``) the windows of `model` are fetched one by one
    (``/api/models/{model}/windows`` then ``.../profile?format=mlw`` per window, the latest
    `MAX_WINDOWS`). Only `model`'s profiles are kept when a model is given.
    """
    if source.startswith(("http://", "https://")):
        if model is None:
            raise MlwatchError("reading from a collector needs the model name (the reference's model is used by the CLI)")
        return _from_collector(source.rstrip("/"), model, token, timeout)
    path = Path(source)
    if path.is_dir():
        profiles = [Profile.load(p) for p in sorted(path.rglob("*.mlw"))]
    elif path.is_file():
        profiles = [Profile.load(path)]
    else:
        raise MlwatchError(f"no such file or directory: {source}")
    if model is not None:
        profiles = [p for p in profiles if p.model == model]
    if not profiles:
        raise MlwatchError(f"no profiles found in {source}" + (f" for model {model!r}" if model else ""))
    return profiles


def _from_collector(base: str, model: str, token: str | None, timeout: float) -> list[Profile]:
    import urllib.parse

    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    quoted = urllib.parse.quote(model, safe="")
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        resp = client.get(f"/api/models/{quoted}/windows", params={"start": "0"})
        if resp.status_code != 200:
            raise MlwatchError(f"collector {base}: {resp.status_code} {resp.text[:200]}")
        wins = resp.json()["windows"][-MAX_WINDOWS:]
        out = []
        for w in wins:
            r = client.get(
                f"/api/models/{quoted}/profile",
                params={"start": repr(w["window_start"]), "end": repr(w["window_end"]), "format": "mlw"},
            )
            if r.status_code != 200:
                raise MlwatchError(f"collector {base}: {r.status_code} {r.text[:200]}")
            out.append(Profile.from_bytes(r.content))
    if not out:
        raise MlwatchError(f"collector {base} has no windows of model {model!r}")
    return out


# ============================================================================ analysis
@dataclass(frozen=True)
class WindowPoint:
    """One window of the current side: its traffic and its drift against the reference."""

    start: float
    calls: int
    rows: int
    errors: int
    latency_p50: float | None
    latency_p99: float | None
    drift_share: float
    drifted: tuple[str, ...]
    quality_issues: int


def window_series(reference: Profile, current: Sequence[Profile], **drift_options: Any) -> list[WindowPoint]:
    """Per window start (profiles of one window merged across segments and replicas), oldest first."""
    groups: dict[float, list[Profile]] = {}
    for p in current:
        if p.window_start is not None:
            groups.setdefault(p.window_start, []).append(p)
    out = []
    for start in sorted(groups)[-MAX_WINDOWS:]:
        w = merge(groups[start])
        report = drift(reference, w, **drift_options)
        q50 = q99 = None
        if w.latency is not None and not w.latency.is_empty():
            q = w.latency.quantiles([0.5, 0.99])
            q50, q99 = float(q[0]), float(q[1])
        out.append(
            WindowPoint(
                start=start, calls=w.calls, rows=w.rows, errors=w.error_count, latency_p50=q50, latency_p99=q99,
                drift_share=report.share, drifted=tuple(report.drifted_columns),
                quality_issues=len(check_quality(reference, w).issues),
            )
        )
    return out


def _numeric_dist(col: ColumnProfile) -> SketchDistribution | None:
    if col.kind == "text":
        return SketchDistribution.from_kll(col.text_length)
    return SketchDistribution.from_summary(col.numeric) if col.numeric is not None else None


def _numeric_bins(ref: SketchDistribution, cur: SketchDistribution | None) -> tuple[list[str], list[float], list[float], list[bool]]:
    lo, hi = (float(v) for v in ref.quantiles([0.005, 0.995]))
    if not hi > lo:
        lo, hi = ref.min - 0.5, ref.max + 0.5
    edges = np.linspace(lo, hi, BINS + 1)

    def shares(d: SketchDistribution | None) -> tuple[float, list[float], float]:
        if d is None:
            return 0.0, [0.0] * BINS, 0.0
        below = float(d.cdf_below(edges[0])[0])
        cdf = d.cdf(edges)
        inner = [float(cdf[0]) - below, *np.diff(cdf).tolist()]
        inner = [inner[0] + inner[1], *inner[2:]]  # the first bin is closed on the left
        return below, [max(v, 0.0) for v in inner], max(1.0 - float(cdf[-1]), 0.0)

    r_lo, r_in, r_hi = shares(ref)
    c_lo, c_in, c_hi = shares(cur)
    labels = [_svg._short((a + b) / 2) for a, b in itertools.pairwise(edges)]
    ref_v, cur_v, flag = list(r_in), list(c_in), [False] * BINS
    if max(r_lo, c_lo) > 5e-4:
        labels, ref_v, cur_v, flag = [f"<{_svg._short(lo)}", *labels], [r_lo, *ref_v], [c_lo, *cur_v], [True, *flag]
    if max(r_hi, c_hi) > 5e-4:
        labels, ref_v, cur_v, flag = [*labels, f">{_svg._short(hi)}"], [*ref_v, r_hi], [*cur_v, c_hi], [*flag, True]
    return labels, ref_v, cur_v, flag


def _category_bars(ref: ColumnProfile, cur: ColumnProfile | None) -> tuple[list[str], list[float], list[float], list[bool]]:
    rc, cc = ref.category_counts(), (cur.category_counts() if cur is not None else {})
    rn, cn = sum(rc.values()) or 1, sum(cc.values()) or 1
    cats = sorted(set(rc) | set(cc), key=lambda c: (-max(rc.get(c, 0) / rn, cc.get(c, 0) / cn), c))
    shown, rest = cats[:MAX_CATEGORIES], cats[MAX_CATEGORIES:]
    labels = list(shown)
    ref_v = [rc.get(c, 0) / rn for c in shown]
    cur_v = [cc.get(c, 0) / cn for c in shown]
    flag = [c not in rc for c in shown]
    if rest:
        labels.append("(other)")
        ref_v.append(sum(rc.get(c, 0) for c in rest) / rn)
        cur_v.append(sum(cc.get(c, 0) for c in rest) / cn)
        flag.append(any(c not in rc for c in rest))
    return labels, ref_v, cur_v, flag


def _feature_plot(name: str, ref: ColumnProfile | None, cur: ColumnProfile | None) -> str:
    if ref is None:
        return '<p class="muted">not in the reference: nothing to compare with</p>'
    title = f"{name}: reference vs current"
    if ref.kind in ("numeric", "text"):
        d_ref = _numeric_dist(ref)
        if d_ref is None:
            return '<p class="muted">no finite values in the reference</p>'
        labels, r, c, flag = _numeric_bins(d_ref, _numeric_dist(cur) if cur is not None else None)
        note = "text length; " if ref.kind == "text" else ""
        return _svg.paired_bars(labels, r, c, title=title, highlight=flag) + (
            f'<p class="muted">{note}share of values per bin of the reference range; red: outside it</p>'
        )
    if ref.kind == "categorical":
        labels, r, c, flag = _category_bars(ref, cur)
        return _svg.paired_bars(labels, r, c, title=title, highlight=flag) + (
            '<p class="muted">share of values per category; red: not seen in the reference</p>'
        )
    return f'<p class="muted">no plot for kind {_esc(ref.kind)}</p>'


# ============================================================================ rendering
def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    return format(x, spec)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def _latency(p: Profile) -> dict[str, float] | None:
    if p.latency is None or p.latency.is_empty():
        return None
    q = p.latency.quantiles([0.5, 0.9, 0.99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(p.latency.max)}


def _feature_rows(report: DriftReport, quality: QualityReport, ref: Profile, cur: Profile) -> tuple[str, str]:
    issues: dict[tuple[str, str], list[str]] = {}
    for i in quality.issues:
        issues.setdefault((i.role, i.column), []).append(i.check)
    rows, cards = [], []
    seen: set[tuple[str, str]] = set()
    for idx, c in enumerate(sorted(report.columns, key=_sort_key)):
        key = (c.role, c.column)
        seen.add(key)
        cols_ref = ref.columns if c.role == "input" else ref.outputs
        cols_cur = cur.columns if c.role == "input" else cur.outputs
        rows.append(_row(idx, c, issues.get(key, []), cols_ref.get(c.column), cols_cur.get(c.column)))
        cards.append(_card(idx, c, issues.get(key, []), cols_ref.get(c.column), cols_cur.get(c.column)))
    return "".join(rows), "".join(cards)


def _sort_key(c: ColumnDrift) -> tuple[int, float, str]:
    return (0 if c.drifted else 1, -(c.value if c.value is not None and math.isfinite(c.value) else -1.0), c.column)


def _row(idx: int, c: ColumnDrift, issues: list[str], ref: ColumnProfile | None, cur: ColumnProfile | None) -> str:
    score = c.value if c.value is not None and math.isfinite(c.value) else -1.0
    verdict = "drifted" if c.drifted else ("ok" if c.status == "ok" else c.status.replace("_", " "))
    miss_r = f"{ref.missing_share:.1%}" if ref is not None else DASH
    miss_c = f"{cur.missing_share:.1%}" if cur is not None else DASH
    return (
        f'<tr class="feature-row{" drifted" if c.drifted else ""}" data-feature="{_esc(c.column)}" '
        f'data-drifted="{"true" if c.drifted else "false"}">'
        f'<td data-sort="{_esc(c.column)}"><a href="#f{idx}">{_esc(c.column)}</a></td>'
        f'<td data-sort="{c.role}">{c.role}</td><td data-sort="{_esc(c.kind)}">{_esc(c.kind)}</td>'
        f'<td data-sort="{_esc(c.method or "")}">{_esc(c.method or DASH)}</td>'
        f'<td class="num" data-sort="{score!r}">{_fmt(c.value)}</td>'
        f'<td class="num" data-sort="{c.threshold if c.threshold is not None else -1!r}">{_fmt(c.threshold)}'
        f'{" (p)" if c.threshold_on == "p_value" else ""}</td>'
        f'<td class="num" data-sort="{c.p_value if c.p_value is not None else -1!r}">{_fmt(c.p_value)}</td>'
        f'<td data-sort="{0 if c.drifted else 1}"><span class="badge {"bad" if c.drifted else "good"}">{_esc(verdict)}</span></td>'
        f'<td data-sort="{miss_c}">{miss_r} → {miss_c}</td>'
        f'<td data-sort="{len(issues)}">{_esc(", ".join(issues)) or DASH}</td></tr>'
    )


def _card(idx: int, c: ColumnDrift, issues: list[str], ref: ColumnProfile | None, cur: ColumnProfile | None) -> str:
    verdict = "drifted" if c.drifted else ("no drift" if c.status == "ok" else c.status.replace("_", " "))
    scores = ", ".join(f"{k} {_fmt(v)}" for k, v in c.scores.items() if isinstance(v, float) and k != "ks_resolution")
    return (
        f'<section class="card feature{" drifted" if c.drifted else ""}" id="f{idx}" data-feature="{_esc(c.column)}">'
        f'<h3>{_esc(c.column)} <small>{c.role} · {_esc(c.kind)}</small> '
        f'<span class="badge {"bad" if c.drifted else "good"}">{_esc(verdict)}</span></h3>'
        f"{_feature_plot(c.column, ref, cur)}"
        f'<p class="small">{_esc(c.method or "")} {_fmt(c.value)}; {_esc(scores)}'
        f"{'; quality: ' + _esc(', '.join(issues)) if issues else ''}</p>"
        f'{f"<p class=small>{_esc(c.note)}</p>" if c.note else ""}</section>'
    )


def _cards_summary(report: DriftReport, quality: QualityReport, cur: Profile, mq: Mapping[str, float]) -> str:
    lat = _latency(cur)
    err_rate = cur.error_count / cur.calls if cur.calls else 0.0
    items = [
        ("Dataset drift", "yes" if report.dataset_drift else "no", "bad" if report.dataset_drift else "good",
         f"{report.share:.0%} of features drifted (threshold {report.drift_share:.0%})", "dataset-drift"),
        ("Drifted features", f"{report.n_drifted} / {report.n_columns}", "bad" if report.n_drifted else "good",
         "compared against the reference", "n-drifted"),
        ("Data-quality problems", str(len(quality.issues)), "bad" if quality.issues else "good",
         f"in {len(quality.columns_with_issues)} column(s)", "n-quality"),
        ("Calls", f"{cur.calls:,}" if cur.calls else f"{cur.rows:,} rows", "", f"errors {cur.error_count:,} ({err_rate:.2%})", "calls"),
        ("Latency p50 / p99", f"{_ms(lat['p50'])} / {_ms(lat['p99'])}" if lat else DASH, "", "current, per call", "latency"),
    ]
    key = next((k for k in ("accuracy", "f1", "rmse", "mae", "ndcg") if mq.get(k) is not None), None)
    if key is not None:
        items.append((f"Model {key}", _fmt(mq[key]), "", f"{mq.get('n_labeled', 0):,.0f} labeled outcomes", "model-quality"))
    return "".join(
        f'<div class="stat {cls}" id="stat-{sid}"><div class="label">{_esc(label)}</div>'
        f'<div class="value">{_esc(value)}</div><div class="small">{_esc(sub)}</div></div>'
        for label, value, cls, sub, sid in items
    )


def _quality_table(quality: QualityReport) -> str:
    if not quality.issues:
        return '<p class="good-text">No data-quality problems.</p>'
    rows = "".join(
        f'<tr class="quality-row"><td>{_esc(i.column)}</td><td>{i.role}</td><td>{_esc(i.check)}</td>'
        f'<td class="num">{_fmt(i.value)}</td><td class="num">{_fmt(i.threshold)}</td><td>{_esc(i.message)}</td></tr>'
        for i in quality.issues
    )
    return (
        '<table class="quality"><thead><tr><th>column</th><th>role</th><th>check</th><th>value</th>'
        f"<th>threshold</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _ops_panel(ref: Profile, cur: Profile) -> str:
    rows = []
    for label, p in (("reference", ref), ("current", cur)):
        lat = _latency(p)
        rows.append(
            f"<tr><td>{label}</td><td class=num>{p.calls:,}</td><td class=num>{p.error_count:,}</td>"
            f"<td class=num>{(p.error_count / p.calls if p.calls else 0.0):.2%}</td>"
            + "".join(f"<td class=num>{_ms(lat[k]) if lat else DASH}</td>" for k in ("p50", "p90", "p99", "max"))
            + f"<td class=num>{p.dropped:,}</td></tr>"
        )
    errors = "".join(
        f"<tr><td>{_esc(name)}</td><td class=num>{n:,}</td></tr>"
        for name, n in sorted(cur.errors.items(), key=lambda kv: -kv[1])
    )
    return (
        '<table class="ops"><thead><tr><th></th><th>calls</th><th>errors</th><th>error rate</th><th>p50</th><th>p90</th>'
        f'<th>p99</th><th>max</th><th>dropped</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        + (
            f'<h3>Errors by type (current)</h3><table class="errors"><thead><tr><th>exception</th><th>count</th></tr></thead>'
            f"<tbody>{errors}</tbody></table>"
            if errors
            else '<p class="muted">No errors in the current data.</p>'
        )
    )


def _model_quality(windows: Sequence[Profile]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall and per-segment metrics from the outcomes in the profiles ({} when there are none)."""
    try:
        from mlwatch.outcomes import quality
    except ImportError:  # model quality is optional: the report works without it
        return {}, {}
    mq = quality(list(windows))
    overall = mq.to_dict()
    if not overall.get("n_labeled"):
        return {}, {}
    return overall, mq.segments()


def _model_quality_panel(overall: Mapping[str, float], segments: Mapping[str, Mapping[str, float]]) -> str:
    if not overall:
        return ""
    columns = [("all", overall), *[(k or "(no segment)", v) for k, v in list(segments.items())[:MAX_CATEGORIES] if k]]
    names = [n for n in overall if "[" not in n]  # per-class rows are in the API; the page keeps the summary

    def cell(name: str, metrics: Mapping[str, float]) -> str:
        value = metrics.get(name)
        if value is None:
            return f'<td class="num">{DASH}</td>'
        if name.startswith(("n_", "support")):
            return f'<td class="num">{value:,.0f}</td>'
        worse = name in _HIGHER_IS_BETTER and value < overall.get(name, value) - QUALITY_GAP
        return f'<td class="num{" worse" if worse else ""}">{_fmt(value)}</td>'

    head = "".join(f"<th>{_esc(c)}</th>" for c, _ in columns)
    body = "".join(
        f'<tr class="model-quality-row"><td>{_esc(n)}</td>' + "".join(cell(n, m) for _, m in columns) + "</tr>" for n in names
    )
    return (
        "<h2>Model quality <small>from the outcomes (labels) logged for these windows, overall and per segment; "
        f"red: a segment more than {QUALITY_GAP:g} below the whole</small></h2>"
        f'<table class="model-quality" id="model-quality"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _series_panel(points: Sequence[WindowPoint], drift_share: float) -> str:
    if len(points) < 2:
        return ""
    xs = [p.start for p in points]
    p99s = [p.latency_p99 for p in points if p.latency_p99 is not None]
    unit, scale = ("ms", 1e3) if not p99s or max(p99s) >= 1e-3 else ("µs", 1e6)
    charts = [
        ("Share of drifted features", _svg.series(xs, [p.drift_share for p in points], title="share of drifted features",
                                                  threshold=drift_share, percent=True)),
        ("Calls per window", _svg.series(xs, [float(p.calls or p.rows) for p in points], title="calls per window",
                                          kind="bar", color=_svg.REFERENCE_COLOR)),
        ("Data-quality problems per window", _svg.series(xs, [float(p.quality_issues) for p in points],
                                                          title="data-quality problems", kind="bar", color="#d62728")),
        (f"Latency p99 per window ({unit})", _svg.series(xs, [None if p.latency_p99 is None else p.latency_p99 * scale for p in points],
                                                          title=f"latency p99 ({unit})")),
        ("Errors per window", _svg.series(xs, [float(p.errors) for p in points], title="errors per window", kind="bar",
                                          color="#d62728")),
    ]
    body = "".join(f'<div class="card"><h3>{_esc(t)}</h3>{svg}</div>' for t, svg in charts)
    return f'<h2>Over time <small>{len(points)} windows, each against the reference</small></h2><div class="grid">{body}</div>'


CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}header p{margin:2px 0 0;color:#b8c0cc;font-size:13px}
main{max-width:1320px;margin:0 auto;padding:16px 28px 40px}h2{font-size:17px;margin:26px 0 10px}h2 small,h3 small{color:#778;font-weight:normal;font-size:12px}
h3{font-size:14px;margin:0 0 6px}.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.stat{background:#fff;border-radius:8px;padding:12px 14px;border-left:5px solid #c9ced6}.stat.bad{border-left-color:#d62728}.stat.good{border-left-color:#2ca02c}
.stat .label{color:#667;font-size:12px;text-transform:uppercase;letter-spacing:.04em}.stat .value{font-size:22px;font-weight:600}
.small{font-size:12px;color:#556}.muted{color:#889;font-size:12px;margin:2px 0}.good-text{color:#2ca02c}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:8px;overflow:hidden}th,td{padding:6px 9px;text-align:left;border-bottom:1px solid #eceef2;font-size:13px}
th{background:#eef0f4;font-weight:600;white-space:nowrap}table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e2e6ee}
th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}td.num{text-align:right;font-variant-numeric:tabular-nums}td.worse{color:#b3191b;font-weight:600;background:#fde2e2}tr.drifted td:first-child{border-left:4px solid #d62728}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}.badge.bad{background:#fde2e2;color:#b3191b}.badge.good{background:#e0f3e0;color:#1f7a1f}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px}.card{background:#fff;border-radius:8px;padding:12px 14px}
.card.drifted{box-shadow:inset 0 3px 0 #d62728}svg.chart{width:100%;max-width:640px;height:auto;display:block}svg .tick{font-size:10px;fill:#667}
a{color:#2456a6;text-decoration:none}ul.drifted-list{margin:6px 0 0;padding-left:20px}footer{color:#889;font-size:12px;margin-top:30px}
"""

JS = """
(function(){
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = table.querySelectorAll('th');
    heads.forEach(function(th, col){
      th.addEventListener('click', function(){ sort(!th.classList.contains('asc')); });
      if (th.hasAttribute('data-default-sort')) { sort(th.getAttribute('data-default-sort') === 'asc'); }
      function sort(asc){
        heads.forEach(function(h){ h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = a.cells[col].getAttribute('data-sort'), y = b.cells[col].getAttribute('data-sort');
          var nx = parseFloat(x), ny = parseFloat(y);
          var c = (!isNaN(nx) && !isNaN(ny) && String(nx) !== 'NaN') ? nx - ny : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      }
    });
  });
  document.documentElement.setAttribute('data-ready', '1');
})();
"""


def build_report(
    reference: Profile,
    current: Profile | Sequence[Profile],
    *,
    title: str | None = None,
    drift_share: float = 0.5,
    method: str = "auto",
    history: Sequence[Profile] | None = None,
) -> str:
    """The report as one HTML string (self-contained: no network needed to open it).

    The series over windows show `history` when given (e.g. healthy and troubled windows alike),
    else the current windows.
    """
    windows = [current] if isinstance(current, Profile) else list(current)
    if not windows:
        raise MlwatchError("the report needs at least one current profile")
    cur = merge(windows)
    report = drift(reference, cur, drift_share=drift_share, method=method)
    quality = check_quality(reference, cur)
    timeline = list(history) if history is not None else windows
    points = window_series(reference, timeline, drift_share=drift_share, method=method) if len(timeline) > 1 else []
    rows, cards = _feature_rows(report, quality, reference, cur)
    mq_overall, mq_segments = _model_quality(windows)
    heading = title or f"mlwatch report: {cur.model}"
    span = ""
    if cur.window_start is not None and cur.window_end is not None:
        span = (
            f"current {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(cur.window_start))} {DASH} "
            f"{time.strftime('%H:%M:%S', time.gmtime(cur.window_end))} UTC · "
        )
    drifted = "".join(f'<li class="drifted-feature">{_esc(name)}</li>' for name in report.drifted_columns)
    head_cells = "".join(
        f'<th{" data-default-sort=desc" if h == "drift score" else ""}>{h}</th>' for h in ("feature", "role", "kind", "method", "drift score", "threshold", "p-value", "verdict",
                                 "missing ref → cur", "quality")
    )
    version = f" · version {_esc(cur.version)}" if cur.version else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(heading)}</title><style>{CSS}</style></head>
<body><header><h1>{_esc(heading)}</h1>
<p>model {_esc(cur.model)}{version} · {span}{len(windows)} profile(s) against a reference of {reference.rows:,} rows ·
generated {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC</p></header>
<main>
<div class="stats">{_cards_summary(report, quality, cur, mq_overall)}</div>
<h2>Drifted features</h2>
{f'<ul class="drifted-list" id="drifted-features">{drifted}</ul>' if drifted else '<p class="good-text" id="drifted-features">None.</p>'}
<h2>Features <small>click a header to sort; drift score is the chosen method's statistic</small></h2>
<table class="sortable features" id="features"><thead><tr>{head_cells}</tr></thead><tbody>{rows}</tbody></table>
<h2>Data quality</h2>
{_quality_table(quality)}
{_model_quality_panel(mq_overall, mq_segments)}
<h2>Latency and errors</h2>
{_ops_panel(reference, cur)}
{_series_panel(points, drift_share)}
<h2>Distributions <small>reference vs current, drawn from the sketches</small></h2>
<div class="grid">{cards}</div>
<footer>mlwatch · drift and quality computed from mergeable sketches; no raw data was kept.</footer>
</main><script>{JS}</script></body></html>
"""


def write_report(
    path: str | os.PathLike[str],
    reference: Profile,
    current: Profile | Sequence[Profile],
    **options: Any,
) -> Path:
    """Render `build_report` into `path` (written atomically); returns the path."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(build_report(reference, current, **options), encoding="utf-8")
    os.replace(tmp, target)
    return target
