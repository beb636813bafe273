"""The comparison report as JSON: the full report plus a flat ``results`` block in the lm-eval style.

The full report stays as ``compare_runs`` built it, so nothing is lost and ``quantgate`` itself can
read it back. Tools that already parse lm-evaluation-harness output want something flatter:
``results`` maps a "task" to ``{"metric,filter": value, "metric_stderr,filter": stderr}``. Here the
tasks are ``baseline``, ``candidate`` and ``diff`` (candidate relative to baseline), and the filter
part names the scope: ``overall``, ``check:TYPE``, ``tag:NAME``, ``tokens``, ``length``,
``consistency``, ``performance``. Examples: ``"pass_rate,overall"``, ``"pass_rate_stderr,overall"``,
``"pass_rate,tag:kind:extract"``, ``"kl_mean,tokens"``, ``"kl_mean_stderr,tokens"``.

Trade-offs:

- the ``_stderr`` suffix goes on the metric, before the comma, exactly as lm-eval writes it
  (``acc_stderr,none``), so existing parsers find it;
- a pass rate's stderr is the plain binomial sqrt(p(1-p)/n) that lm-eval reports; the gate itself
  uses the Wilson/Newcombe intervals, which are kept as ``_low``/``_high`` keys and in the full report;
  the paired difference's stderr is sqrt((b+c) - (b-c)^2/n)/n from the discordant counts b, c;
- token metrics compare the candidate against the baseline, so they sit under ``candidate``
  (the baseline's perplexity under ``baseline``) and ratios under ``diff``;
- JSON has no NaN or Infinity: every non-finite float becomes null (``allow_nan=False`` proves it).
"""

from __future__ import annotations

import json
import math
from typing import Any

from quantgate.evaluate.reports.common import (
    Report,
    pass_rate_scopes,
    proportion_stderr,
    ratio,
    sanitize,
    side_label,
    token_block,
    verdict,
)

__all__ = ["lm_eval_results", "to_json"]


def _diff_stderr(block: dict[str, Any]) -> float | None:
    n, b, c = block.get("n"), block.get("regressions"), block.get("improvements")
    if not isinstance(n, int) or n <= 0 or not isinstance(b, int) or not isinstance(c, int):
        return None
    return math.sqrt(max(0.0, (b + c) - (b - c) ** 2 / n)) / n


def _behaviour(report: Report, out: dict[str, dict[str, Any]]) -> None:
    for key, _, block in pass_rate_scopes(report):
        n = block.get("n")
        for side in ("baseline", "candidate"):
            rate = block.get(side) or {}
            est = rate.get("estimate")
            out[side][f"pass_rate,{key}"] = est
            out[side][f"pass_rate_stderr,{key}"] = proportion_stderr(est, n)
            out[side][f"pass_rate_low,{key}"] = rate.get("low")
            out[side][f"pass_rate_high,{key}"] = rate.get("high")
            out[side][f"n,{key}"] = n
        diff = block.get("diff") or {}
        out["diff"][f"pass_rate,{key}"] = diff.get("estimate")
        out["diff"][f"pass_rate_stderr,{key}"] = _diff_stderr(block)
        out["diff"][f"pass_rate_low,{key}"] = diff.get("low")
        out["diff"][f"pass_rate_high,{key}"] = diff.get("high")
        out["diff"][f"regressions,{key}"] = block.get("regressions")
        out["diff"][f"improvements,{key}"] = block.get("improvements")
        out["diff"][f"mcnemar_p,{key}"] = block.get("mcnemar_p")
    crit = (report.get("behaviour") or {}).get("critical_regressions")
    if crit is not None:
        out["diff"]["critical_regressions,overall"] = len(crit)


