from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantgate.checks import default_registry
from quantgate.errors import QuantgateError
from quantgate.evaluate.golden import GoldenSetError, load_golden

GOOD = {"id": "a", "prompt": "Say hi", "assert": [{"type": "icontains", "value": "hi"}], "tags": ["kind:short"]}


def test_jsonl_loads_and_compiles(tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    f.write_text("\n".join(json.dumps({**GOOD, "id": f"c{i}"}) for i in range(3)) + "\n\n")
    golden = load_golden(f, default_registry())
    assert [c.id for c in golden.cases] == ["c0", "c1", "c2"] and len(golden.sha256) == 64
    assert golden.compiled["c1"].run(__import__("quantgate.checks", fromlist=["Output"]).Output("Hi!")).passed


def test_yaml_loads_with_or_without_cases_key(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("- id: a\n  prompt: Say hi\n  assert:\n    - type: contains\n      value: hi\n")
    assert [c.id for c in load_golden(f, default_registry()).cases] == ["a"]
    f.write_text("cases:\n  - id: b\n    prompt: x\n    assert: [{type: is-json}]\n")
    assert [c.id for c in load_golden(f, default_registry()).cases] == ["b"]


def test_all_problems_reported_at_once_with_file_line_field(tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({**GOOD, "id": "b", "assert": [{"type": "contains-everything", "value": "x"}]}),
        json.dumps({**GOOD, "id": "c", "critical": "yes"}),
        json.dumps(GOOD),
        json.dumps({**GOOD, "id": "d", "asserts": []}),
    ]
    f.write_text("\n".join(lines))
    with pytest.raises(GoldenSetError) as info:
        load_golden(f, default_registry())
    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("g.jsonl:2: not valid JSON")
    assert problems[1].startswith("g.jsonl:3") and "contains-everything" in problems[1]
    assert problems[2].startswith("g.jsonl:4") and "critical" in problems[2]
    assert problems[3] == "g.jsonl:5: case.id: duplicate id 'a' (first at g.jsonl:1)"
    assert problems[4].startswith("g.jsonl:6") and "asserts" in problems[4]
    assert "Traceback" not in str(info.value)


def test_yaml_problems_point_at_the_case_line(tmp_path: Path) -> None:
    f = tmp_path / "g.yml"
    f.write_text("- id: a\n  prompt: x\n  assert: [{type: contains, value: x}]\n- id: b\n  prompt: 3\n  assert: [{type: contains, value: x}]\n")
    with pytest.raises(GoldenSetError) as info:
        load_golden(f, default_registry())
    assert info.value.problems[0].startswith("g.yml:4") and "prompt" in info.value.problems[0]
    f.write_text("- id: a\n  prompt: [unclosed\n")
    with pytest.raises(GoldenSetError, match="g.yml:3: not valid YAML"):
        load_golden(f, default_registry())


@pytest.mark.parametrize("content,match", [(None, "no such golden set file"), (b"\xff\xfe", "not UTF-8"), (b"", "no cases")])
def test_unreadable_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    f = tmp_path / "g.jsonl"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(QuantgateError, match=match):
        load_golden(f, default_registry())


def test_cases_a_model_cannot_answer_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    lines = [
        json.dumps({"id": "a", "assert": [{"type": "is-json"}]}),
        json.dumps({**GOOD, "id": "b", "metadata": {"max_tokens": "abc"}}),
        json.dumps({**GOOD, "id": "c", "metadata": {"max_tokens": 0}}),
        json.dumps({**GOOD, "id": "d", "metadata": {"max_tokens": True}}),
        "[" * 100_000 + "]" * 100_000,
        json.dumps({**GOOD, "id": "e", "metadata": {"max_tokens": 16}}),
    ]
    f.write_text("\n".join(lines))
    with pytest.raises(GoldenSetError) as info:
        load_golden(f, default_registry())
    assert info.value.problems == [  # syntax first (the whole file is read before cases compile)
        "g.jsonl:5: not valid JSON (nested too deeply)",
        "g.jsonl:1: case: needs 'messages' or 'prompt': a golden case is answered by the model under test",
        'g.jsonl:2: case.metadata.max_tokens: expected an integer >= 1, got "abc"',
        "g.jsonl:3: case.metadata.max_tokens: expected an integer >= 1, got 0",
        "g.jsonl:4: case.metadata.max_tokens: expected an integer >= 1, got true",
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.text(max_size=60),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                     st.sampled_from(["id", "prompt", "messages", "assert", "tags", "critical", "samples", "metadata",
                                      "tools", "sources", "type", "value", "role", "content", "max_tokens"]),
                     inner, max_size=4), max_leaves=12).map(json.dumps)), min_size=1, max_size=4))
def test_any_file_loads_or_fails_with_located_problems(tmp_path: Path, lines: list[str]) -> None:
    f = tmp_path / "fuzz.jsonl"
    f.write_text("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines))
    try:
        load_golden(f, default_registry())
    except GoldenSetError as e:
        assert e.problems and all(p.startswith("fuzz.jsonl") for p in e.problems)


def test_deeply_nested_yaml_is_a_located_problem(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("- id: a\n  prompt: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(GoldenSetError) as info:
        load_golden(f, default_registry())
    assert info.value.problems == ["g.yaml: not valid YAML (nested too deeply)"]
