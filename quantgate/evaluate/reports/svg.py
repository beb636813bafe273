"""Small inline-SVG charts for the HTML report: interval dots, overlaid histograms, step CDFs.

Written by hand instead of with a plotting library so the HTML report stays one self-contained
file with no JavaScript and no dependency: each function returns an ``<svg>`` string with a
``viewBox`` (it scales with the page), a ``<title>`` for screen readers and every label
HTML-escaped. Only what the report needs: linear axes with 1-2-5 ticks, a legend, no
interactivity (hover titles on interval rows give the exact numbers).

Trade-offs: a CDF of many thousands of latencies is drawn through at most ``max_points``
evenly spaced quantiles, which keeps the file small and is invisible at this resolution; the
histograms take their bins from the caller so the KL plot keeps the report's own log10 edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["IntervalRow", "Series", "bins_for", "histogram", "interval_chart", "nice_ticks", "step_cdf"]

_FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="11"'


@dataclass(frozen=True)
class Series:
    """One named, coloured series of values (histogram counts, or raw values for a CDF)."""

    name: str
    values: Sequence[float]
    color: str
    outline: bool = False  # histogram: draw as an unfilled step outline (reads well over a filled series)


@dataclass(frozen=True)
class IntervalRow:
    """One scope of the interval chart: an estimate with its interval per series (None: no data)."""

    label: str
    points: Sequence[tuple[float, float, float] | None]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def bins_for(values: Sequence[float], max_bins: int = 30, integer: bool = True) -> list[float]:
    """Histogram edges spanning ``values``: unit-wide (or wider) for integers, else equal-width."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return []
    lo, hi = min(finite), max(finite)
    if integer:
        width = max(1, math.ceil((hi - lo + 1) / max_bins))
        start = math.floor(lo) - 0.5
        n = math.ceil((hi + 0.5 - start) / width)
        return [start + i * width for i in range(n + 1)]
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / max_bins for i in range(max_bins + 1)]


def _counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        if not math.isfinite(v) or v < edges[0] or v > edges[-1]:
            continue
        lo, hi = 0, len(edges) - 1  # last bin closed on the right, like numpy
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if v >= edges[mid]:
                lo = mid
            else:
                hi = mid
        counts[lo] += 1
    return counts


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'class="chart" {_FONT}>', f"<title>{escape(title)}</title>"]


def _legend(series: Sequence[tuple[str, str]], x: float, y: float, outlined: Sequence[bool] = ()) -> list[str]:
    out = []
    for k, (name, color) in enumerate(series):
        hollow = k < len(outlined) and outlined[k]
        fill = 'fill="none" stroke-width="2"' if hollow else f'fill="{color}" fill-opacity="0.6"'
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" stroke="{color}" {fill}/>')
        out.append(f'<text x="{x + 14:.1f}" y="{y:.1f}">{escape(name)}</text>')
        x += 22 + 7 * len(name)
    return out


def _x_axis(ticks: Sequence[float], sx: Callable[[float], float], y: float, top: float,
            fmt: Callable[[float], str], label: str, mid: float) -> list[str]:
    out = [f'<line x1="{sx(ticks[0]):.1f}" y1="{y:.1f}" x2="{sx(ticks[-1]):.1f}" y2="{y:.1f}" stroke="#888"/>']
    for t in ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{escape(fmt(t))}</text>')
    out.append(f'<text x="{mid:.1f}" y="{y + 30:.1f}" text-anchor="middle" fill="#444">{escape(label)}</text>')
    return out


def _y_label(label: str, top: float, bottom: float) -> list[str]:
    mid = (top + bottom) / 2
    return [f'<text x="12" y="{mid:.1f}" text-anchor="middle" fill="#444" transform="rotate(-90 12 {mid:.1f})">'
            f"{escape(label)}</text>"] if label else []


