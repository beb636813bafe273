from __future__ import annotations

import json
from pathlib import Path

from quantgate.checks import default_registry
from quantgate.evaluate.golden import load_golden
from quantgate.evaluate.runner import EvalConfig, run_eval
from quantgate.evaluate.targets import LocalTarget, UpstreamTarget
from quantgate.store.runs import RunStore
from tests.fakes.upstream import FakeUpstream, Reply, completion

CASES = [
    {"id": "json", "prompt": "give json", "assert": [{"type": "is-json"}], "tags": ["kind:extract"]},
    {"id": "hi", "prompt": "say hi", "assert": [{"type": "icontains", "value": "hi"}], "critical": True},
    {"id": "many", "prompt": "say hi", "samples": 3, "metadata": {"max_tokens": 4},
     "assert": [{"type": "icontains", "value": "hi"}]},
]


def _golden(tmp_path: Path):  # type: ignore[no-untyped-def]
    f = tmp_path / "g.jsonl"
    f.write_text("\n".join(json.dumps(c) for c in CASES))
    return load_golden(f, default_registry())


def test_eval_against_a_server_grades_and_stores(tmp_path: Path) -> None:
    def reply(body: dict) -> Reply:  # type: ignore[type-arg]
        text = body["messages"][-1]["content"]
        return Reply(body=completion('{"a": 1}' if text == "give json" else "Hi there", completion_tokens=4))

    golden = _golden(tmp_path)
    with FakeUpstream(reply) as server, RunStore(tmp_path / "runs.sqlite") as store:
        target = UpstreamTarget(server.url)
        progress: list[tuple[int, int]] = []
        run = run_eval(target, golden, store, EvalConfig(chunk=2), on_progress=lambda d, t: progress.append((d, t)))
        target.close()
        cases = list(store.cases(run.id))
        sent = [r["body"] for r in server.requests]
    assert progress[-1] == (5, 5)
    assert len(cases) == 5 and all(c.passed for c in cases)
    assert run.meta["passed"] == 3 and run.meta["errors"] == 0 and run.meta["kind"] == "url"
    sampled = [b for b in sent if b["temperature"] > 0]
    assert sorted(b["seed"] for b in sampled) == [1, 2] and all(b["max_tokens"] == 4 for b in sampled)


def test_engine_errors_fail_the_case_and_are_counted(tmp_path: Path) -> None:
    golden = _golden(tmp_path)
    with FakeUpstream(lambda body: Reply(500, {"error": {"message": "boom"}})) as server, \
            RunStore(tmp_path / "runs.sqlite") as store:
        target = UpstreamTarget(server.url)
        run = run_eval(target, golden, store)
        target.close()
        cases = list(store.cases(run.id))
    assert run.meta["errors"] == 5 and not any(c.passed for c in cases)
    assert cases[0].verdicts[-1]["code"] == "engine.error" and "boom" in cases[0].verdicts[-1]["reason"]


def test_eval_local_model_stores_tokens_and_logprobs(tiny_model_dir: Path, tmp_path: Path) -> None:
    golden = _golden(tmp_path)
    with RunStore(tmp_path / "runs.sqlite") as store:
        target = LocalTarget(str(tiny_model_dir))
        run = run_eval(target, golden, store, EvalConfig(max_tokens=6))
        cases = {(c.case_id, c.sample): c for c in store.cases(run.id)}
    greedy = cases[("json", 0)]
    assert greedy.token_ids is not None and greedy.logprobs is not None
    assert len(greedy.token_ids) == len(greedy.logprobs) <= 6
    assert greedy.usage["prompt_tokens"] > 0 and greedy.timings["total_s"] > 0
    assert run.meta["target"]["scheme"] == "fp32" and run.meta["target"]["weight_bytes"] > 0
    assert not greedy.passed  # a random model does not write JSON


def test_a_case_the_chat_template_refuses_is_that_cases_error(system_refusing_model_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    f.write_text("\n".join(json.dumps(c) for c in [
        {"id": "plain", "prompt": "say hi", "assert": [{"type": "icontains", "value": "hi"}]},
        {"id": "system", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "assert": [{"type": "icontains", "value": "hi"}]}]))
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = run_eval(LocalTarget(str(system_refusing_model_dir)), load_golden(f, default_registry()), store,
                       EvalConfig(max_tokens=4))
        cases = {c.case_id: c for c in store.cases(run.id)}
    assert run.meta["errors"] == 1 and not cases["system"].passed
    assert cases["system"].verdicts[-1]["code"] == "engine.error"
    assert "System role not supported" in cases["system"].verdicts[-1]["reason"]
    assert cases["plain"].token_ids and all(v["code"] != "engine.error" for v in cases["plain"].verdicts)


def test_a_thinking_models_reasoning_is_stored_apart_and_not_graded(reasoning_model_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"id": "r", "prompt": "hi", "assert": [{"type": "not-contains", "value": "<|"}]}))
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = run_eval(LocalTarget(str(reasoning_model_dir)), load_golden(f, default_registry()), store,
                       EvalConfig(max_tokens=6))
        [case] = store.cases(run.id)
    assert isinstance(case.output, dict) and case.output["reasoning_content"] and case.output["content"] == ""
    assert case.token_ids and len(case.token_ids) <= case.usage["completion_tokens"]  # tokens: the whole output
