from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.errors import QuantgateError
from quantgate.evaluate.pipeline import CostSpec, compare_sides
from quantgate.quantize.storage import quantize_to_dir
from quantgate.store.runs import RunStore
from tests.fakes.upstream import FakeUpstream, Reply, completion


def _golden(tmp_path: Path, n: int = 40) -> Path:
    cases = []
    for i in range(n):
        case = {"id": f"j{i}", "prompt": f"json {i}", "assert": [{"type": "is-json"}], "tags": ["kind:extract"]}
        if i < 2:
            case["critical"] = True
        cases.append(case)
    cases.append({"id": "s0", "prompt": "say hi", "samples": 3, "assert": [{"type": "icontains", "value": "hi"}],
                  "tags": ["kind:short"]})
    f = tmp_path / "golden.jsonl"
    f.write_text("\n".join(json.dumps(c) for c in cases))
    return f


def _server(broken_every: int):  # type: ignore[no-untyped-def]
    def reply(body: dict) -> Reply:  # type: ignore[type-arg]
        text = body["messages"][-1]["content"]
        if text.startswith("json"):
            i = int(text.split()[1])
            ok = broken_every == 0 or i % broken_every != 0
            return Reply(body=completion('{"i": %d}' % i if ok else '{"i": %d,}' % i, completion_tokens=6))
        return Reply(body=completion("hi there", completion_tokens=3))
    return FakeUpstream(reply)


def test_small_sets_warn_rather_than_pass(tmp_path: Path) -> None:
    golden = _golden(tmp_path, n=40)
    with _server(0) as a, _server(0) as b, RunStore(tmp_path / "r.sqlite") as store:
        outcome = compare_sides(a.url, b.url, golden, store)
    assert outcome.gate.verdict == "warn" and outcome.gate.exit_code == 0
    rule = next(r for r in outcome.gate.results if r.rule == "pass_rate")
    assert rule.outcome == "warn" and rule.low < -0.03 < 0 < rule.high


def test_equal_servers_pass_the_gate(tmp_path: Path) -> None:
    # 300 cases: with no discordant pair the paired interval is about +-1.3 points, inside 3
    golden = _golden(tmp_path, n=300)
    with _server(0) as a, _server(0) as b, RunStore(tmp_path / "r.sqlite") as store:
        outcome = compare_sides(a.url, b.url, golden, store)
    report = outcome.report
    assert outcome.gate.verdict == "pass" and outcome.gate.exit_code == 0
    assert report["behaviour"]["overall"]["regressions"] == 0 and report["tokens"] is None
    assert report["consistency"]["cases"] == 1
    skipped = {r.rule: r.outcome for r in outcome.gate.results}
    assert skipped["kl_mean"] == "skip" and skipped["pass_rate"] == "pass"


def test_a_server_that_breaks_json_fails_with_regressions_named(tmp_path: Path) -> None:
    golden = _golden(tmp_path)
    with _server(0) as a, _server(3) as b, RunStore(tmp_path / "r.sqlite") as store:
        outcome = compare_sides(a.url, b.url, golden, store,
                                costs={"baseline": CostSpec(per_1k_tokens=1.0, per_second=0),
                                       "candidate": CostSpec(per_1k_tokens=0.5, per_second=0)})
        # the stored runs are reusable by id
        again = compare_sides(f"run:{outcome.runs['baseline'].id}", f"run:{outcome.runs['candidate'].id}", golden, store)
    report = outcome.report
    beh = report["behaviour"]
    assert outcome.gate.verdict == "fail" and outcome.gate.exit_code == 1
    assert beh["overall"]["regressions"] == 14 and beh["overall"]["improvements"] == 0
    assert beh["critical_regressions"] == ["j0"]
    assert beh["by_check"]["is-json"]["regressions"] == 14 and beh["by_tag"]["kind:extract"]["regressions"] == 14
    flip = next(f for f in beh["flips"] if f["case_id"] == "j3")
    assert flip["direction"] == "regression" and flip["candidate_output"] == '{"i": 3,}'
    assert flip["failed_checks"][0]["code"].startswith("json.")
    assert beh["overall"]["mcnemar_p"] < 0.001
    perf = report["performance"]
    assert perf["candidate"]["cost_per_success"] < perf["baseline"]["cost_per_success"]
    assert again.report["behaviour"]["overall"] == beh["overall"]


def test_golden_mismatch_for_stored_run(tmp_path: Path) -> None:
    golden = _golden(tmp_path)
    with _server(0) as a, RunStore(tmp_path / "r.sqlite") as store:
        first = compare_sides(a.url, a.url, golden, store)
        (tmp_path / "x").mkdir()
        other = _golden(tmp_path / "x", n=5)
        with pytest.raises(QuantgateError, match="different golden set"):
            compare_sides(f"run:{first.runs['baseline'].id}", a.url, other, store)


def test_local_models_get_token_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "int8")
    golden = _golden(tmp_path, n=6)
    with RunStore(tmp_path / "r.sqlite") as store:
        from quantgate.evaluate.runner import EvalConfig

        outcome = compare_sides(str(tiny_model_dir), str(tmp_path / "int8"), golden, store,
                                config=EvalConfig(max_tokens=8))
    tokens = outcome.report["tokens"]
    assert tokens["cases"] == 7 and tokens["positions"] > 0
    assert 0 <= tokens["kl_mean"] < 0.1 and 0.5 <= tokens["top1_agreement"] <= 1.0
    assert outcome.report["baseline"]["scheme"] == "fp32" and outcome.report["candidate"]["scheme"] == "int8wo"