def _tokens(report: Report, out: dict[str, dict[str, Any]]) -> None:
    tokens = token_block(report)
    if tokens is None:
        return
    cand = out["candidate"]
    cand["kl_mean,tokens"] = tokens.get("kl_mean")
    cand["kl_mean_stderr,tokens"] = tokens.get("kl_se")
    for key in ("kl_p90", "kl_p99", "kl_max"):
        cand[f"{key},tokens"] = tokens.get(key)
    cand["top1_agreement,tokens"] = tokens.get("top1_agreement")
    cand["top1_agreement_stderr,tokens"] = tokens.get("top1_se")
    cand["dp_mean,tokens"] = tokens.get("dp_mean")
    cand["dp_rms,tokens"] = tokens.get("dp_rms")
    cand["greedy_identical,tokens"] = tokens.get("greedy_identical")
    cand["first_divergence_median,tokens"] = tokens.get("first_divergence_median")
    cand["perplexity,tokens"] = tokens.get("ppl_cand")
    out["baseline"]["perplexity,tokens"] = tokens.get("ppl_base")
    out["diff"]["ppl_ratio,tokens"] = tokens.get("ppl_ratio")
    out["diff"]["positions,tokens"] = tokens.get("positions")


def _length_consistency(report: Report, out: dict[str, dict[str, Any]]) -> None:
    length = report.get("length") or {}
    for side in ("baseline", "candidate"):
        values = length.get(side)
        if isinstance(values, list) and len(values) > 1:
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            out[side]["completion_tokens_mean,length"] = mean
            out[side]["completion_tokens_mean_stderr,length"] = sd / math.sqrt(len(values))
        elif f"{side}_mean" in length:
            out[side]["completion_tokens_mean,length"] = length[f"{side}_mean"]
    r = length.get("ratio") or {}
    if r:
        out["diff"]["length_ratio,length"] = r.get("estimate")
        out["diff"]["length_ratio_low,length"] = r.get("low")
        out["diff"]["length_ratio_high,length"] = r.get("high")
        out["diff"]["wilcoxon_p,length"] = length.get("wilcoxon_p")
    cons = report.get("consistency") or {}
    if cons.get("cases"):
        for side in ("baseline", "candidate"):
            block = cons.get(side) or {}
            out[side]["pass_share,consistency"] = block.get("pass_share")
            out[side]["distinct_mean,consistency"] = block.get("distinct_mean")
            out[side]["n,consistency"] = cons["cases"]


def _performance(report: Report, out: dict[str, dict[str, Any]]) -> None:
    perf = report.get("performance") or {}
    for side in ("baseline", "candidate"):
        block = perf.get(side) or {}
        for q, v in (block.get("latency_s") or {}).items():
            out[side][f"latency_{q}_s,performance"] = v
        for key in ("tokens_per_s", "weight_bytes", "cost_per_success", "cost_total"):
            if key in block:
                out[side][f"{key},performance"] = block[key]
    b, c = perf.get("baseline") or {}, perf.get("candidate") or {}
    for q in ("p50", "p95", "p99"):
        r = ratio((c.get("latency_s") or {}).get(q), (b.get("latency_s") or {}).get(q))
        if r is not None:
            out["diff"][f"latency_{q}_ratio,performance"] = r
    for key in ("tokens_per_s", "weight_bytes", "cost_per_success"):
        r = ratio(c.get(key), b.get(key))
        if r is not None:
            out["diff"][f"{key}_ratio,performance"] = r


def lm_eval_results(report: Report) -> dict[str, dict[str, Any]]:
    """The flat ``{"baseline": {...}, "candidate": {...}, "diff": {...}}`` block (non-finite -> None)."""
    out: dict[str, dict[str, Any]] = {
        "baseline": {"alias": side_label(report, "baseline")},
        "candidate": {"alias": side_label(report, "candidate")},
        "diff": {"alias": "candidate - baseline (rates) or candidate / baseline (ratios)"},
    }
    _behaviour(report, out)
    _tokens(report, out)
    _length_consistency(report, out)
    _performance(report, out)
    out["diff"]["gate_verdict,overall"] = verdict(report)
    cleaned: dict[str, dict[str, Any]] = sanitize(out)
    return cleaned


def to_json(report: Report, indent: int | None = 2) -> str:
    """The full report plus ``results`` (lm-eval style) as strict JSON: no NaN or Infinity anywhere."""
    full = dict(report)
    full["results"] = lm_eval_results(report)
    return json.dumps(sanitize(full), indent=indent, allow_nan=False, ensure_ascii=False)
