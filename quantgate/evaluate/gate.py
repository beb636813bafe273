"""The gate: turn a comparison report into pass / warn / fail under a policy of tolerances.

A policy is a list of rules, each naming a metric of the report, optionally narrowed to a tag or a
check type, with a bound. For a metric with a confidence interval the outcome is decided by where
the *whole interval* sits: inside the tolerance, pass; wholly beyond it, fail; straddling it,
warn (not enough evidence either way, so a person should look). A metric without an interval
(a latency percentile, a count) compares its value directly: pass or fail. Critical cases allow
zero regressions by default.

Metrics (``metric:`` in the policy):

- ``pass_rate`` (with optional ``tag`` or ``check``): candidate minus baseline pass rate; bound
  ``max_drop`` (absolute, e.g. 0.02) or ``max_relative_drop`` (share of the baseline rate);
- ``critical_regressions``: count; bound ``max`` (default 0);
- ``kl_mean``, ``kl_p99``: bound ``max``; ``top1_agreement``, ``greedy_identical``: bound ``min``;
  ``ppl_ratio``: bound ``max``;
- ``length_ratio``: candidate/baseline mean completion tokens; bounds ``min``/``max``;
- ``latency_p50_ratio``, ``latency_p95_ratio``, ``latency_p99_ratio``, ``cost_per_success_ratio``:
  candidate/baseline; bound ``max``.

``costs`` (optional) prices each side's answers: ``per_1k_tokens`` (prompt + completion) and
``per_second`` of compute (a GPU-second price); the default is 1 per second, so cost per
successful case reads as compute seconds per success.

A token-level rule on a comparison that has no token-level data (a server on either side) is
skipped with a note, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from quantgate.errors import QuantgateError

__all__ = ["DEFAULT_POLICY", "GateResult", "Policy", "Rule", "evaluate_gate", "load_policy"]

Outcome = Literal["pass", "warn", "fail", "skip"]
METRICS = {"pass_rate", "critical_regressions", "kl_mean", "kl_p99", "top1_agreement", "greedy_identical",
           "ppl_ratio", "length_ratio", "latency_p50_ratio", "latency_p95_ratio", "latency_p99_ratio",
           "cost_per_success_ratio"}
BOUNDS = {"max_drop", "max_relative_drop", "max", "min"}
# The bounds each metric reads (every other metric: min and/or max); any other bound on it would
# be silently ignored, so it is refused.
_METRIC_BOUNDS = {"pass_rate": ("max_drop", "max_relative_drop"), "critical_regressions": ("max",)}


@dataclass(frozen=True)
class Rule:
    metric: str
    tag: str | None = None
    check: str | None = None
    max_drop: float | None = None
    max_relative_drop: float | None = None
    max: float | None = None
    min: float | None = None

    @property
    def label(self) -> str:
        scope = f"[tag {self.tag}]" if self.tag else f"[check {self.check}]" if self.check else ""
        return f"{self.metric}{scope}"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    confidence: float = 0.95
    # side ("baseline" | "candidate") -> {"per_1k_tokens": price, "per_second": price}
    costs: dict[str, dict[str, float]] = field(default_factory=dict)


DEFAULT_POLICY = Policy(rules=(
    Rule("pass_rate", max_drop=0.03),
    Rule("critical_regressions", max=0),
    Rule("kl_mean", max=0.05),
    Rule("top1_agreement", min=0.90),
    Rule("length_ratio", min=0.8, max=1.25),
))


@dataclass
class RuleResult:
    rule: str
    outcome: Outcome
    value: float | None
    low: float | None
    high: float | None
    bound: str
    reason: str


@dataclass
class GateResult:
    verdict: Literal["pass", "warn", "fail"]
    results: list[RuleResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "fail" else 0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "rules": [r.__dict__ for r in self.results]}


def load_policy(path: str | Path) -> Policy:
    """Read a YAML policy; errors name the file, the rule index and the key."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise QuantgateError(f"{p}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantgateError(f"{p}: cannot read the policy file ({exc})") from None
    except yaml.YAMLError as exc:
        raise QuantgateError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise QuantgateError(f"{p}: expected a mapping with a 'rules' list")
    unknown = set(data) - {"rules", "confidence", "costs"}
    if unknown:
        raise QuantgateError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    confidence = data.get("confidence", 0.95)
    if not isinstance(confidence, float) or not 0.5 < confidence < 1:
        raise QuantgateError(f"{p}: confidence: expected a number between 0.5 and 1, got {confidence!r}")
    rules = []
    for i, raw in enumerate(data["rules"]):
        where = f"{p}: rules[{i}]"
        if not isinstance(raw, dict):
            raise QuantgateError(f"{where}: expected a mapping")
        extra = set(raw) - {"metric", "tag", "check"} - BOUNDS
        if extra:
            raise QuantgateError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if raw.get("metric") not in METRICS:
            raise QuantgateError(f"{where}.metric: {raw.get('metric')!r} is not one of {', '.join(sorted(METRICS))}")
        for key in BOUNDS & set(raw):
            if isinstance(raw[key], bool) or not isinstance(raw[key], (int, float)):
                raise QuantgateError(f"{where}.{key}: expected a number, got {raw[key]!r}")
        allowed = _METRIC_BOUNDS.get(raw["metric"], ("min", "max"))
        wrong = sorted((BOUNDS & set(raw)) - set(allowed))
        if wrong:
            raise QuantgateError(f"{where}.{wrong[0]}: {raw['metric']} takes {' or '.join(allowed)}, not {wrong[0]}")
        if not set(allowed) & set(raw):
            raise QuantgateError(f"{where}: {raw['metric']} needs a bound: {' or '.join(allowed)}")
        for key in ("tag", "check"):
            if key in raw and not isinstance(raw[key], str):
                raise QuantgateError(f"{where}.{key}: expected a string")
        if (raw.get("tag") or raw.get("check")) and raw["metric"] != "pass_rate":
            raise QuantgateError(f"{where}: 'tag'/'check' narrow only the pass_rate metric")
        rules.append(Rule(**raw))
    costs = data.get("costs", {})
    if not isinstance(costs, dict) or set(costs) - {"baseline", "candidate"}:
        raise QuantgateError(f"{p}: costs: expected a mapping with 'baseline' and/or 'candidate'")
    for side, spec in costs.items():
        if not isinstance(spec, dict) or set(spec) - {"per_1k_tokens", "per_second"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in spec.values()):
            raise QuantgateError(f"{p}: costs.{side}: expected non-negative numbers per_1k_tokens and/or per_second")
    return Policy(tuple(rules), float(confidence), {k: {kk: float(vv) for kk, vv in v.items()} for k, v in costs.items()})


