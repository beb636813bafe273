"""Token-level distance between a baseline and a candidate, in the llama.cpp ``--kl-divergence`` style.

Both models are teacher-forced on the same tokens (the baseline's own outputs), so every position
compares two next-token distributions over the same prefix. Per position: KL(base || cand) over
the whole vocabulary, whether the argmax agrees, the change in the probability of the token that
was actually there, and both negative log-likelihoods. Reference log-probs are kept in fp32 from
the forward pass on: storing them lossy puts a floor under KL (llama.cpp's uint16 logits floor it
near 5e-4).

Aggregates (``TokenReport``): mean KL with standard error and p90/p99/max, top-1 agreement, mean
and RMS of the probability change, perplexity ratio, and from the two greedy generations the share
of cases generated identically and the first position where they diverge.

Per case whose greedy answers differ (``Divergence``): how firmly each model preferred its own token
over the other's where the answers part. A flip whose baseline margin is a few thousandths of a nat
was a coin toss before quantization; one with a margin of several nats is a confident answer the
candidate broke. Both count in the gate; the margin only says which kind of finding it is. The same
reading on the baseline alone (``weakest_choice``: its smallest margin for its own token anywhere in
its answer) finds the cases any perturbation may flip before one does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from quantgate.evaluate.stats import mean_se, percentiles

__all__ = ["NEAR_TIE_NATS", "Divergence", "PositionMetrics", "TokenReport", "divergence_at", "first_divergence",
           "position_metrics", "summarise", "weakest_choice"]

# Under this margin the baseline's two choices are within ~10% of each other in probability: small
# enough that any perturbation (another kernel, a quantized weight) may tip it.
NEAR_TIE_NATS = 0.1


@dataclass
class PositionMetrics:
    """Per-position arrays for one case (all the same length: the continuation's tokens)."""

    kl: np.ndarray
    top1_agree: np.ndarray
    dp: np.ndarray
    nll_base: np.ndarray
    nll_cand: np.ndarray


def position_metrics(base_logprobs: torch.Tensor, cand_logprobs: torch.Tensor, targets: Sequence[int]) -> PositionMetrics:
    """Compare two (positions x vocab) log-prob matrices at the observed ``targets``."""
    if base_logprobs.shape != cand_logprobs.shape:
        raise ValueError(f"log-prob shapes differ: {tuple(base_logprobs.shape)} vs {tuple(cand_logprobs.shape)}")
    base = base_logprobs.double()
    cand = cand_logprobs.double()
    kl = (base.exp() * (base - cand)).sum(-1).clamp(min=0.0)
    agree = base.argmax(-1) == cand.argmax(-1)
    idx = torch.tensor(list(targets), dtype=torch.long)[:, None]
    lb = base.gather(1, idx).squeeze(1)
    lc = cand.gather(1, idx).squeeze(1)
    return PositionMetrics(
        kl=kl.numpy(), top1_agree=agree.numpy(), dp=(lc.exp() - lb.exp()).numpy(),
        nll_base=(-lb).numpy(), nll_cand=(-lc).numpy(),
    )


def first_divergence(base_ids: Sequence[int], cand_ids: Sequence[int]) -> int | None:
    """Index of the first differing token of two generations; None when identical."""
    for i, (a, b) in enumerate(zip(base_ids, cand_ids)):
        if a != b:
            return i
    return None if len(base_ids) == len(cand_ids) else min(len(base_ids), len(cand_ids))


@dataclass
class Divergence:
    """Where two greedy answers part, and each model's margin for its own token there (nats).

    ``candidate_token`` is None when the candidate's answer ended at ``position`` and no end token
    is known; margins are None when a side's token was not scored (the baseline ended there).
    """

    position: int
    baseline_token: int | None
    candidate_token: int | None
    baseline_margin: float | None  # log p_base(baseline token) - log p_base(candidate token)
    candidate_margin: float | None  # log p_cand(candidate token) - log p_cand(baseline token)

    @property
    def near_tie(self) -> bool:
        return self.baseline_margin is not None and self.baseline_margin < NEAR_TIE_NATS


def divergence_at(
    base_logprobs: torch.Tensor,
    cand_logprobs: torch.Tensor,
    base_ids: Sequence[int],
    cand_ids: Sequence[int],
    end_id: int | None = None,
) -> Divergence | None:
    """Margins at the first differing token; the log-probs are teacher-forced on ``base_ids``.

    Up to the divergence both answers share a prefix, so the teacher-forced row there is what each
    model saw when it chose. A side whose answer ended at that position chose ``end_id``.
    """
    pos = first_divergence(base_ids, cand_ids)
    if pos is None:
        return None
    base_tok = base_ids[pos] if pos < len(base_ids) else end_id
    cand_tok = cand_ids[pos] if pos < len(cand_ids) else end_id
    if pos >= len(base_ids) or base_tok is None or cand_tok is None or pos >= base_logprobs.shape[0]:
        return Divergence(pos, base_tok, cand_tok, None, None)
    b, c = base_logprobs[pos].double(), cand_logprobs[pos].double()
    return Divergence(pos, base_tok, cand_tok, float(b[base_tok] - b[cand_tok]), float(c[cand_tok] - c[base_tok]))


def weakest_choice(logprobs: torch.Tensor, targets: Sequence[int]) -> tuple[int, float, int] | None:
    """(position, margin in nats, runner-up token) where a model held its own answer least firmly.

    ``logprobs`` is the model teacher-forced on ``targets`` (its own greedy answer); the margin at a
    position is the target's log-prob minus the best other token's. None for an empty answer.
    """
    if not len(targets) or logprobs.shape[0] == 0:
        return None
    lp = logprobs[: len(targets)]
    idx = torch.tensor(list(targets)[: lp.shape[0]], dtype=torch.long)
    own = lp.gather(1, idx[:, None]).squeeze(1).double()
    # The best other token is the top-1 unless the own token is the top-1, then the top-2: no copy
    # of the (positions x vocab) matrix, which matters at a 150k vocabulary.
    top_values, top_ids = lp.topk(2, dim=-1)
    own_on_top = top_ids[:, 0] == idx
    best = torch.where(own_on_top, top_values[:, 1], top_values[:, 0]).double()
    runner_up = torch.where(own_on_top, top_ids[:, 1], top_ids[:, 0])
    margins = own - best
    pos = int(margins.argmin())
    return pos, float(margins[pos]), int(runner_up[pos])


@dataclass
class TokenReport:
    positions: int
    kl_mean: float
    kl_se: float
    kl_p90: float
    kl_p99: float
    kl_max: float
    top1_agreement: float
    top1_se: float
    dp_mean: float
    dp_rms: float
    ppl_base: float
    ppl_cand: float
    ppl_ratio: float
    greedy_identical: float
    first_divergence_median: float | None
    kl_histogram: dict[str, list[float]] = field(default_factory=dict)


def summarise(cases: Sequence[PositionMetrics], divergences: Sequence[int | None]) -> TokenReport:
    """Aggregate per-case position metrics and greedy divergences into one report."""
    kl = np.concatenate([c.kl for c in cases]) if cases else np.zeros(0)
    agree = np.concatenate([c.top1_agree for c in cases]).astype(np.float64) if cases else np.zeros(0)
    dp = np.concatenate([c.dp for c in cases]) if cases else np.zeros(0)
    nb = np.concatenate([c.nll_base for c in cases]) if cases else np.zeros(0)
    nc = np.concatenate([c.nll_cand for c in cases]) if cases else np.zeros(0)
    kl_mean, kl_se = mean_se(kl)
    top1, top1_se = mean_se(agree)
    tails = percentiles(kl, (90, 99))
    ppl_b = math.exp(nb.mean()) if nb.size else float("nan")
    ppl_c = math.exp(nc.mean()) if nc.size else float("nan")
    diverged = [d for d in divergences if d is not None]
    hist_counts, hist_edges = np.histogram(np.log10(np.clip(kl, 1e-8, 9.99)), bins=30, range=(-8, 1)) if kl.size else (np.zeros(0), np.zeros(0))
    return TokenReport(
        positions=int(kl.size), kl_mean=kl_mean, kl_se=kl_se, kl_p90=tails["p90"], kl_p99=tails["p99"],
        kl_max=float(kl.max()) if kl.size else 0.0, top1_agreement=top1, top1_se=top1_se,
        dp_mean=float(dp.mean()) if dp.size else 0.0,
        dp_rms=float(np.sqrt((dp ** 2).mean())) if dp.size else 0.0,
        ppl_base=ppl_b, ppl_cand=ppl_c, ppl_ratio=ppl_c / ppl_b if nb.size else float("nan"),
        greedy_identical=(len(divergences) - len(diverged)) / len(divergences) if divergences else float("nan"),
        first_divergence_median=float(np.median(diverged)) if diverged else None,
        kl_histogram={"log10_edges": hist_edges.tolist(), "counts": hist_counts.tolist()},
    )
