"""``quantgate eval``: answer every golden case with one target, grade it, store the run.

Sample 0 of every case is greedy: it is what pass/fail, flips and token-level metrics compare.
Cases with ``samples: k`` get k-1 more answers sampled at ``sample_temperature`` with seeds
``seed+1 ... seed+k-1``, for consistency. Requests are grouped by their token budget so a batch
does not run to the longest budget of the set. Each case sample is stored as it finishes. The
run's meta counts greedy passes overall and per tag (``by_tag``: tag -> [passed, cases]), so a
summary needs no second pass over the stored cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quantgate.checks.cases import parse_output
from quantgate.checks.types import Case
from quantgate.engines.types import SamplingParams
from quantgate.evaluate.golden import GoldenSet
from quantgate.evaluate.targets import Answer, ChatRequest, Target
from quantgate.store.runs import CaseRecord, RunRecord, RunStore

__all__ = ["EvalConfig", "case_request", "grade", "run_eval"]


@dataclass(frozen=True)
class EvalConfig:
    max_tokens: int = 256
    sample_temperature: float = 0.7
    seed: int = 0
    chunk: int = 64  # requests handed to a target at once (progress granularity)


def case_messages(case: Case) -> list[dict[str, Any]]:
    if case.messages:
        return [dict(m) for m in case.messages]
    return [{"role": "user", "content": case.prompt or ""}]


def case_request(case: Case, sample: int, config: EvalConfig) -> ChatRequest:
    meta = case.metadata or {}
    max_tokens = int(meta.get("max_tokens", config.max_tokens))
    if sample == 0:
        params = SamplingParams(max_tokens=max_tokens)
    else:
        params = SamplingParams(max_tokens=max_tokens, temperature=config.sample_temperature,
                                seed=config.seed + sample)
    return ChatRequest(case_messages(case), params, [dict(t) for t in case.tools] if case.tools else None,
                       dict(case.response_format) if case.response_format else None)


def run_eval(
    target: Target,
    golden: GoldenSet,
    store: RunStore,
    config: EvalConfig = EvalConfig(),
    on_progress: Callable[[int, int], None] | None = None,
) -> RunRecord:
    """Answer, grade and store every case sample; return the stored run."""
    run = store.create_run(target.name, str(golden.path), golden.sha256,
                           {"target": target.info, "kind": target.kind, "config": config.__dict__})
    jobs = [(case, s) for case in golden.cases for s in range(case.samples)]
    jobs.sort(key=lambda job: case_request(job[0], job[1], config).params.max_tokens)
    started = time.perf_counter()
    done = passed = errors = 0
    by_tag: dict[str, list[int]] = {}
    for start in range(0, len(jobs), config.chunk):
        chunk = jobs[start : start + config.chunk]
        answers = target.answer([case_request(c, s, config) for c, s in chunk])
        for (case, sample), answer in zip(chunk, answers):
            record = grade(golden, case, sample, answer)
            store.add_case(run.id, record)
            passed += record.passed and sample == 0
            errors += answer.error is not None
            if sample == 0:
                for tag in case.tags:
                    counts = by_tag.setdefault(tag, [0, 0])
                    counts[0] += record.passed
                    counts[1] += 1
        done += len(chunk)
        if on_progress:
            on_progress(done, len(jobs))
    meta = dict(run.meta)
    meta.update({"seconds": time.perf_counter() - started, "cases": len(golden.cases), "samples": len(jobs),
                 "passed": passed, "errors": errors, "by_tag": dict(sorted(by_tag.items()))})
    store.update_meta(run.id, meta)
    run.meta = meta
    return run


def grade(golden: GoldenSet, case: Case, sample: int, answer: Answer) -> CaseRecord:
    output = parse_output(answer.output, case.where, finish_reason=answer.finish_reason,
                          completion_tokens=answer.completion_tokens)
    result = golden.compiled[case.id].run(output)
    verdicts = [v.to_dict() for v in result.verdicts]
    if answer.error:
        verdicts.append({"type": "engine", "passed": False, "score": 0.0, "code": "engine.error",
                         "reason": answer.error, "weight": 1.0})
    return CaseRecord(
        case_id=case.id, sample=sample, passed=result.passed and answer.error is None, output=answer.output,
        verdicts=verdicts,
        usage={"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
        timings=answer.timings, token_ids=answer.token_ids, logprobs=answer.logprobs,
    )
