from __future__ import annotations

from typing import Any

from rich.console import Console

from quantgate.evaluate.reports import render_terminal


def _render(report: dict[str, Any], width: int = 120, **kw: Any) -> str:
    console = Console(record=True, width=width, color_system=None)
    render_terminal(report, console, **kw)
    return console.export_text()


def test_headline_rules_and_sections(report: dict[str, Any]) -> None:
    text = _render(report)
    assert "quantgate compare  FAIL" in text
    assert "models/tiny-bf16 (bf16, run " in text and "models/tiny-int4wo-g128 (int4wo-g128, run " in text
    assert "31 compared, 10 regressions, 1 improvement, 1 critical regression" in text
    for rule in ("pass_rate", "critical_regressions", "kl_mean", "top1_agreement", "pass_rate[tag kind:missing]",
                 "length_ratio", "latency_p95_ratio"):
        assert rule in text
    for outcome in ("FAIL", "WARN", "SKIP", "PASS"):
        assert outcome in text
    assert "check is-json" in text and "tag kind:extract" in text and "0.002" in text
    assert "KL mean ± se" in text and "0.9865 ± 0.025" in text
    assert "latency p95" in text and "553.1 MiB" in text and "cost per success" in text
    assert "Consistency" in text and "1 sampled case:" in text


def test_flips_regressions_first_critical_marked_ids_unwrapped(report: dict[str, Any]) -> None:
    text = _render(report, max_flips=3)
    assert "Flipped cases (first 3 of 11)" in text
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("j")]
    assert [ln.split()[0] for ln in lines] == ["j0", "j3", "j6"]
    assert "CRITICAL" in lines[0] and "json.parse_error" in lines[0]
    assert "j99" not in text  # improvements come after every regression


def test_output_markup_is_printed_literally(report: dict[str, Any]) -> None:
    text = _render(report, width=200)
    assert "[bold]x" in text  # rich markup in a model output is not interpreted


def test_fits_100_columns(report: dict[str, Any]) -> None:
    text = _render(report, width=100)
    assert max(len(ln) for ln in text.splitlines()) <= 100
    assert "pass_rate[tag kind:missing]" in text


def test_degraded_sections_print_notes(degraded: dict[str, Any]) -> None:
    text = _render(degraded)
    assert "Token metrics  none" in text and "Length  no lengths" in text
    assert "Consistency  no case was sampled" in text and "cost per success" not in text
    assert "http://127.0.0.1" in text


def test_empty_report(empty: dict[str, Any]) -> None:
    text = _render(empty)
    assert "quantgate compare  NONE" in text and "Gate  not gated" in text
    assert "1 golden case(s) missing" in text and "Flipped cases  none" in text


def test_non_finite_values_show_as_dashes(non_finite: dict[str, Any]) -> None:
    text = _render(non_finite)
    assert "nan" not in text.lower().replace("nanos", "") and "inf" not in text.replace("info", "")


def test_where_the_answers_part(parted: dict[str, Any]) -> None:
    text = _render(parted, width=250)
    assert "where they part" in text and 'token 7: "}" -> ",", baseline margin 0.0008 nats (near tie)' in text
    assert max(len(ln) for ln in _render(parted, width=100).splitlines()) <= 100


def test_baseline_near_ties_row(fragile: dict[str, Any]) -> None:
    text = _render(fragile, width=200)
    assert "baseline near ties (< 0.1 nats)" in text and "2 cases (1 critical: j0 at 0.0008 nats (fails if tipped))" in text
    fragile["tokens"].pop("fragile")
    row = next(ln for ln in _render(fragile, width=200).splitlines() if "baseline near ties" in ln)
    assert row.split()[-1] == "none"
