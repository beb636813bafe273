"""The ``eval`` and ``compare`` commands as library calls: resolve sides, run, compare, gate.

A side is a local model or variant directory, an ``http(s)://`` server URL, or ``run:ID``, a run
already stored. Sides that are not stored runs are evaluated first (and stored, so the next
compare can reuse them by id). Token-level metrics are computed when both sides are local models
with the same tokenizer, a stored run counting as local when its model directory still exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantgate import __version__
from quantgate.checks.builtin import default_registry
from quantgate.errors import QuantgateError
from quantgate.evaluate.compare import compare_runs
from quantgate.evaluate.gate import DEFAULT_POLICY, GateResult, Policy, evaluate_gate
from quantgate.evaluate.golden import GoldenSet, load_golden
from quantgate.evaluate.runner import EvalConfig, run_eval
from quantgate.evaluate.targets import LocalTarget, Target, open_target
from quantgate.store.runs import CaseRecord, RunRecord, RunStore

__all__ = ["CompareOutcome", "CostSpec", "compare_sides", "evaluate_side"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CostSpec:
    """Price of one answer: per 1,000 tokens (prompt + completion) and per second of compute."""

    per_1k_tokens: float = 0.0
    per_second: float = 1.0

    def cost(self, case: CaseRecord) -> float:
        tokens = case.usage.get("prompt_tokens", 0) + case.usage.get("completion_tokens", 0)
        return self.per_1k_tokens * tokens / 1000 + self.per_second * case.timings.get("total_s", 0.0)


@dataclass
class CompareOutcome:
    report: dict[str, Any]
    gate: GateResult
    runs: dict[str, RunRecord] = field(default_factory=dict)


def evaluate_side(spec: str, golden: GoldenSet, store: RunStore, config: EvalConfig,
                  progress: Progress | None = None, label: str = "eval",
                  keep_open: bool = False, device: str = "cpu") -> tuple[RunRecord, Target | None]:
    if spec.startswith("run:"):
        run = store.get_run(spec.removeprefix("run:"))
        if run.golden_sha256 != golden.sha256:
            raise QuantgateError(f"{spec} was evaluated on a different golden set ({run.golden}); "
                                 "re-run it or pass the same --golden")
        return run, None
    target = open_target(spec, device=device)
    run = run_eval(target, golden, store, config,
                   on_progress=(lambda d, t: progress(label, d, t)) if progress else None)
    if keep_open:
        return run, target
    target.close()
    return run, None


def _local_for_scoring(run: RunRecord, opened: Target | None, device: str = "cpu") -> LocalTarget | None:
    if isinstance(opened, LocalTarget):
        return opened
    path = run.meta.get("target", {}).get("path")
    if run.meta.get("kind") == "local" and path and Path(path).is_dir():
        return LocalTarget(path, device=device)
    return None


def compare_sides(
    baseline: str,
    candidate: str,
    golden_path: str | Path,
    store: RunStore,
    policy: Policy = DEFAULT_POLICY,
    config: EvalConfig = EvalConfig(),
    costs: dict[str, CostSpec] | None = None,
    token_metrics: bool = True,
    progress: Progress | None = None,
    device: str = "cpu",
) -> CompareOutcome:
    """Evaluate both sides (local ones on ``device``), compare them, gate the candidate."""
    from quantgate.evaluate.near_ties import probe_near_ties
    from quantgate.evaluate.token_compare import token_level, tokenizers_match

    golden = load_golden(golden_path, default_registry())
    base_run, base_target = evaluate_side(baseline, golden, store, config, progress, "baseline",
                                          keep_open=token_metrics, device=device)
    cand_run, cand_target = evaluate_side(candidate, golden, store, config, progress, "candidate",
                                          keep_open=token_metrics, device=device)
    base_cases, cand_cases = list(store.cases(base_run.id)), list(store.cases(cand_run.id))
    tokens = None
    if token_metrics:
        base_local = _local_for_scoring(base_run, base_target, device)
        cand_local = _local_for_scoring(cand_run, cand_target, device) if base_local else None
        if base_local and cand_local and tokenizers_match(base_local, cand_local):
            if progress:
                progress("token metrics", 0, 1)
            tokens = token_level(base_local, cand_local, golden, base_cases, cand_cases, config)
            probe_near_ties(base_local, golden, base_cases, tokens, config)
            if progress:
                progress("token metrics", 1, 1)
    for t in (base_target, cand_target):
        if t is not None:
            t.close()
    prices = costs if costs is not None else {side: CostSpec(**spec) for side, spec in policy.costs.items()}
    default = CostSpec()
    info = {c.id: {"tags": list(c.tags), "critical": c.critical} for c in golden.cases}
    report = compare_runs(base_run, base_cases, cand_run, cand_cases, info, policy.confidence, tokens,
                          cost=lambda side, case: prices.get(side, default).cost(case))
    gate = evaluate_gate(report, policy)
    report["gate"] = gate.to_dict()
    report["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report["quantgate_version"] = __version__
    report["policy"] = {"confidence": policy.confidence, "rules": [asdict(r) for r in policy.rules],
                        "costs": {side: asdict(spec) for side, spec in prices.items()}}
    return CompareOutcome(report, gate, {"baseline": base_run, "candidate": cand_run})