def _decide(low: float, high: float, lo_bound: float | None, hi_bound: float | None) -> Outcome:
    """pass if [low, high] lies within [lo_bound, hi_bound]; fail if wholly outside; else warn."""
    inside = (lo_bound is None or low >= lo_bound) and (hi_bound is None or high <= hi_bound)
    outside = (lo_bound is not None and high < lo_bound) or (hi_bound is not None and low > hi_bound)
    return "pass" if inside else "fail" if outside else "warn"


def _ratio(report: dict[str, Any], key: str) -> float | None:
    perf = report["performance"]
    if key == "cost_per_success":
        b, c = perf["baseline"].get("cost_per_success"), perf["candidate"].get("cost_per_success")
    else:
        b, c = perf["baseline"]["latency_s"].get(key), perf["candidate"]["latency_s"].get(key)
    if not b or c is None:
        return None
    return float(c) / float(b)


def _evaluate(rule: Rule, report: dict[str, Any]) -> RuleResult:
    if rule.metric == "pass_rate":
        beh = report["behaviour"]
        block = beh["overall"] if not (rule.tag or rule.check) else (
            beh["by_tag"].get(rule.tag) if rule.tag else beh["by_check"].get(rule.check))
        if block is None:
            # a policy may serve several golden sets, so an absent scope is skipped, but named with the
            # ones there are: a misspelt tag should be visible in the report
            known = sorted(beh["by_tag"] if rule.tag else beh["by_check"])
            return RuleResult(rule.label, "skip", None, None, None, "",
                              f"no cases with {'tag' if rule.tag else 'check'} {rule.tag or rule.check!r} here; "
                              f"there are: {', '.join(known[:20]) or 'none'}")
        diff = block["diff"]
        floor = -rule.max_drop if rule.max_drop is not None else None
        if rule.max_relative_drop is not None:
            rel = -rule.max_relative_drop * block["baseline"]["estimate"]
            floor = rel if floor is None else max(floor, rel)
        outcome = _decide(diff["low"], diff["high"], floor, None)
        return RuleResult(rule.label, outcome, diff["estimate"], diff["low"], diff["high"], f">= {floor:+.4f}",
                          f"pass-rate change {diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}], "
                          f"{block['regressions']} regressions, {block['improvements']} improvements")
    if rule.metric == "critical_regressions":
        ids = report["behaviour"]["critical_regressions"]
        n = len(ids)
        bound = rule.max if rule.max is not None else 0
        return RuleResult(rule.label, "pass" if n <= bound else "fail", n, None, None, f"<= {bound:g}",
                          f"{n} critical case(s) regressed" + (
                              f": {', '.join(_near_tie_marked(report, ids[:10]))}" if n else ""))
    if rule.metric in ("kl_mean", "kl_p99", "top1_agreement", "greedy_identical", "ppl_ratio"):
        tokens = report.get("tokens")
        if not tokens:
            return RuleResult(rule.label, "skip", None, None, None, "", "no token-level data (a server side?)")
        if tokens.get(rule.metric) is None:
            return RuleResult(rule.label, "skip", None, None, None, "", f"{rule.metric} not measured (no tokens)")
        value = float(tokens[rule.metric])
        se = {"kl_mean": tokens.get("kl_se"), "top1_agreement": tokens.get("top1_se")}.get(rule.metric) or 0.0
        zq = _z(report.get("confidence", 0.95))
        low, high = value - zq * se, value + zq * se
        outcome = _decide(low, high, rule.min, rule.max)
        return RuleResult(rule.label, outcome, value, low, high, _bound_text(rule), f"{rule.metric} {value:.4g}")
    if rule.metric == "length_ratio":
        ratio = report["length"].get("ratio") if report.get("length") else None
        if not ratio or ratio.get("estimate") is None:
            return RuleResult(rule.label, "skip", None, None, None, "", "no lengths")
        outcome = _decide(ratio["low"], ratio["high"], rule.min, rule.max)
        return RuleResult(rule.label, outcome, ratio["estimate"], ratio["low"], ratio["high"], _bound_text(rule),
                          f"mean completion length x{ratio['estimate']:.3f} "
                          f"(Wilcoxon p={report['length']['wilcoxon_p']:.3g})")
    key = rule.metric.removesuffix("_ratio").removeprefix("latency_")
    value = _ratio(report, key)
    if value is None:
        return RuleResult(rule.label, "skip", None, None, None, "", "not measured on both sides")
    outcome = _decide(value, value, rule.min, rule.max)
    return RuleResult(rule.label, outcome, value, None, None, _bound_text(rule), f"{rule.metric} {value:.3f}")


def _near_tie_marked(report: dict[str, Any], ids: list[str]) -> list[str]:
    """Case ids, each marked where the baseline itself chose between the two answers by a hair.

    Informational: such a regression still counts (the answer a user gets did change), but it points
    at a fragile baseline rather than at a candidate that broke a confident answer.
    """
    parted = {f["case_id"]: f.get("divergence") or {} for f in report["behaviour"].get("flips", [])}
    marked = []
    for i in ids:
        margin = parted.get(i, {}).get("baseline_margin")
        near = parted.get(i, {}).get("near_tie")
        marked.append(f"{i} (near tie in the baseline: margin {margin:.2g} nats)" if near and margin is not None else i)
    return marked


def _bound_text(rule: Rule) -> str:
    parts = []
    if rule.min is not None:
        parts.append(f">= {rule.min:g}")
    if rule.max is not None:
        parts.append(f"<= {rule.max:g}")
    return " and ".join(parts)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def evaluate_gate(report: dict[str, Any], policy: Policy = DEFAULT_POLICY) -> GateResult:
    results = [_evaluate(rule, report) for rule in policy.rules]
    outcomes = {r.outcome for r in results}
    verdict: Literal["pass", "warn", "fail"] = "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"
    return GateResult(verdict, results)
