"""Parsing cases, assertions, outputs and check lines: every bad field names where it is."""

from __future__ import annotations

from typing import Any

import pytest

from quantgate.checks import CheckConfigError, parse_assertion, parse_case, parse_check_line, parse_output

BASE = {"id": "c1", "assert": [{"type": "contains", "value": "x"}]}


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"id": None}, "f:3: case.id: expected a non-empty string, got null"),
        ({"id": ""}, "case.id: expected a non-empty string"),
        ({"id": True}, "case.id: expected a non-empty string, got boolean"),
        ({"assert": []}, "case.assert: expected a non-empty list of assertions, got an empty list"),
        ({"assert": {"type": "contains"}}, "case.assert: expected a non-empty list of assertions, got object"),
        ({"assert": ["contains"]}, "case.assert[0]: expected an assertion object"),
        ({"assert": [{"value": "x"}]}, "case.assert[0].type: expected a check type name, got null"),
        ({"assert": [{"type": 3}]}, "case.assert[0].type: expected a check type name, got integer"),
        ({"assert": [{"type": "contains", "weight": "2"}]}, "case.assert[0].weight: expected a number >= 0"),
        ({"assert": [{"type": "contains", "weight": -1}]}, "case.assert[0].weight: expected a number >= 0"),
        ({"assert": [{"type": "contains", "weight": True}]}, "case.assert[0].weight: expected a number >= 0"),
        ({"assert": [{"type": "contains", "threshold": "high"}]}, "case.assert[0].threshold: expected a number"),
        ({"assert": [{"type": "contains", "metric": 1}]}, "case.assert[0].metric: expected a string"),
        (
            {"assert": [{"type": "contains", "transform": "x"}]},
            "unknown assertion field(s) 'transform' (promptfoo-only",
        ),
        ({"asserts": []}, "case: unknown case field(s) 'asserts'"),
        ({"tags": "smoke"}, "case.tags: expected a list of strings, got string"),
        ({"tags": ["a", 1]}, "case.tags[1]: expected a string, got integer"),
        ({"critical": "yes"}, "case.critical: expected true or false, got string"),
        ({"samples": 0}, "case.samples: expected an integer >= 1, got 0"),
        ({"samples": 1.5}, "case.samples: expected an integer >= 1"),
        ({"tools": {"name": "f"}}, "case.tools: expected a list of tool objects, got object"),
        ({"tools": ["f"]}, "case.tools[0]: expected a tool object, got string"),
        ({"messages": [{"content": "hi"}]}, "case.messages[0].role: expected a string, got null"),
        ({"messages": "hi"}, "case.messages: expected a list of message objects"),
        ({"prompt": ["hi"]}, "case.prompt: expected a string, got array"),
        ({"response_format": "json"}, "case.response_format: expected an object, got string"),
        ({"vars": []}, "case.vars: expected an object, got array"),
        ({"description": 1}, "case.description: expected a string"),
        ({"sources": "doc"}, "case.sources: expected a list of strings or objects, got string"),
    ],
)
def test_bad_case_fields(patch: dict[str, Any], fragment: str) -> None:
    raw = {**BASE, **patch}
    raw = {k: v for k, v in raw.items() if not (k == "id" and v is None)}
    with pytest.raises(CheckConfigError) as exc:
        parse_case(raw, "f:3")
    assert fragment in str(exc.value), str(exc.value)


def test_good_case_round_trip() -> None:
    case = parse_case(
        {
            "id": 7,
            "prompt": "hi",
            "tags": ["a"],
            "critical": True,
            "samples": 3,
            "sources": ["s", {"t": 1}],
            "vars": {"x": 1},
            "metadata": {"m": 2},
            "description": "d",
            "assert": [{"type": "not-contains", "value": "x", "weight": 2, "threshold": 0.5, "metric": "m"}],
        },
        "f:1",
    )
    assert (case.id, case.critical, case.samples, case.tags, case.where) == ("7", True, 3, ("a",), "f:1")
    (a,) = case.assertions
    assert (a.type, a.value, a.weight, a.threshold, a.metric) == ("not-contains", "x", 2.0, 0.5, "m")
    assert parse_case({"id": "x"}, "f:1", require_assertions=False).assertions == ()


def test_parse_assertion_defaults() -> None:
    a = parse_assertion({"type": "is-json"}, "f:1")
    assert (a.value, a.weight, a.threshold, a.metric) == (None, 1.0, None, None)


