"""What a critical case's answer would have been had the baseline's near tie gone the other way.

The token metrics list the cases the baseline holds by a near tie (``tokens.fragile``: somewhere in
its greedy answer its own token leads the runner-up by under 0.1 nats). Any perturbation may tip
such a token: a quantized candidate, another kernel, another batch size. For critical cases, where
the gate allows no regression, this module answers the question that matters before a candidate
trips over it: forced to take the runner-up at that position, then greedy on, does the baseline's
answer still pass? Each probed entry gets ``if_tipped``: ``{"passed", "output"}``.

``find_near_ties`` does the same for one model without a candidate (``quantgate eval``): a
teacher-forced pass over its own greedy answers finds the near ties, then the critical ones are
probed, so a golden set's author sees which critical cases are coin tosses before any candidate
trips over one.

Trade-offs: one extra greedy generation per probed case, from the tie on, batched; only critical
cases are probed, since a single flip elsewhere moves a pass rate whose interval the gate already
allows for. It probes the weakest position only; a case with several near ties may tip elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch

from quantgate.checks.types import Case
from quantgate.engines.sampling import StopMatcher
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.evaluate.golden import GoldenSet
from quantgate.evaluate.runner import EvalConfig, case_request, grade
from quantgate.evaluate.targets import Answer, LocalTarget, with_reasoning
from quantgate.evaluate.token_metrics import NEAR_TIE_NATS, weakest_choice
from quantgate.store.runs import CaseRecord

__all__ = ["find_near_ties", "near_tie", "probe_near_ties", "token_text"]


def token_text(target: LocalTarget, token: int | None) -> str | None:
    """One token as text in ``target``'s vocabulary (None stays None)."""
    return None if token is None else str(target.engine.tokenizer.decode([token]))


def near_tie(target: LocalTarget, case: Case, record: CaseRecord, logprobs: torch.Tensor) -> dict[str, Any] | None:
    """The near-tie entry of ``record``'s greedy answer (``logprobs`` teacher-forced on it), or None.

    The entry says whether the case is critical and whether this answer passed, which is what the
    probe and every summary need to tell a harmless tie from one that decides a gate.
    """
    answer = record.token_ids or []
    weakest = weakest_choice(logprobs, answer)
    if weakest is None or weakest[1] >= NEAR_TIE_NATS:
        return None
    pos, margin, runner_up = weakest
    return {"case_id": case.id, "position": pos, "token": token_text(target, answer[pos]),
            "runner_up": token_text(target, runner_up), "runner_up_id": runner_up, "margin": margin,
            "critical": case.critical, "baseline_passed": record.passed}


def find_near_ties(
    target: LocalTarget,
    golden: GoldenSet,
    cases: list[CaseRecord],
    config: EvalConfig = EvalConfig(),
    chunk: int = 16,
) -> list[dict[str, Any]]:
    """Near ties in one model's greedy answers, smallest margin first; the critical ones probed.

    Each entry as in ``tokens.fragile`` of a comparison (``baseline_passed``: this model's own answer).
    """
    greedy = {c.case_id: c for c in cases if c.sample == 0}
    todo = [(case, greedy[case.id]) for case in golden.cases if case.id in greedy and greedy[case.id].token_ids]
    found: list[dict[str, Any]] = []
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        pairs = [(target.prompt_ids(case_request(case, 0, config)), rec.token_ids or []) for case, rec in part]
        _, logprobs = target.engine.score_batch(pairs, return_logprobs=True)  # type: ignore[misc]
        for (case, rec), lp in zip(part, logprobs):
            entry = near_tie(target, case, rec, lp)
            if entry is not None:
                found.append(entry)
    found.sort(key=lambda e: e["margin"])
    probe_near_ties(target, golden, cases, {"fragile": found}, config)
    return found


def probe_near_ties(
    base: LocalTarget,
    golden: GoldenSet,
    base_cases: list[CaseRecord],
    tokens: dict[str, Any],
    config: EvalConfig = EvalConfig(),
) -> int:
    """Add ``if_tipped`` to each critical entry of ``tokens["fragile"]``; return how many were probed."""
    greedy = {c.case_id: c for c in base_cases if c.sample == 0}
    cases = {c.id: c for c in golden.cases}
    engine = base.engine
    jobs: list[tuple[dict[str, Any], list[int], str, str, GenerationRequest]] = []
    for entry in tokens.get("fragile") or []:
        case, record = cases.get(entry["case_id"]), greedy.get(entry["case_id"])
        runner_up = entry.get("runner_up_id")
        if case is None or record is None or not case.critical or not record.token_ids or runner_up is None:
            continue
        request = case_request(case, 0, config)
        prompt = engine.render(request.messages, request.tools)
        forced = list(record.token_ids[: entry["position"]]) + [int(runner_up)]
        budget = request.params.max_tokens
        # Tipped to the end of the answer, or onto its last allowed token: nothing left to generate.
        mode = "end" if int(runner_up) in engine.eos_ids else "full" if len(forced) >= budget else "go"
        params = SamplingParams(max_tokens=max(1, budget - len(forced)), stop=request.params.stop)
        jobs.append((entry, forced, prompt, mode, GenerationRequest(engine.encode(prompt) + forced, params)))
    todo = [job[4] for job in jobs if job[3] == "go"]
    generated = iter(engine.generate(todo) if todo else [])  # in the order of ``jobs``
    for entry, forced, prompt, mode, request in jobs:
        if mode == "end":
            ids, finish = forced[:-1], "stop"
        elif mode == "full":
            ids, finish = forced, "length"
        else:
            generation = next(generated)
            ids, finish = forced + list(generation.token_ids), generation.finish_reason
        text = _decoded(engine, ids, request.params.stop)
        answer = Answer(with_reasoning(text, prompt), finish, len(request.prompt) - len(forced),
                        len(ids) + (finish == "stop"), {})
        graded = grade(golden, cases[entry["case_id"]], 0, answer)
        entry["if_tipped"] = {"passed": graded.passed, "output": text}
    return len(jobs)


def _decoded(engine: Any, ids: list[int], stop: tuple[str, ...]) -> str:
    """``ids`` as the engine writes an answer: one decoder over the forced and generated tokens alike."""
    matcher = StopMatcher(engine.tokenizer, stop, engine.keeps_markers)
    for token in ids:
        matcher.push(token)
        if matcher.stopped:
            break
    matcher.flush()
    return matcher.text