def interval_chart(rows: Sequence[IntervalRow], names: Sequence[tuple[str, str]], title: str,
                   width: int = 760, label_width: int = 200) -> str:
    """Dot-and-whisker chart of proportions on [0, 1]: one band per row, one line per series."""
    band = 12 * max(1, len(names)) + 10
    top, bottom = 28, 40
    height = top + band * len(rows) + bottom
    left, right = label_width, width - 20
    ticks = [i / 10 for i in range(11)]

    def sx(v: float) -> float:
        return left + (right - left) * min(1.0, max(0.0, v))

    out = _svg_open(width, height, title) + _legend(names, left, 14)
    y_axis = top + band * len(rows)
    out += _x_axis(ticks, sx, y_axis, top, lambda t: f"{100 * t:.0f}%", "pass rate", (left + right) / 2)
    for i, row in enumerate(rows):
        y0 = top + band * i
        label = row.label if len(row.label) <= 30 else row.label[:29] + "\u2026"
        out.append(f'<text x="{left - 8}" y="{y0 + band / 2 + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        for j, ((name, color), point) in enumerate(zip(names, row.points)):
            if point is None:
                continue
            est, lo, hi = point
            y = y0 + 8 + 12 * j
            tip = f"{row.label} - {name}: {100 * est:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
            out.append(f"<g><title>{escape(tip)}</title>"
                       f'<line x1="{sx(lo):.1f}" y1="{y:.1f}" x2="{sx(hi):.1f}" y2="{y:.1f}" stroke="{color}" '
                       f'stroke-width="2"/><circle cx="{sx(est):.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/></g>')
    out.append("</svg>")
    return "\n".join(out)


def histogram(edges: Sequence[float], series: Sequence[Series], title: str, x_label: str,
              x_format: Callable[[float], str] = lambda v: f"{v:g}", y_label: str = "count", counted: bool = False,
              ticks: Sequence[float] | None = None, markers: Sequence[tuple[float, str]] = (),
              width: int = 760, height: int = 260) -> str:
    """Overlaid histograms on shared ``edges``; ``counted``: the series' values already are bin counts."""
    left, right, top, bottom = 58, width - 20, 28, 40
    all_counts = [list(s.values) if counted else _counts(s.values, edges) for s in series]
    peak = max((max(c) for c in all_counts if c), default=0) or 1
    lo, hi = edges[0], edges[-1]
    y_axis = height - bottom

    def sx(v: float) -> float:
        return left + (right - left) * (v - lo) / ((hi - lo) or 1)

    def sy(c: float) -> float:
        return y_axis - (y_axis - top) * c / peak

    out = _svg_open(width, height, title) + _legend([(s.name, s.color) for s in series], left, 14,
                                                    [s.outline for s in series])
    xt = [t for t in (ticks if ticks is not None else nice_ticks(lo, hi, 8)) if lo <= t <= hi] or [lo, hi]
    out += _x_axis(xt, sx, y_axis, top, x_format, x_label, (left + right) / 2)
    out += _y_label(y_label, top, y_axis)
    for t in nice_ticks(0, peak, 4):
        if float(t).is_integer() or peak < 4:
            out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="#666">{t:g}</text>')
    for s, counts in zip(series, all_counts):
        counts = counts[: len(edges) - 1]
        if s.outline:
            d = [f"M{sx(edges[0]):.1f},{y_axis:.1f}"]
            for k, c in enumerate(counts):
                d.append(f"V{sy(c):.1f}H{sx(edges[k + 1]):.1f}")
            d.append(f"V{y_axis:.1f}")
            out.append(f'<path d="{"".join(d)}" fill="none" stroke="{s.color}" stroke-width="2"/>')
            continue
        for k, c in enumerate(counts):
            if c <= 0:
                continue
            x0, x1 = sx(edges[k]), sx(edges[k + 1])
            tip = f"{s.name}: {c:g} in [{x_format(edges[k])}, {x_format(edges[k + 1])})"
            out.append(f'<rect x="{x0 + 0.5:.1f}" y="{sy(c):.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
                       f'height="{y_axis - sy(c):.1f}" fill="{s.color}" fill-opacity="0.45" stroke="{s.color}">'
                       f"<title>{escape(tip)}</title></rect>")
    for k, (value, label) in enumerate(markers):
        if math.isfinite(value) and lo <= value <= hi:
            x = sx(value)
            anchor, dx = ("end", -3) if x > right - 30 else ("start", 3)
            out.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{y_axis:.1f}" stroke="#333" '
                       f'stroke-dasharray="4 3"/><text x="{x + dx:.1f}" y="{top + 10 + 13 * k:.1f}" '
                       f'text-anchor="{anchor}" fill="#333">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _quantile_points(values: Sequence[float], max_points: int) -> list[tuple[float, float]]:
    """(value, cumulative share) steps of the empirical CDF, thinned to at most ``max_points``."""
    v = sorted(x for x in values if math.isfinite(x))
    n = len(v)
    if n <= max_points:
        return [(x, (i + 1) / n) for i, x in enumerate(v)]
    idx = sorted({min(n - 1, round(k * (n - 1) / (max_points - 1))) for k in range(max_points)})
    return [(v[i], (i + 1) / n) for i in idx]


def step_cdf(series: Sequence[Series], title: str, x_label: str,
             x_format: Callable[[float], str] = lambda v: f"{v:g}", y_label: str = "cumulative share",
             max_points: int = 800,
             width: int = 760, height: int = 280) -> str:
    """Empirical CDFs as step lines sharing one linear x axis, with p50/p95/p99 guides."""
    left, right, top, bottom = 58, width - 20, 28, 40
    finite = [x for s in series for x in s.values if math.isfinite(x)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    ticks = nice_ticks(lo, hi, 8)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    y_axis = height - bottom

    def sx(v: float) -> float:
        return left + (right - left) * (v - lo) / (hi - lo)

    def sy(p: float) -> float:
        return y_axis - (y_axis - top) * p

    out = _svg_open(width, height, title) + _legend([(s.name, s.color) for s in series], left, 14)
    out += _x_axis(ticks, sx, y_axis, top, x_format, x_label, (left + right) / 2)
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" y1="{sy(p):.1f}" x2="{right}" y2="{sy(p):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 6}" y="{sy(p) + 4:.1f}" text-anchor="end" fill="#666">{p:g}</text>')
    out.append(f'<line x1="{left}" y1="{sy(0.95):.1f}" x2="{right}" y2="{sy(0.95):.1f}" stroke="#bbb" '
               f'stroke-dasharray="4 3"/><text x="{right - 2}" y="{sy(0.95) + 12:.1f}" text-anchor="end" '
               f'fill="#666">p95</text>')
    out += _y_label(y_label, top, y_axis)
    for s in series:
        pts = _quantile_points(s.values, max_points)
        if not pts:
            continue
        d = [f"M{sx(pts[0][0]):.1f},{sy(0):.1f}"]
        for x, p in pts:
            d.append(f"H{sx(x):.1f}V{sy(p):.1f}")
        out.append(f'<path d="{"".join(d)}" fill="none" stroke="{s.color}" stroke-width="1.8"/>')
    out.append("</svg>")
    return "\n".join(out)
