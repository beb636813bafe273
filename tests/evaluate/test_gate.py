"""The gate's policy file and its verdicts: bounds per metric, intervals against tolerances, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.errors import QuantgateError
from quantgate.evaluate.gate import DEFAULT_POLICY, Policy, Rule, evaluate_gate, load_policy


def _report(diff: tuple[float, float, float], kl: float = 0.01, crit: list[str] | None = None) -> dict:  # type: ignore[type-arg]
    est, low, high = diff
    block = {"n": 100, "baseline": {"estimate": 0.9, "low": 0.8, "high": 0.95}, "candidate": {},
             "diff": {"estimate": est, "low": low, "high": high}, "regressions": 3, "improvements": 1, "mcnemar_p": 0.6}
    return {"confidence": 0.95, "behaviour": {"overall": block, "by_tag": {}, "by_check": {}, "critical_regressions": crit or []},
            "tokens": {"kl_mean": kl, "kl_se": 0.001, "top1_agreement": 0.97, "top1_se": 0.005, "kl_p99": 0.1,
                       "greedy_identical": 0.8, "ppl_ratio": 1.01},
            "length": {"ratio": {"estimate": 1.0, "low": 0.95, "high": 1.05}, "wilcoxon_p": 0.5},
            "performance": {"baseline": {"latency_s": {"p95": 1.0}}, "candidate": {"latency_s": {"p95": 1.3}}}}


def test_gate_three_outcomes_from_interval_position() -> None:
    assert evaluate_gate(_report((-0.01, -0.025, 0.005))).verdict == "pass"
    assert evaluate_gate(_report((-0.02, -0.05, 0.01))).verdict == "warn"
    assert evaluate_gate(_report((-0.1, -0.15, -0.05))).verdict == "fail"
    assert evaluate_gate(_report((0.0, -0.01, 0.01), crit=["c1"])).verdict == "fail"
    assert evaluate_gate(_report((0.0, -0.01, 0.01), kl=0.2)).verdict == "fail"
    latency = Policy((Rule("latency_p95_ratio", max=1.2),))
    result = evaluate_gate(_report((0.0, -0.01, 0.01)), latency)
    assert result.verdict == "fail" and result.results[0].value == pytest.approx(1.3)
    assert DEFAULT_POLICY.rules[0].metric == "pass_rate"


def test_a_relative_drop_is_a_share_of_the_baseline_rate() -> None:
    # baseline 0.9: a 5% relative drop allows -0.045; the interval [-0.04, -0.01] sits inside it
    rel = Policy((Rule("pass_rate", max_relative_drop=0.05),))
    result = evaluate_gate(_report((-0.02, -0.04, -0.01)), rel)
    assert result.verdict == "pass" and result.results[0].bound == ">= -0.0450"
    assert evaluate_gate(_report((-0.06, -0.08, -0.05)), rel).verdict == "fail"
    # both bounds: the stricter one holds
    both = Policy((Rule("pass_rate", max_drop=0.1, max_relative_drop=0.01),))
    assert evaluate_gate(_report((-0.02, -0.04, -0.015)), both).verdict == "fail"


def test_a_scope_with_no_cases_is_skipped_naming_the_scopes_there_are() -> None:
    report = _report((0.0, -0.01, 0.01))
    report["behaviour"]["by_tag"] = {"kind:tool_call": report["behaviour"]["overall"]}
    result = evaluate_gate(report, Policy((Rule("pass_rate", tag="kind:tool_cal", max_drop=0.05),)))
    (rule,) = result.results
    assert rule.outcome == "skip" and "'kind:tool_cal'" in rule.reason and "there are: kind:tool_call" in rule.reason


def test_a_policy_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("confidence: 0.9\nrules:\n  - {metric: pass_rate, tag: 'risk:high', max_drop: 0.0}\n"
                    "  - {metric: length_ratio, min: 0.8, max: 1.2}\ncosts:\n  candidate: {per_second: 2}\n")
    policy = load_policy(path)
    assert policy.confidence == 0.9 and policy.costs == {"candidate": {"per_second": 2.0}}
    assert policy.rules == (Rule("pass_rate", tag="risk:high", max_drop=0.0), Rule("length_ratio", min=0.8, max=1.2))


@pytest.mark.parametrize("text, message", [
    ("rules:\n  - {metric: pass_rate, max: 0.1}\n", "rules[0].max: pass_rate takes max_drop or max_relative_drop, not max"),
    ("rules:\n  - {metric: critical_regressions, min: 1}\n", "rules[0].min: critical_regressions takes max, not min"),
    ("rules:\n  - {metric: kl_mean, max_drop: 0.01}\n", "rules[0].max_drop: kl_mean takes min or max, not max_drop"),
    ("rules:\n  - {metric: top1_agreement}\n", "rules[0]: top1_agreement needs a bound: min or max"),
    ("rules:\n  - {metric: kl_mean, max: lots}\n", "rules[0].max: expected a number, got 'lots'"),
    ("rules:\n  - {metric: kl_mean, tag: x, max: 0.1}\n", "'tag'/'check' narrow only the pass_rate metric"),
    ("confidence: 2\nrules: []\n", "confidence: expected a number between 0.5 and 1"),
    ("rules: [}\n", "not valid YAML"),
    ("rulez: []\n", "expected a mapping with a 'rules' list"),
])
def test_bad_policies_are_refused_naming_rule_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(QuantgateError) as err:
        load_policy(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_unreadable_policy_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match="no such policy file"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(QuantgateError, match="cannot read the policy file"):
        load_policy(tmp_path)  # a directory
    binary = tmp_path / "policy.yaml"
    binary.write_bytes(b"rules: \xff\xfe\n")
    with pytest.raises(QuantgateError, match="cannot read the policy file"):
        load_policy(binary)
