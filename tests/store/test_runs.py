from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.errors import QuantgateError
from quantgate.store.runs import CaseRecord, RunStore


def _case(i: int, passed: bool = True) -> CaseRecord:
    return CaseRecord(case_id=f"c{i}", sample=0, passed=passed, output={"role": "assistant", "content": f"a{i}"},
                      verdicts=[{"type": "equals", "passed": passed}], usage={"prompt_tokens": 3, "completion_tokens": 2},
                      timings={"total_s": 0.1}, token_ids=[1, 2], logprobs=[-0.5, -0.25])


def test_round_trip_survives_reopen_and_exports(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        run = store.create_run("out/int8wo", "golden.jsonl", "abc", {"variant": "int8wo"})
        for i in range(3):
            store.add_case(run.id, _case(i, passed=i != 1))
    with RunStore(path) as store:
        again = store.get_run(run.id)
        assert again == run
        cases = list(store.cases(run.id))
        assert [c.case_id for c in cases] == ["c0", "c1", "c2"]
        assert [c.passed for c in cases] == [True, False, True]
        assert cases[0] == _case(0)
        n = store.export_jsonl(run.id, tmp_path / "run.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert n == 3 and lines[0]["run"]["id"] == run.id and lines[2]["passed"] is False


def test_unknown_run_names_recent_ones(tmp_path: Path) -> None:
    with RunStore(tmp_path / "r.sqlite") as store:
        run = store.create_run("m", "g", "h")
        with pytest.raises(QuantgateError, match=f"no run 'nope' \\(latest: {run.id}\\)"):
            store.get_run("nope")


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(QuantgateError, match="not a quantgate run store"):
        RunStore(bad)
