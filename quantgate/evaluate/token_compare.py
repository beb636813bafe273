"""Teacher-force both local models on the baseline's greedy outputs and measure token distances.

Works chunk by chunk: each chunk's two (tokens x vocab) fp32 log-prob matrices exist only while
that chunk is compared, so memory stays bounded by the chunk, not the golden set. The work is the
two forward passes plus one pass over the matrices (KL, argmax, gathers), which is why its cost
stays close to the forward passes alone (``bench/compare.py`` measures the ratio). Where the two
greedy answers differ, the same matrices give each model's margin for its own token at the first
differing position (``divergences``, keyed by case id), and the baseline's weakest choice in each of
its answers gives the cases it holds by a near tie (``fragile``): no extra forward pass for either.
"""

from __future__ import annotations

from typing import Any

from quantgate.evaluate.golden import GoldenSet
from quantgate.evaluate.near_ties import near_tie, token_text
from quantgate.evaluate.runner import EvalConfig, case_request
from quantgate.evaluate.targets import LocalTarget
from quantgate.evaluate.token_metrics import (
    Divergence,
    PositionMetrics,
    divergence_at,
    first_divergence,
    position_metrics,
    summarise,
)
from quantgate.store.runs import CaseRecord

__all__ = ["token_level", "tokenizers_match"]


def tokenizers_match(a: LocalTarget, b: LocalTarget) -> bool:
    ta, tb = a.engine.tokenizer, b.engine.tokenizer
    return bool(ta.get_vocab() == tb.get_vocab())


def token_level(
    base: LocalTarget,
    cand: LocalTarget,
    golden: GoldenSet,
    base_cases: list[CaseRecord],
    cand_cases: list[CaseRecord],
    config: EvalConfig = EvalConfig(),
    chunk: int = 16,
) -> dict[str, Any]:
    """Token-level report as a dict (see ``token_metrics.TokenReport``)."""
    from dataclasses import asdict

    base_greedy = {c.case_id: c for c in base_cases if c.sample == 0}
    cand_greedy = {c.case_id: c for c in cand_cases if c.sample == 0}
    todo = [(case, base_greedy[case.id]) for case in golden.cases
            if case.id in base_greedy and base_greedy[case.id].token_ids]
    end_id = base.engine.tokenizer.eos_token_id
    metrics: list[PositionMetrics] = []
    parted: dict[str, Divergence] = {}
    fragile: list[dict[str, Any]] = []
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        pairs = [(base.prompt_ids(case_request(case, 0, config)), rec.token_ids or []) for case, rec in part]
        _, base_lp = base.engine.score_batch(pairs, return_logprobs=True)  # type: ignore[misc]
        _, cand_lp = cand.engine.score_batch(pairs, return_logprobs=True)  # type: ignore[misc]
        for (case, rec), (_, targets), b, c in zip(part, pairs, base_lp, cand_lp):
            metrics.append(position_metrics(b, c, targets))
            other = cand_greedy.get(case.id)
            found = divergence_at(b, c, targets, other.token_ids or [], end_id) if other else None
            if found is not None:
                parted[case.id] = found
            tie = near_tie(base, case, rec, b)
            if tie is not None:
                fragile.append(tie)
    divergences = [first_divergence(base_greedy[i].token_ids or [], cand_greedy[i].token_ids or [])
                   for i in base_greedy if i in cand_greedy]
    report = asdict(summarise(metrics, divergences))
    report["cases"] = len(metrics)
    report["divergences"] = {cid: _divergence_dict(d, base) for cid, d in parted.items()}
    report["fragile"] = sorted(fragile, key=lambda f: f["margin"])
    return report


def _divergence_dict(d: Divergence, side: LocalTarget) -> dict[str, Any]:
    return {"position": d.position, "baseline_token": token_text(side, d.baseline_token),
            "candidate_token": token_text(side, d.candidate_token), "baseline_margin": d.baseline_margin,
            "candidate_margin": d.candidate_margin, "near_tie": d.near_tie}
