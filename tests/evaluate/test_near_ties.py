"""Probing a baseline's near ties: the runner-up forced at the tie, greedy on, graded like any answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantgate.checks.builtin import default_registry
from quantgate.evaluate.golden import load_golden
from quantgate.evaluate.near_ties import probe_near_ties
from quantgate.evaluate.runner import EvalConfig, run_eval
from quantgate.evaluate.targets import LocalTarget
from quantgate.store.runs import RunStore


def _entry(case_id: str, token_id: int) -> dict[str, Any]:
    return {"case_id": case_id, "position": 0, "token": "?", "runner_up": "?", "runner_up_id": token_id,
            "margin": 0.01}


def test_probe_forces_the_runner_up_and_grades_the_answer(tiny_model_dir: Path, tmp_path: Path) -> None:
    cases = [{"id": f"c{i}", "prompt": "json 0", "critical": i < 3, "assert": [{"type": "starts-with", "value": "a"}]}
             for i in range(4)]
    golden_file = tmp_path / "golden.jsonl"
    golden_file.write_text("\n".join(json.dumps(c) for c in cases))
    golden = load_golden(golden_file, default_registry())
    target = LocalTarget(str(tiny_model_dir))
    config = EvalConfig(max_tokens=5)
    tok = target.engine.tokenizer
    a, b, end = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b"), tok.eos_token_id
    with RunStore(tmp_path / "r.sqlite") as store:
        run = run_eval(target, golden, store, config)
        base_cases = list(store.cases(run.id))
    tokens = {"fragile": [_entry("c0", a), _entry("c1", b), _entry("c2", end), _entry("c3", a)]}
    assert probe_near_ties(target, golden, base_cases, tokens, config) == 3
    probed = {e["case_id"]: e.get("if_tipped") for e in tokens["fragile"]}
    assert probed["c0"] is not None and probed["c0"]["passed"] and probed["c0"]["output"].startswith("a")
    assert probed["c1"] is not None and not probed["c1"]["passed"] and probed["c1"]["output"].startswith("b")
    assert probed["c2"] == {"passed": False, "output": ""}  # tipped to the end: an empty answer
    assert probed["c3"] is None  # not critical: not probed
    # The continuation after the forced token is the model's own greedy answer from there.
    from quantgate.engines.types import GenerationRequest, SamplingParams

    prompt = target.engine.encode(target.engine.render([{"role": "user", "content": "json 0"}]))
    own = target.engine.generate([GenerationRequest(prompt + [a], SamplingParams(max_tokens=4))])[0]
    assert probed["c0"]["output"] == "a" + own.text


def test_nothing_to_probe(tiny_model_dir: Path, tmp_path: Path) -> None:
    golden_file = tmp_path / "golden.jsonl"
    golden_file.write_text(json.dumps({"id": "c0", "prompt": "hi", "assert": [{"type": "contains", "value": "x"}]}))
    golden = load_golden(golden_file, default_registry())
    target = LocalTarget(str(tiny_model_dir))
    assert probe_near_ties(target, golden, [], {"fragile": []}) == 0
    assert probe_near_ties(target, golden, [], {}) == 0
