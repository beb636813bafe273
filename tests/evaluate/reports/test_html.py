from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from quantgate.evaluate.reports import to_html

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SVG_LEAVES = {"rect", "line", "circle", "path"}  # written self-closing inside <svg>


class _Checker(HTMLParser):
    """Parses the document, checks that every element is closed in order, collects attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


def _assert_offline(html: str, checker: _Checker) -> None:
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(checker.tags)
    for name, value in checker.attrs:
        assert not name.startswith("on"), name
        assert not re.search(r"(https?:|//|data:)", value) or name in ("title",), (name, value)
    assert "@import" not in html and "url(" not in html


def test_opens_and_is_self_contained(report: dict[str, Any]) -> None:
    html = to_html(report)
    checker = _check(html)
    _assert_offline(html, checker)
    assert "http://" not in html and "https://" not in html  # local sides: no URL at all
    assert html.count("<svg") == 4  # pass-rate intervals, KL histogram, lengths, latency CDF
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):  # each chart is well-formed XML
        ET.fromstring(svg)


def test_content(report: dict[str, Any]) -> None:
    html = to_html(report)
    text = " ".join(_check(html).text)
    assert '<span class="badge fail">FAIL</span>' in html
    for rule in ("pass_rate", "critical_regressions", "kl_mean", "pass_rate[tag kind:missing]", "latency_p95_ratio"):
        assert rule in text
    assert "check is-json" in text and "tag kind:extract" in text
    assert "KL divergence mean ± se" in text and "0.9865 ± 0.025" in text
    assert "Completion length" in text and "Latency CDF" in html and "553.1 MiB" in text
    assert "Flipped cases (10 regressions, 1 critical; 1 improvement)" in text
    assert text.index("j0") < text.index("j3") < text.index("j99")


def test_flipped_outputs_are_escaped_side_by_side(report: dict[str, Any]) -> None:
    html = to_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x00" not in html and "\x1b" not in html
    row = re.search(r"<tr><td><code>j3</code>.*?</tr>", html, re.S)
    assert row is not None
    pres = re.findall(r"<pre>(.*?)</pre>", row.group(0), re.S)
    assert pres == ["{&quot;i&quot;: 3}", pres[1]] and "a|b `tick`" in pres[1] and "\n" in pres[1]


def test_degraded_sections_have_notes(degraded: dict[str, Any]) -> None:
    html = to_html(degraded)
    checker = _check(html)
    _assert_offline(html, checker)
    assert "No token-level metrics" in html and "No lengths in the report." in html
    assert "No case was sampled more than once" in html
    assert html.count("<svg") == 2  # pass rates and latency remain


def test_empty_report(empty: dict[str, Any]) -> None:
    html = to_html(empty)
    _check(html)
    assert "Not gated." in html and "No case changed outcome." in html and "No per-answer latencies" in html
    assert '<span class="badge none">NONE</span>' in html


def test_non_finite_values(non_finite: dict[str, Any]) -> None:
    html = to_html(non_finite)
    _check(html)
    body = html.split("</style>", 1)[1]
    assert "nan" not in re.sub(r"<[^>]+>", "", body).lower() and "inf" not in re.sub(r"<[^>]+>", "", body)


def test_limits(report: dict[str, Any]) -> None:
    report["behaviour"]["flips"][0]["candidate_output"] = "y" * 10_000
    html = to_html(report, max_flips=3, max_output=100)
    assert "... and 8 more" in html and "y" * 101 not in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_renders_headless(report: dict[str, Any], tmp_path: Path) -> None:
    page, png = tmp_path / "r.html", tmp_path / "r.png"
    page.write_text(to_html(report), encoding="utf-8")
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1200,2400", page.as_uri()], check=True, timeout=60, capture_output=True)
    assert png.stat().st_size > 10_000


def test_where_the_answers_part(parted: dict[str, Any]) -> None:
    html = to_html(parted)
    checker = _Checker()
    checker.feed(html)
    assert not checker.errors
    row = re.search(r"<tr><td><code>j0</code>.*?</tr>", html, re.S)
    assert row is not None and "token 7: &quot;}&quot; -&gt; &quot;,&quot;, baseline margin 0.0008 nats (near tie)" in row.group(0)
    assert "<th>where they part</th>" in html


def test_baseline_near_ties_row(fragile: dict[str, Any]) -> None:
    html = to_html(fragile)
    assert "2 cases (1 critical: j0 at 0.0008 nats (fails if tipped))" in html
