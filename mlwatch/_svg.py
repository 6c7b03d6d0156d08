"""Small inline-SVG charts for the HTML report: paired bars and line/bar time series.

Why hand-written: the report must open offline as one file, and two chart shapes (reference vs
current bars, a series over windows) do not justify a plotting dependency. Every label that
reaches the markup goes through `html.escape` (column names and categories are untrusted).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

__all__ = ["REFERENCE_COLOR", "CURRENT_COLOR", "paired_bars", "series"]

REFERENCE_COLOR = "#8da0cb"
CURRENT_COLOR = "#e07b39"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(x: float) -> str:
    return f"{x:.1f}"


def _short(x: float) -> str:
    """A compact axis label: 3 significant digits, k/M suffixes for large numbers."""
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.3g}M"
    if ax >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:.4g}" if ax >= 1e3 else f"{x:.3g}"


def paired_bars(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    highlight: Sequence[bool] | None = None,
    width: int = 420,
    height: int = 170,
) -> str:
    """Reference and current shares side by side per bin or category (`highlight` marks bins in red)."""
    n = len(labels)
    top = max([*reference, *current, 1e-12])
    left, bottom, pad_top = 34, 34, 18
    plot_w, plot_h = width - left - 6, height - bottom - pad_top
    slot = plot_w / max(n, 1)
    bar = max(slot * 0.4, 1.0)
    parts = [
        f'<svg class="chart bars" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{_esc(title)}</title>',
        f'<line x1="{left}" y1="{pad_top + plot_h}" x2="{width - 4}" y2="{pad_top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{pad_top + 4}" class="tick" text-anchor="end">{top:.0%}</text>',
        f'<text x="{left - 4}" y="{pad_top + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    every = max(1, math.ceil(n / 8))
    labelled = {0, n - 1} | {i for i in range(0, n, every) if n - 1 - i >= every}
    for i in range(n):
        x0 = left + i * slot + (slot - 2 * bar) / 2
        for j, (value, color, cls) in enumerate(
            ((reference[i], REFERENCE_COLOR, "ref"), (current[i], CURRENT_COLOR, "cur"))
        ):
            h = plot_h * value / top
            fill = "#d62728" if cls == "cur" and highlight is not None and highlight[i] else color
            parts.append(
                f'<rect class="bar {cls}" x="{_num(x0 + j * bar)}" y="{_num(pad_top + plot_h - h)}" '
                f'width="{_num(bar)}" height="{_num(h)}" fill="{fill}"><title>{_esc(labels[i])}: '
                f'{"reference" if cls == "ref" else "current"} {value:.1%}</title></rect>'
            )
        if i in labelled:
            label = labels[i] if len(labels[i]) <= 10 else labels[i][:9] + "…"
            x, anchor = left + (i + 0.5) * slot, "middle"
            if i == n - 1 and n > 1:
                x, anchor = left + (i + 1) * slot, "end"  # keep the last label inside the picture
            parts.append(
                f'<text class="tick" x="{_num(x)}" y="{pad_top + plot_h + 13}" text-anchor="{anchor}">{_esc(label)}</text>'
            )
    parts.append(
        f'<rect x="{left}" y="{height - 12}" width="9" height="9" fill="{REFERENCE_COLOR}"/>'
        f'<text class="tick" x="{left + 12}" y="{height - 4}">reference</text>'
        f'<rect x="{left + 80}" y="{height - 12}" width="9" height="9" fill="{CURRENT_COLOR}"/>'
        f'<text class="tick" x="{left + 92}" y="{height - 4}">current</text></svg>'
    )
    return "".join(parts)


def series(
    xs: Sequence[float],
    ys: Sequence[float | None],
    *,
    title: str,
    kind: str = "line",
    threshold: float | None = None,
    percent: bool = False,
    width: int = 420,
    height: int = 150,
    color: str = CURRENT_COLOR,
) -> str:
    """One series over windows (`xs` epoch seconds) as a line or bars, with an optional threshold line."""
    left, bottom, pad_top = 48, 22, 14
    plot_w, plot_h = width - left - 8, height - bottom - pad_top
    vals = [y for y in ys if y is not None and math.isfinite(y)]
    top = max([*vals, threshold or 0.0]) or 1.0
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (x1 - x0) or 1.0
    n = len(xs)

    def px(x: float) -> float:
        return left + (plot_w * (x - x0) / span if n > 1 else plot_w / 2)

    def py(y: float) -> float:
        return pad_top + plot_h - plot_h * y / top

    fmt = (lambda v: f"{v:.0%}") if percent else _short
    parts = [
        f'<svg class="chart series" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{_esc(title)}</title>',
        f'<line x1="{left}" y1="{pad_top + plot_h}" x2="{width - 4}" y2="{pad_top + plot_h}" stroke="#999"/>',
        f'<text class="tick" x="{left - 4}" y="{pad_top + 4}" text-anchor="end">{_esc(fmt(top))}</text>',
        f'<text class="tick" x="{left - 4}" y="{pad_top + plot_h}" text-anchor="end">0</text>',
    ]
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{left}" x2="{width - 4}" y1="{_num(py(threshold))}" y2="{_num(py(threshold))}" '
            f'stroke="#d62728" stroke-dasharray="4 3"/>'
        )
    if kind == "bar":
        slot = plot_w / max(n, 1)
        w = max(slot * 0.7, 1.0)
        for i, y in enumerate(ys):
            if y is None or not math.isfinite(y):
                continue
            parts.append(
                f'<rect class="bar" x="{_num(left + slot * (i + 0.15))}" y="{_num(py(y))}" '
                f'width="{_num(w)}" height="{_num(pad_top + plot_h - py(y))}" fill="{color}"><title>{_esc(fmt(y))}</title></rect>'
            )
    else:
        pts = [(px(x), py(y)) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                + " ".join(f"{_num(a)},{_num(b)}" for a, b in pts)
                + '"/>'
            )
            parts.extend(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="2.5" fill="{color}"/>' for a, b in pts)
    if xs:
        for x, anchor in ((x0, "start"), (x1, "end")):
            parts.append(
                f'<text class="tick" x="{_num(px(x))}" y="{height - 6}" text-anchor="{anchor}">'
                f"{_esc(time.strftime('%H:%M:%S', time.gmtime(x)))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
