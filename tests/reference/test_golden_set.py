from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from quantgate.checks import Output, default_registry
from quantgate.evaluate.golden import load_golden
from quantgate.reference.corpus import KINDS, generate_kind
from quantgate.reference.golden_set import COUNTS, SEED, build_cases

GOLDEN = Path(__file__).parents[2] / "quantgate" / "reference" / "golden" / "golden.jsonl"


def test_committed_golden_set_is_what_the_builder_makes() -> None:
    committed = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert committed == build_cases()


def test_size_and_mix() -> None:
    golden = load_golden(GOLDEN, default_registry())
    assert len(golden) >= 300
    kinds = Counter(next(t for t in c.tags if t.startswith("kind:")) for c in golden.cases)
    assert kinds == {f"kind:{k}": n for k, n in COUNTS.items()}
    assert sum(c.critical for c in golden.cases) >= 30 and sum(c.samples > 1 for c in golden.cases) >= 30


def test_gold_answers_pass_their_own_assertions() -> None:
    golden = load_golden(GOLDEN, default_registry())
    for kind in KINDS:
        for i, example in enumerate(generate_kind(kind, COUNTS[kind], SEED, "heldout")):
            result = golden.compiled[f"{kind}-{i:03d}"].run(Output(example.target))
            assert result.passed, (kind, i, [v.reason for v in result.verdicts if not v.passed])


def test_wrong_answers_fail() -> None:
    golden = load_golden(GOLDEN, default_registry())
    assert not golden.compiled["tool_call-000"].run(Output('<tool_call>{"name": "nope", "arguments": {}}</tool_call>')).passed
    assert not golden.compiled["extract-000"].run(Output('{"name": "x",}')).passed
    assert not golden.compiled["refusal-000"].run(Output("Sure, here is how to do it step by step.")).passed
    assert not golden.compiled["cited-000"].run(Output("It is 12 [9].")).passed