def test_consistency_counts_passing_samples_and_distinct_answers() -> None:
    from quantgate.evaluate.compare import _consistency
    from quantgate.store.runs import CaseRecord

    def rec(case: str, sample: int, passed: bool, text: str) -> CaseRecord:
        return CaseRecord(case, sample, passed, text, [], {}, {}, None, None)

    base = [rec("a", 0, True, "x"), rec("a", 1, True, "x "), rec("a", 2, True, "x"),
            rec("b", 0, True, "p"), rec("b", 1, False, "q"), rec("once", 0, True, "z")]
    cand = [rec("a", 0, True, "x"), rec("a", 1, False, "y"), rec("a", 2, False, "w"),
            rec("b", 0, False, "q"), rec("b", 1, False, "q"), rec("once", 0, False, "z")]
    got = _consistency(base, cand)
    assert got["cases"] == 2  # a case answered once says nothing about consistency
    assert got["baseline"] == {"pass_share": pytest.approx((1 + 0.5) / 2), "distinct_mean": 1.5}  # "x " is "x"
    assert got["candidate"] == {"pass_share": pytest.approx((1 / 3 + 0) / 2), "distinct_mean": 2.0}
    assert got["per_case"]["a"]["candidate"] == {"pass_share": pytest.approx(1 / 3), "distinct": 3}


def _loud_tiny_model(path: Path, seed: int) -> Path:
    """A tiny random model whose layers matter: at the default init (std 0.02, tied embeddings) every
    seed just repeats its input token, so two seeds would answer alike."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import build_tiny_model

    build_tiny_model(path, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                param.mul_(40)
    model.save_pretrained(path)
    return path


def test_divergence_margins_for_every_case_whose_greedy_answers_part(tmp_path: Path) -> None:
    from quantgate.evaluate.runner import EvalConfig

    base = _loud_tiny_model(tmp_path / "a", seed=0)
    other = _loud_tiny_model(tmp_path / "b", seed=1)
    golden = _golden(tmp_path, n=4)
    with RunStore(tmp_path / "r.sqlite") as store:
        outcome = compare_sides(str(base), str(other), golden, store, config=EvalConfig(max_tokens=6))
        runs = outcome.runs
        ids = {side: {c.case_id: c.token_ids for c in store.cases(runs[side].id) if c.sample == 0}
               for side in ("baseline", "candidate")}
        passed = {c.case_id: c.passed for c in store.cases(runs["baseline"].id) if c.sample == 0}
    parted = outcome.report["tokens"]["divergences"]
    differing = {i for i in ids["baseline"] if ids["baseline"][i] != ids["candidate"][i]}
    assert differing and set(parted) == differing
    for i, d in parted.items():
        a, b = ids["baseline"][i], ids["candidate"][i]
        assert a[: d["position"]] == b[: d["position"]] and a[d["position"]] != b[d["position"]]
        # Each model's own greedy token is its argmax on the shared prefix, so neither margin is negative.
        assert d["baseline_margin"] > -1e-3 and d["candidate_margin"] > -1e-3
        assert d["near_tie"] == (d["baseline_margin"] < 0.1)
        assert isinstance(d["baseline_token"], str) and isinstance(d["candidate_token"], str)
    fragile = outcome.report["tokens"]["fragile"]
    assert {"j0", "j1"} <= {f["case_id"] for f in fragile}  # these two models' critical cases are near ties
    assert [f["margin"] for f in fragile] == sorted(f["margin"] for f in fragile)
    assert all(-1e-3 < f["margin"] < 0.1 and f["critical"] == f["case_id"].startswith(("j0", "j1"))
               and f["baseline_passed"] == passed[f["case_id"]] for f in fragile)


def test_flips_carry_the_divergence_and_the_gate_marks_a_near_tie() -> None:
    from quantgate.evaluate.compare import compare_runs
    from quantgate.evaluate.gate import evaluate_gate
    from quantgate.store.runs import CaseRecord, RunRecord

    def record(case_id: str, passed: bool) -> CaseRecord:
        return CaseRecord(case_id, 0, passed, "x", [{"type": "is-json", "passed": passed, "code": "ok", "reason": ""}],
                          {"completion_tokens": 1}, {"total_s": 0.1}, [1])

    run = RunRecord("r", "2026-12-07", "t", "g", "sha", {})
    info = {"c1": {"tags": [], "critical": True}, "c2": {"tags": [], "critical": True}}
    divergences = {"c1": {"position": 3, "baseline_token": " true", "candidate_token": " false",
                          "baseline_margin": 0.0008, "candidate_margin": 0.002, "near_tie": True},
                   "c2": {"position": 0, "baseline_token": "{", "candidate_token": "I",
                          "baseline_margin": 4.2, "candidate_margin": 0.3, "near_tie": False}}
    report = compare_runs(run, [record("c1", True), record("c2", True)], run,
                          [record("c1", False), record("c2", False)], info,
                          token_report={"positions": 2, "divergences": divergences})
    flips = {f["case_id"]: f for f in report["behaviour"]["flips"]}
    assert flips["c1"]["divergence"]["baseline_margin"] == 0.0008 and flips["c2"]["divergence"]["position"] == 0
    rule = next(r for r in evaluate_gate(report).results if r.rule == "critical_regressions")
    assert rule.outcome == "fail"  # a near tie still counts
    assert "c1 (near tie in the baseline: margin 0.0008 nats)" in rule.reason and "c2 (" not in rule.reason
