from __future__ import annotations

import json
import math
from typing import Any

import pytest

from quantgate.evaluate.reports import lm_eval_results, to_json


def test_round_trips_with_the_full_report(report: dict[str, Any]) -> None:
    data = json.loads(to_json(report))
    results = data.pop("results")
    assert data == report  # the full report, untouched
    assert set(results) == {"baseline", "candidate", "diff"}


def test_lm_eval_keys_and_stderrs(report: dict[str, Any]) -> None:
    res = json.loads(to_json(report))["results"]
    base, cand, diff = res["baseline"], res["candidate"], res["diff"]
    overall = report["behaviour"]["overall"]
    p, n = overall["candidate"]["estimate"], overall["n"]
    assert cand["pass_rate,overall"] == pytest.approx(p)
    assert cand["pass_rate_stderr,overall"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert base["pass_rate,overall"] == 1.0 and base["pass_rate_stderr,overall"] == 0.0
    assert cand["pass_rate,tag:kind:extract"] == pytest.approx(20 / 30)
    assert "pass_rate_stderr,check:is-json" in cand and "pass_rate,check:icontains" in base
    assert cand["kl_mean,tokens"] == pytest.approx(report["tokens"]["kl_mean"])
    assert cand["kl_mean_stderr,tokens"] == pytest.approx(report["tokens"]["kl_se"])
    assert cand["top1_agreement,tokens"] == pytest.approx(0.02)
    assert cand["top1_agreement_stderr,tokens"] == pytest.approx(report["tokens"]["top1_se"])
    assert base["perplexity,tokens"] == pytest.approx(report["tokens"]["ppl_base"])
    assert diff["pass_rate,overall"] == pytest.approx(overall["diff"]["estimate"])
    # paired stderr from the discordant counts: sqrt((b + c) - (b - c)^2 / n) / n
    b, c = overall["regressions"], overall["improvements"]
    assert diff["pass_rate_stderr,overall"] == pytest.approx(math.sqrt((b + c) - (b - c) ** 2 / n) / n)
    assert diff["regressions,overall"] == 10 and diff["critical_regressions,overall"] == 1
    assert diff["weight_bytes_ratio,performance"] == pytest.approx(203_000_000 / 580_000_000)
    assert cand["cost_per_success,performance"] == pytest.approx(report["performance"]["candidate"]["cost_per_success"])
    assert diff["gate_verdict,overall"] == "fail"
    assert base["alias"].startswith("models/tiny-bf16")


def test_no_nan_or_infinity(non_finite: dict[str, Any]) -> None:
    text = to_json(non_finite)
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["length"]["ratio"] == {"estimate": None, "low": None, "high": None}
    assert data["tokens"]["greedy_identical"] is None and data["gate"]["rules"][5]["value"] is None
    assert data["results"]["diff"]["length_ratio,length"] is None
    assert data["results"]["diff"]["ppl_ratio,tokens"] is None


def test_degraded_report_has_no_token_keys(degraded: dict[str, Any]) -> None:
    data = json.loads(to_json(degraded))
    assert data["tokens"] is None
    assert not [k for k in data["results"]["candidate"] if k.endswith(",tokens")]
    assert "cost_per_success,performance" not in data["results"]["candidate"]
    assert "pass_rate,overall" in data["results"]["candidate"]


def test_empty_report(empty: dict[str, Any]) -> None:
    res = lm_eval_results(empty)
    assert res["baseline"]["pass_rate_stderr,overall"] is None  # n = 0: no stderr
    assert res["diff"]["gate_verdict,overall"] == "none"
    json.loads(to_json(empty))
