from __future__ import annotations

from typing import Any

from quantgate.evaluate.reports import to_markdown
from quantgate.evaluate.reports.markdown import code_span


def _flip_rows(md: str) -> list[str]:
    body = md.split("<details>", 1)[1]
    return [ln for ln in body.splitlines() if ln.startswith("| `j")]


def test_verdict_rules_and_tables(report: dict[str, Any]) -> None:
    md = to_markdown(report)
    assert md.startswith("### quantgate gate: **FAIL**")
    assert "31 cases compared, 10 regressions, 1 improvement, **1 critical regression**: `j0`" in md
    assert "| `pass_rate[tag kind:missing]` | **SKIP** |" in md
    assert "| `kl_mean` | **WARN** |" in md and "| `length_ratio` | **PASS** |" in md
    assert "| check is-json | 30 |" in md and "| tag kind:extract | 30 |" in md
    assert "#### Token metrics" in md and "0.9865 ± 0.025" in md
    assert "weights 553.1 MiB -> 193.6 MiB" in md
    assert not any(0x1F300 <= ord(ch) <= 0x1FAFF or 0x2600 <= ord(ch) <= 0x27BF for ch in md)  # no emoji


def test_flips_in_details_regressions_first_critical_marked(report: dict[str, Any]) -> None:
    md = to_markdown(report)
    assert "<summary>Flipped cases: 10 regressions (1 critical), 1 improvement</summary>" in md
    rows = _flip_rows(md)
    assert rows[0].startswith("| `j0` | **regression, critical** | `json.parse_error` |")
    assert rows[-1].startswith("| `j99` | improvement |")
    assert md.index("</details>") > md.index("| `j99`")


def test_hostile_output_is_escaped(report: dict[str, Any]) -> None:
    md = to_markdown(report)
    row = next(r for r in _flip_rows(md) if r.startswith("| `j3`"))
    # every cell separator is a bare pipe; the output's own pipe is escaped inside a lengthened code span
    cells = [c for c in row.replace("\\|", "\0").split("|")][1:-1]
    assert len(cells) == 5
    assert "``" in cells[4] and "a\\|b" in row and "<script>" in cells[4]  # literal inside code
    assert "\x00" not in md and "\x1b" not in md and "␛" in md


def test_code_span_fences_and_pipes() -> None:
    assert code_span("a|b") == "`a\\|b`"
    assert code_span("x `y` z") == "``x `y` z``"
    assert code_span("`edge`") == "`` `edge` ``"
    assert code_span("a\\|b") == "`a\\\u200b\\|b`"  # an escaped escape would end the cell
    assert code_span("a|b", in_table=False) == "`a|b`"
    assert code_span("") == "-"


def test_limits_keep_comment_small(report: dict[str, Any]) -> None:
    report["behaviour"]["flips"][1]["candidate_output"] = "x" * 10_000
    md = to_markdown(report, max_flips=2, max_output=50)
    assert len(_flip_rows(md)) == 2 and "... and 9 more" in md
    assert "x" * 60 not in md


def test_degraded_and_empty(degraded: dict[str, Any], empty: dict[str, Any]) -> None:
    md = to_markdown(degraded)
    assert "_No token-level metrics (a server on either side)._" in md and "cost per success" not in md
    md = to_markdown(empty)
    assert "**NONE**" in md and "_Not gated._" in md and "_No flipped cases._" in md
    assert "1 golden case missing from a run" in md


def test_where_the_answers_part(parted: dict[str, Any], report: dict[str, Any]) -> None:
    rows = _flip_rows(to_markdown(parted))
    assert rows[0].endswith('| `token 7: "}" -> ",", baseline margin 0.0008 nats (near tie)` |')
    assert rows[1].endswith("| - |")  # j3 has no token data
    assert "where they part" in to_markdown(parted)
    report["behaviour"]["flips"][0].pop("divergence", None)
    assert "where they part" not in to_markdown(report)


def test_baseline_near_ties_named(fragile: dict[str, Any], report: dict[str, Any]) -> None:
    md = to_markdown(fragile)
    assert "Baseline near ties (its own token under 0.1 nats ahead somewhere in the answer): " \
           "2 cases (1 critical: j0 at 0.0008 nats (fails if tipped))." in md
    fragile["tokens"]["fragile"] = []
    assert "near ties" not in to_markdown(fragile)


def test_near_ties_that_would_fail_are_named_before_the_list_is_cut(fragile: dict[str, Any]) -> None:
    ties = fragile["tokens"]["fragile"]
    first = ties[0]
    more = [{**first, "case_id": f"k{i}", "margin": 0.0001 * i, "if_tipped": {"passed": True, "output": ""}}
            for i in range(1, 8)]
    fragile["tokens"]["fragile"] = [*more, first]  # the failing one last, behind seven harmless ones
    md = to_markdown(fragile)
    assert "8 cases (8 critical: j0 at 0.0008 nats (fails if tipped), k1 at 0.0001 nats" in md and "+3 more" in md
