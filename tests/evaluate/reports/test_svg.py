from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from quantgate.evaluate.reports import svg


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (3.0, 97.0, [20.0, 40.0, 60.0, 80.0]),
    (-8.0, 1.0, [-8.0, -6.0, -4.0, -2.0, 0.0]),
])
def test_nice_ticks(lo: float, hi: float, expected: list[float]) -> None:
    assert svg.nice_ticks(lo, hi, 5) == pytest.approx(expected)


def test_nice_ticks_degenerate() -> None:
    assert svg.nice_ticks(2.0, 2.0) == [2.0]
    assert svg.nice_ticks(float("nan"), 1.0) == [0.0]


def test_integer_bins_cover_the_values() -> None:
    edges = svg.bins_for([3, 3, 6, 120], max_bins=40)
    assert edges[0] <= 3 and edges[-1] >= 120 and len(edges) <= 42
    assert svg.bins_for([]) == []
    assert svg.bins_for([float("nan")]) == []


def test_charts_are_well_formed_and_escaped() -> None:
    names = [("base<1>", "#000"), ("cand & co", "#f00")]
    charts = [
        svg.interval_chart([svg.IntervalRow("tag <x>", [(0.5, 0.4, 0.6), None])], names, "t <title>"),
        svg.histogram([0, 1, 2, 3], [svg.Series("a<b", [0, 1, 1, 2], "#000"),
                                     svg.Series("c", [2, 2], "#f00", outline=True)], "h", "x",
                      markers=[(1.5, "mean <m>")]),
        svg.histogram([-1, 0, 1], [svg.Series("k", [3, 0], "#000")], "k", "x", counted=True),
        svg.step_cdf([svg.Series("s", list(range(5000)), "#000"), svg.Series("empty", [], "#f00")], "c", "ms"),
        svg.step_cdf([svg.Series("one", [0.5], "#000")], "c", "s"),
    ]
    for chart in charts:
        root = ET.fromstring(chart)
        assert root.tag == "svg" and root.get("viewBox")
    assert "base&lt;1&gt;" in charts[0] and "<title>t &lt;title&gt;</title>" in charts[0]
    assert len(charts[3]) < 60_000  # 5000 latencies thinned to at most 800 steps
