"""Compare a candidate's run against its baseline's on the same golden set.

Input: two stored runs (``eval`` produced them, or ``compare`` just did) and, when both sides are
local models, the two models themselves for token-level metrics. Output: a plain dict (the JSON
report) that the gate reads and every report format renders:

- ``behaviour``: pass rates (greedy sample) overall, per check type and per tag, each with Wilson
  intervals, the paired difference (Newcombe) and McNemar's exact p; the flipped cases both ways
  with both outputs (and, with token metrics, each model's margin where the answers part); critical
  cases that regressed;
- ``tokens``: KL divergence, top-1 agreement, probability change, perplexity ratio, greedy
  agreement (teacher-forced on the baseline's own greedy outputs); the cases the baseline holds by a
  near tie somewhere in its answer (``fragile``), marked critical and passing or not;
- ``consistency``: for cases sampled several times, share of passing samples and distinct answers;
- ``length``: completion tokens, mean ratio with a bootstrap interval, Wilcoxon signed-rank p;
- ``performance``: latency percentiles, tokens/s, weight bytes, cost per successful case.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from quantgate.evaluate.stats import (
    Interval,
    bootstrap_ratio_of_means,
    mcnemar_exact,
    paired_counts,
    paired_difference,
    percentiles,
    wilcoxon_paired,
    wilson,
)
from quantgate.store.runs import CaseRecord, RunRecord

__all__ = ["CostModel", "compare_runs", "interval_dict"]

CostModel = Callable[[str, CaseRecord], float]  # (side, case) -> cost of that answer


def interval_dict(i: Interval) -> dict[str, float]:
    return {"estimate": i.estimate, "low": i.low, "high": i.high}


def _paired_block(base: Sequence[bool], cand: Sequence[bool], confidence: float) -> dict[str, Any]:
    counts = paired_counts(base, cand)
    return {
        "n": counts.n,
        "baseline": interval_dict(wilson(sum(base), len(base), confidence)),
        "candidate": interval_dict(wilson(sum(cand), len(cand), confidence)),
        "diff": interval_dict(paired_difference(counts, confidence)),
        "regressions": counts.base_only,
        "improvements": counts.cand_only,
        "mcnemar_p": mcnemar_exact(counts.base_only, counts.cand_only),
    }


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        parts = [output.get("content") or ""]
        for call in output.get("tool_calls") or []:
            fn = call.get("function", {})
            parts.append(f"<tool_call>{json.dumps({'name': fn.get('name'), 'arguments': fn.get('arguments')})}</tool_call>")
        return "".join(parts)
    return json.dumps(output)


def _check_passed(record: CaseRecord, check_type: str) -> bool | None:
    """Whether every verdict of ``check_type`` on this answer passed; None if the case has none."""
    found = [v["passed"] for v in record.verdicts if v["type"] == check_type and v.get("weight", 1) != 0]
    return all(found) if found else None


def compare_runs(
    base_run: RunRecord,
    base_cases: list[CaseRecord],
    cand_run: RunRecord,
    cand_cases: list[CaseRecord],
    case_info: dict[str, dict[str, Any]],
    confidence: float = 0.95,
    token_report: dict[str, Any] | None = None,
    cost: CostModel | None = None,
) -> dict[str, Any]:
    """Build the comparison report. ``case_info`` maps case id to {tags, critical} from the golden set."""
    base_greedy = {c.case_id: c for c in base_cases if c.sample == 0}
    cand_greedy = {c.case_id: c for c in cand_cases if c.sample == 0}
    ids = [i for i in case_info if i in base_greedy and i in cand_greedy]
    missing = sorted(set(case_info) - set(ids))
    base_pass = [base_greedy[i].passed for i in ids]
    cand_pass = [cand_greedy[i].passed for i in ids]

    by_check: dict[str, dict[str, Any]] = {}
    check_types = sorted({v["type"] for i in ids for v in base_greedy[i].verdicts + cand_greedy[i].verdicts})
    for ct in check_types:
        pairs = [(_check_passed(base_greedy[i], ct), _check_passed(cand_greedy[i], ct)) for i in ids]
        pairs = [(b, c) for b, c in pairs if b is not None and c is not None]
        if pairs:
            by_check[ct] = _paired_block([b for b, _ in pairs], [c for _, c in pairs], confidence)
    by_tag: dict[str, dict[str, Any]] = {}
    tag_ids: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        for tag in case_info[i].get("tags", ()):
            tag_ids[tag].append(i)
    for tag, members in sorted(tag_ids.items()):
        by_tag[tag] = _paired_block([base_greedy[i].passed for i in members],
                                    [cand_greedy[i].passed for i in members], confidence)

    parted = (token_report or {}).get("divergences") or {}
    flips = []
    for i in ids:
        b, c = base_greedy[i], cand_greedy[i]
        if b.passed == c.passed:
            continue
        loser = c if b.passed else b
        flips.append({
            "case_id": i, "direction": "regression" if b.passed else "improvement",
            "critical": bool(case_info[i].get("critical")), "tags": list(case_info[i].get("tags", ())),
            "failed_checks": [{"type": v["type"], "code": v["code"], "reason": v["reason"]}
                              for v in loser.verdicts if not v["passed"]],
            "baseline_output": _text(b.output), "candidate_output": _text(c.output),
            "divergence": parted.get(i),
        })
    critical = [f["case_id"] for f in flips if f["critical"] and f["direction"] == "regression"]

    report: dict[str, Any] = {
        "version": 1,
        "confidence": confidence,
        "baseline": {"run_id": base_run.id, "target": base_run.target, **base_run.meta.get("target", {})},
        "candidate": {"run_id": cand_run.id, "target": cand_run.target, **cand_run.meta.get("target", {})},
        "golden": {"path": base_run.golden, "sha256": base_run.golden_sha256, "cases": len(ids),
                   "missing_cases": missing, "same_golden": base_run.golden_sha256 == cand_run.golden_sha256},
        "behaviour": {
            "overall": _paired_block(base_pass, cand_pass, confidence),
            "by_check": by_check,
            "by_tag": by_tag,
            "flips": flips,
            "critical_regressions": critical,
        },
        "tokens": token_report,
        "consistency": _consistency(base_cases, cand_cases),
        "length": _length(base_greedy, cand_greedy, ids, confidence),
        "performance": {"baseline": _performance(base_cases, base_run, cost, "baseline"),
                        "candidate": _performance(cand_cases, cand_run, cost, "candidate")},
    }
    return _finite(report)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (no data) with None, so the report is strict JSON everywhere."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _consistency(base: list[CaseRecord], cand: list[CaseRecord]) -> dict[str, Any]:
    def per_side(cases: list[CaseRecord]) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[CaseRecord]] = defaultdict(list)
        for c in cases:
            groups[c.case_id].append(c)
        return {k: {"pass_share": sum(c.passed for c in v) / len(v),
                    "distinct": len({_text(c.output).strip() for c in v})}
                for k, v in groups.items() if len(v) > 1}

    b, c = per_side(base), per_side(cand)
    shared = sorted(set(b) & set(c))
    if not shared:
        return {"cases": 0}

    def mean(side: dict[str, dict[str, Any]], key: str) -> float:
        return sum(side[i][key] for i in shared) / len(shared)

    return {
        "cases": len(shared),
        "baseline": {"pass_share": mean(b, "pass_share"), "distinct_mean": mean(b, "distinct")},
        "candidate": {"pass_share": mean(c, "pass_share"), "distinct_mean": mean(c, "distinct")},
        "per_case": {i: {"baseline": b[i], "candidate": c[i]} for i in shared},
    }


def _length(base: dict[str, CaseRecord], cand: dict[str, CaseRecord], ids: list[str], confidence: float) -> dict[str, Any]:
    b = [float(base[i].usage.get("completion_tokens", 0)) for i in ids]
    c = [float(cand[i].usage.get("completion_tokens", 0)) for i in ids]
    if not ids:
        return {}
    return {
        "baseline_mean": sum(b) / len(b), "candidate_mean": sum(c) / len(c),
        "ratio": interval_dict(bootstrap_ratio_of_means(b, c, confidence)),
        "wilcoxon_p": wilcoxon_paired(b, c),
        "baseline": b, "candidate": c,
    }


def _performance(cases: list[CaseRecord], run: RunRecord, cost: CostModel | None, side: str) -> dict[str, Any]:
    latencies = [c.timings.get("total_s", 0.0) for c in cases if c.timings]
    tokens = sum(c.usage.get("completion_tokens", 0) for c in cases)
    busy = run.meta.get("seconds") or sum(latencies) or 0.0
    successes = sum(c.passed for c in cases)
    perf: dict[str, Any] = {
        "latency_s": percentiles(latencies, (50, 95, 99)) if latencies else {"p50": None, "p95": None, "p99": None},
        "latencies": sorted(latencies),
        "tokens_per_s": tokens / busy if busy else 0.0,
        "weight_bytes": run.meta.get("target", {}).get("weight_bytes"),
        "answers": len(cases), "successes": successes,
    }
    if cost is not None:
        total = sum(cost(side, c) for c in cases)
        perf["cost_total"] = total
        perf["cost_per_success"] = total / successes if successes else None
    return perf
