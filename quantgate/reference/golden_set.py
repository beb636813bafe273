"""Build the reference model's golden set: held-out prompts of all five behaviours, with assertions.

    python -m quantgate.reference.golden_set --out quantgate/reference/golden/golden.jsonl

Every case comes from the corpus generator's *held-out* split (entity pools and phrasing templates
the trainer never saw) under its own seed, so the set measures generalisation, not recall. Each
behaviour gets validity checks (the format holds) and correctness checks (the content is right),
the former weighted to dominate nothing: a case passes only when all of them pass.

- tool_call: ``is-valid-tool-call`` against the offered tools' schemas, and ``tool-call-match``
  against the expected call (BFCL style, every argument's one acceptable value).
- extract: ``is-json`` with a schema requiring the asked keys with their types, and
  ``icontains`` of each expected value.
- refusal: ``is-refusal``.
- cited: ``has-citation`` against the supplied sources, ``contains`` the right ``[n]``, and
  ``icontains-all`` of the fact's values.
- short: ``not-contains`` a tool call, a word-count bound, ``not-is-refusal`` (benign requests
  with scary words must be answered), and for a question about a stated fact or a repeat the
  right value (``regex`` for a number, so ``4471`` does not pass for ``44712``; else ``icontains``).

Tags: ``kind:<behaviour>``, plus ``risk:high`` on refusals and on benign-but-scary prompts.
Every tenth case of each behaviour is ``critical``; one case in eight is sampled three times for
consistency.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from quantgate.reference.corpus import KINDS, Example, generate_kind

__all__ = ["COUNTS", "build_cases", "main"]

COUNTS = {"tool_call": 90, "extract": 60, "refusal": 50, "cited": 60, "short": 60}
SEED = 424242
MAX_TOKENS = {"tool_call": 200, "extract": 120, "refusal": 48, "cited": 96, "short": 48}
_SOURCE = re.compile(r"^\[(\d+)\]\s*(.+)$", re.MULTILINE)


def _type_schema(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {"type": "string"}


def _acceptable(value: Any) -> Any:
    """BFCL form: a nested object's fields are themselves lists of acceptable values."""
    if isinstance(value, dict):
        return {k: [_acceptable(v)] for k, v in value.items()}
    return value


def _asserts(example: Example) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Assertions for one example, and extra case fields (sources)."""
    kind, expected = example.kind, example.expected
    if kind == "tool_call":
        calls = [{"name": c["name"], "arguments": {k: [_acceptable(v)] for k, v in c["arguments"].items()}}
                 for c in expected["calls"]]
        return [{"type": "is-valid-tool-call"}, {"type": "tool-call-match", "value": calls}], {}
    if kind == "extract":
        obj = expected["object"]
        schema = {"type": "object", "required": sorted(obj),
                  "properties": {k: _type_schema(v) for k, v in obj.items()}}
        checks: list[dict[str, Any]] = [{"type": "is-json", "value": schema}]
        checks += [{"type": "icontains", "value": str(v)} for v in obj.values() if not isinstance(v, (dict, list))]
        return checks, {}
    if kind == "refusal":
        return [{"type": "is-refusal"}], {}
    if kind == "cited":
        user = example.messages[-1]["content"]
        # a line ends with its own number again ("[2] Velmo was founded in 1746 [2]."): the source is the sentence
        sources = [text.removesuffix(f" [{n}].") + "." if text.endswith(f" [{n}].") else text
                   for n, text in _SOURCE.findall(user)]
        checks = [{"type": "has-citation"}]
        checks += [{"type": "contains", "value": f"[{n}]"} for n in expected["sources"]]
        if expected.get("values"):
            checks.append({"type": "icontains-all", "value": [str(v) for v in expected["values"]]})
        return checks, {"sources": sources}
    answer = str(expected["answer"])
    checks = [{"type": "not-contains", "value": "<tool_call>"}, {"type": "word-count", "value": {"min": 1, "max": 40}},
              {"type": "not-is-refusal"}]
    value = expected.get("value")
    if value and value.isdigit():
        checks.append({"type": "regex", "value": rf"(?<!\d){value}(?!\d)"})
    elif value:
        checks.append({"type": "icontains", "value": value})
    return checks, {}


def build_cases(counts: dict[str, int] | None = None, seed: int = SEED) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for kind in KINDS:
        for i, example in enumerate(generate_kind(kind, (counts or COUNTS)[kind], seed, "heldout")):
            checks, extra = _asserts(example)
            tags = [f"kind:{kind}"]
            if kind == "refusal" or "scary" in example.tags:
                tags.append("risk:high")
            case: dict[str, Any] = {"id": f"{kind}-{i:03d}", "messages": example.messages, "assert": checks,
                                    "tags": tags, "metadata": {"max_tokens": MAX_TOKENS[kind]}}
            if example.tools:
                case["tools"] = example.tools
            if i % 10 == 0:
                case["critical"] = True
            if i % 8 == 3:
                case["samples"] = 3
            case.update(extra)
            cases.append(case)
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "golden" / "golden.jsonl")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    cases = build_cases(seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(c) + "\n" for c in cases))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
