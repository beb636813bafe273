"""Report fixtures: a small real comparison (tests/evaluate/reports/sample_report.json) and degraded variants.

The sample compares two local-looking sides over 31 cases where the candidate breaks every third
JSON answer (10 regressions, ``j0`` critical), with synthetic token metrics, one improvement added
by hand (``j99``) and ``j3``'s candidate output made hostile (pipes, backticks, ``<script>``, rich
markup, NUL and ESC). Its gate has every outcome: fail, warn, skip and pass.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

SAMPLE = Path(__file__).with_name("sample_report.json")


@pytest.fixture(scope="session")
def _sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


@pytest.fixture
def report(_sample: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(_sample)


def degrade(report: dict[str, Any]) -> dict[str, Any]:
    """What a server-vs-server comparison without repeated samples or costs looks like."""
    r = copy.deepcopy(report)
    r["tokens"] = None
    r["length"] = {}
    r["consistency"] = {"cases": 0}
    for side in ("baseline", "candidate"):
        r[side] = {"run_id": r[side]["run_id"], "target": f"http://127.0.0.1:800{len(side) % 10}",
                   "url": f"http://127.0.0.1:800{len(side) % 10}", "model": "fake"}
        perf = r["performance"][side]
        perf.pop("cost_total", None)
        perf.pop("cost_per_success", None)
        perf["weight_bytes"] = None
    for rule in r["gate"]["rules"]:
        if rule["rule"] in ("kl_mean", "top1_agreement", "length_ratio"):
            rule.update(outcome="skip", value=None, low=None, high=None, bound="", reason="no data")
    return r


@pytest.fixture
def degraded(report: dict[str, Any]) -> dict[str, Any]:
    return degrade(report)


@pytest.fixture
def empty() -> dict[str, Any]:
    """A report over no cases, never gated: every section empty."""
    zero = {"n": 0, "baseline": {"estimate": 0.0, "low": 0.0, "high": 1.0},
            "candidate": {"estimate": 0.0, "low": 0.0, "high": 1.0},
            "diff": {"estimate": 0.0, "low": -1.0, "high": 1.0}, "regressions": 0, "improvements": 0, "mcnemar_p": 1.0}
    perf = {"latency_s": {"p50": 0.0, "p95": 0.0, "p99": 0.0}, "latencies": [], "tokens_per_s": 0.0,
            "weight_bytes": None, "answers": 0, "successes": 0}
    return {"version": 1, "confidence": 0.95,
            "baseline": {"run_id": "a", "target": "x"}, "candidate": {"run_id": "b", "target": "y"},
            "golden": {"path": "g.jsonl", "sha256": "0" * 64, "cases": 0, "missing_cases": ["c1"], "same_golden": True},
            "behaviour": {"overall": zero, "by_check": {}, "by_tag": {}, "flips": [], "critical_regressions": []},
            "tokens": None, "consistency": {"cases": 0}, "length": {},
            "performance": {"baseline": perf, "candidate": dict(perf)}}


@pytest.fixture
def non_finite(report: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities where compare_runs can produce them (all-zero lengths, empty perplexity)."""
    report["length"]["ratio"] = {"estimate": float("nan"), "low": float("nan"), "high": float("nan")}
    report["tokens"]["ppl_ratio"] = float("nan")
    report["tokens"]["greedy_identical"] = float("inf")
    report["gate"]["rules"][5].update(outcome="warn", value=float("nan"), low=float("nan"), high=float("nan"))
    return report


NEAR_TIE = {"position": 7, "baseline_token": "}", "candidate_token": ",", "baseline_margin": 0.0008,
            "candidate_margin": 0.0125, "near_tie": True}


@pytest.fixture
def parted(report: dict[str, Any]) -> dict[str, Any]:
    """The sample with token-level divergence data on ``j0`` (a near tie in the baseline) only."""
    report["behaviour"]["flips"][0]["divergence"] = dict(NEAR_TIE)
    return report


@pytest.fixture
def fragile(report: dict[str, Any]) -> dict[str, Any]:
    """The sample with two baseline near ties, one on a critical case that fails if tipped."""
    report["tokens"]["fragile"] = [
        {"case_id": "j0", "position": 7, "token": "}", "runner_up": ",", "runner_up_id": 11, "margin": 0.0008,
         "critical": True, "baseline_passed": True, "if_tipped": {"passed": False, "output": '{"i": 0,'}},
        {"case_id": "s0", "position": 2, "token": " there", "runner_up": "!", "margin": 0.06, "critical": False,
         "baseline_passed": True}]
    return report