@pytest.mark.parametrize(
    "raw",
    [
        "plain text",
        {"role": "assistant", "content": "plain text"},
        {
            "content": [
                {"type": "text", "text": "plain "},
                {"type": "image_url", "image_url": {}},
                {"type": "text", "text": "text"},
            ]
        },
        {"message": {"role": "assistant", "content": "plain text"}, "finish_reason": "stop"},
        {
            "choices": [{"message": {"role": "assistant", "content": "plain text"}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 2},
        },
    ],
)
def test_output_shapes(raw: Any) -> None:
    out = parse_output(raw, "f:1")
    assert out.text == "plain text"
    if isinstance(raw, dict) and ("choices" in raw or "message" in raw):
        assert out.finish_reason == "stop"
    if isinstance(raw, dict) and "usage" in raw:
        assert out.completion_tokens == 2


def test_output_tool_calls() -> None:
    out = parse_output(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": 2}}},
                {"id": "c", "type": "function", "function": {"name": "h", "arguments": "{nope"}},
            ],
        },
        "f:1",
    )
    assert [(c.name, c.arguments, c.id) for c in out.tool_calls[:2]] == [("f", {"x": 1}, "a"), ("g", {"y": 2}, "b")]
    assert out.tool_calls[2].error is not None and out.text == ""


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (["text"], "f:1: output: expected a string or an assistant message object, got array"),
        (None, "output: expected a string or an assistant message object, got null"),
        ({"role": "user", "content": "x"}, "output.role: expected 'assistant'"),
        ({"content": 5}, "output.content: expected a string, a list of content parts or null, got integer"),
        ({"content": [{"type": "text", "text": 5}]}, "output.content[0].text: expected a string"),
        ({"content": ["x"]}, "output.content[0]: expected a content part object"),
        ({"tool_calls": {"a": 1}}, "output.tool_calls: expected a list, got object"),
        ({"tool_calls": [{"type": "function"}]}, "output.tool_calls[0]: expected"),
        (
            {"tool_calls": [{"function": {"name": 1, "arguments": "{}"}}]},
            "output.tool_calls[0].function.name: expected a string",
        ),
        (
            {"tool_calls": [{"function": {"name": "f", "arguments": 3}}]},
            "output.tool_calls[0].function.arguments: expected a JSON string",
        ),
        ({"choices": []}, "output.choices: expected a non-empty list"),
        ({"message": {"content": "x"}, "finish_reason": 1}, "output.finish_reason: expected a string"),
        (
            {"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": "3"}},
            "output.usage.completion_tokens: expected an integer >= 0",
        ),
        ({"content": "x", "refusal": 1}, "output.refusal: expected a string or null"),
    ],
)
def test_bad_outputs(raw: Any, fragment: str) -> None:
    with pytest.raises(CheckConfigError) as exc:
        parse_output(raw, "f:1")
    assert fragment in str(exc.value), str(exc.value)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ([1], 'f:2: expected an object {"case": ..., "output": ...}, got array'),
        ({"output": "x"}, "f:2: case: missing"),
        ({"case": BASE}, "f:2: output: missing"),
        ({"case": BASE, "output": "x", "extra": 1}, "unknown line field(s) 'extra'"),
        ({"case": BASE, "output": "x", "finish_reason": 1}, "f:2: finish_reason: expected a string"),
        ({"case": BASE, "output": "x", "usage": []}, "f:2: usage: expected an object"),
        ({"case": BASE, "output": "x", "sample": "1"}, "f:2: sample: expected an integer"),
        ({"case": "c1", "output": "x"}, "f:2: case: expected a case object, got string"),
    ],
)
def test_bad_check_lines(line: Any, fragment: str) -> None:
    from quantgate.errors import QuantgateError

    with pytest.raises(QuantgateError) as exc:
        parse_check_line(line, "f:2")
    assert fragment in str(exc.value), str(exc.value)


def test_check_line_fields() -> None:
    case, out, sample = parse_check_line(
        {"case": BASE, "output": "x", "finish_reason": "length", "usage": {"completion_tokens": 9}, "sample": 2}, "f:1"
    )
    assert (case.id, out.text, out.finish_reason, out.completion_tokens, sample) == ("c1", "x", "length", 9, 2)
