"""Tool calls: the Hermes text parser, is-valid-tool-call codes, tool-call-match (BFCL rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.checks import CheckConfigError, Output, ToolCall, parse_tool_calls_from_text

from .helpers import verdict

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
                "coords": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                    "additionalProperties": False,
                },
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city"],
        },
    },
}
NOARGS = {"type": "function", "function": {"name": "now"}}
TOOLS = [WEATHER, NOARGS]


def msg(*calls: tuple[str, Any]) -> dict[str, Any]:
    """An OpenAI assistant message; a str arguments value is sent as-is (maybe broken JSON)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)},
            }
            for i, (n, a) in enumerate(calls)
        ],
    }


def hermes(*calls: tuple[str, Any]) -> str:
    return "\n".join(f"<tool_call>{json.dumps({'name': n, 'arguments': a})}</tool_call>" for n, a in calls)


# ---------------------------------------------------------------- parsing

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
ARGS = st.dictionaries(
    st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(max_size=10), max_size=4
)
FILLER = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(NAMES, ARGS), min_size=0, max_size=4), FILLER, FILLER)
def test_parse_tool_calls_round_trip(calls: list[tuple[str, dict[str, Any]]], before: str, after: str) -> None:
    text = before + hermes(*calls) + after
    parsed = parse_tool_calls_from_text(text)
    assert [(c.name, c.arguments) for c in parsed] == calls
    assert all(c.error is None for c in parsed)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_parse_tool_calls_never_crashes(junk: str) -> None:
    for text in (junk, f"<tool_call>{junk}</tool_call>", f"<tool_call>{junk}"):
        for call in parse_tool_calls_from_text(text):
            assert isinstance(call, ToolCall)
            assert call.error is not None or isinstance(call.name, str)


def test_parse_tool_calls_shapes() -> None:
    assert parse_tool_calls_from_text("no calls here") == []
    (c,) = parse_tool_calls_from_text('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert (c.name, c.arguments) == ("f", {"a": 1})  # arguments as a JSON string
    (c,) = parse_tool_calls_from_text('<tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>')
    assert c.arguments == {"a": 1}
    (c,) = parse_tool_calls_from_text('<tool_call>{"name": "f"}</tool_call>')
    assert c.arguments == {}
    (c,) = parse_tool_calls_from_text('<tool_call>{"name": "f", "arguments": {"a": 1')  # cut off
    assert c.error is not None and "not JSON" in c.error
    (c,) = parse_tool_calls_from_text("<tool_call>[1]</tool_call>")
    assert c.error is not None and "not an object" in c.error
    (c,) = parse_tool_calls_from_text('<tool_call>{"arguments": {}}</tool_call>')
    assert c.error is not None and '"name"' in c.error
    (c,) = parse_tool_calls_from_text('<tool_call>{"name": "f", "arguments": "{bad"}</tool_call>')
    assert c.name == "f" and c.error is not None


def test_message_tool_calls_win_over_text() -> None:
    out = Output(
        '<tool_call>{"name": "x", "arguments": {}}</tool_call>', tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),)
    )
    assert [c.name for c in out.tool_calls] == ["get_weather"]
    assert [c.name for c in Output('<tool_call>{"name": "x", "arguments": {}}</tool_call>').tool_calls] == ["x"]


# ---------------------------------------------------------------- is-valid-tool-call


@pytest.mark.parametrize("shape", ["message", "hermes"])
@pytest.mark.parametrize(
    ("calls", "passed", "code"),
    [
        ([("get_weather", {"city": "Paris"})], True, "ok"),
        (
            [
                (
                    "get_weather",
                    {"city": "Paris", "unit": "celsius", "days": 3, "coords": {"lat": 1, "lon": 2.5}, "tags": ["a"]},
                )
            ],
            True,
            "ok",
        ),
        ([("get_weather", {"city": "Paris"}), ("now", {})], True, "ok"),
        ([("get_weather", {"unit": "celsius"})], False, "tool_call.missing_required"),
        ([("get_weather", {"city": 5})], False, "tool_call.type_error"),
        ([("get_weather", {"city": "Paris", "days": "3"})], False, "tool_call.type_error"),
        ([("get_weather", {"city": "Paris", "days": 2.5})], False, "tool_call.type_error"),
        ([("get_weather", {"city": "Paris", "unit": "kelvin"})], False, "tool_call.enum_mismatch"),
        ([("get_weather", {"city": "Paris", "country": "FR"})], False, "tool_call.unexpected_argument"),
        ([("get_weather", {"city": "Paris", "coords": {"lat": 1}})], False, "tool_call.missing_required"),
        (
            [("get_weather", {"city": "Paris", "coords": {"lat": 1, "lon": 2, "alt": 3}})],
            False,
            "tool_call.unexpected_argument",
        ),
        ([("get_weather", {"city": "Paris", "coords": {"lat": "1", "lon": 2}})], False, "tool_call.type_error"),
        ([("get_weather", {"city": "Paris", "tags": ["a", 1]})], False, "tool_call.type_error"),
        ([("get_weather", {"city": "Paris", "days": 0})], False, "tool_call.schema_violation"),
        ([("get_forecast", {"city": "Paris"})], False, "tool_call.unknown_function"),
        ([("now", {"x": 1})], False, "tool_call.unexpected_argument"),
        ([("get_weather", [1, 2])], False, "tool_call.arguments_not_object"),
        ([], False, "tool_call.none"),
    ],
)
def test_is_valid_tool_call(shape: str, calls: list[tuple[str, Any]], passed: bool, code: str) -> None:
    output = msg(*calls) if shape == "message" else hermes(*calls)
    v = verdict("is-valid-tool-call", output, tools=TOOLS)
    assert (v.passed, v.code) == (passed, code), v.reason


def test_is_valid_tool_call_broken_json_and_reason() -> None:
    v = verdict("is-valid-tool-call", msg(("get_weather", '{"city": "Paris",}')), tools=TOOLS)
    assert (v.passed, v.code) == (False, "tool_call.invalid_json")
    v = verdict(
        "is-valid-tool-call", '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>', tools=TOOLS
    )
    assert (v.passed, v.code) == (False, "tool_call.invalid_json")
    v = verdict(
        "is-valid-tool-call", msg(("get_weather", {"city": "Paris"}), ("get_weather", {"city": 1})), tools=TOOLS
    )
    assert v.code == "tool_call.type_error" and v.reason.startswith("call 2 (get_weather): arguments.city")
    assert v.score == 0.5


def test_is_valid_tool_call_respects_explicit_additional_properties() -> None:
    open_tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {}, "additionalProperties": True}},
    }
    assert verdict("is-valid-tool-call", hermes(("f", {"anything": 1})), tools=[open_tool]).passed


def test_is_valid_tool_call_tools_from_value_and_alias() -> None:
    assert verdict("is-valid-tool-call", hermes(("now", {})), [NOARGS]).passed
    assert verdict("is-valid-openai-tools-call", hermes(("now", {})), tools=TOOLS).passed
    v = verdict("is-valid-openai-tools-call", hermes(("nope", {})), tools=TOOLS)
    assert not v.passed and v.code.startswith("tool_call.")
    v = verdict("not-is-valid-tool-call", hermes(("now", {})), tools=TOOLS)
    assert (v.passed, v.code) == (False, "tool_call.valid")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "case.assert[0]: is-valid-tool-call: needs the request's tools"),
        ({"value": [{"type": "function"}]}, "case.assert[0].value[0]: is-valid-tool-call: a tool is"),
        ({"value": "tools"}, "needs a non-empty tools list, got string"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
            "test:1: case.tools[0].function.parameters: invalid JSON Schema",
        ),
    ],
)
def test_is_valid_tool_call_config_errors(kwargs: dict[str, Any], fragment: str) -> None:
    value = kwargs.pop("value", None)
    with pytest.raises(CheckConfigError) as exc:
        verdict("is-valid-tool-call", "x", value, **kwargs)
    assert fragment in str(exc.value)


# ---------------------------------------------------------------- tool-call-match

EXPECT = [{"name": "get_weather", "arguments": {"city": ["Paris", "Paris, France"], "unit": ["celsius", ""]}}]


@pytest.mark.parametrize(
    ("calls", "passed", "code"),
    [
        ([("get_weather", {"city": "Paris"})], True, "ok"),  # "" lets unit be omitted
        ([("get_weather", {"city": "paris, FRANCE", "unit": "Celsius"})], True, "ok"),  # normalised strings
        ([("get_weather", {"city": "Paris_France"})], True, "ok"),
        ([("get_weather", {"city": "Lyon"})], False, "tool_call_match.value_mismatch"),
        ([("get_weather", {"city": 7})], False, "tool_call_match.type_error"),
        ([("get_weather", {"unit": "celsius"})], False, "tool_call_match.missing_argument"),
        ([("get_weather", {"city": "Paris", "days": 2})], False, "tool_call_match.unexpected_argument"),
        ([("get_forecast", {"city": "Paris"})], False, "tool_call_match.name_mismatch"),
        ([("get_weather", {"city": "Paris"}), ("now", {})], False, "tool_call_match.count_mismatch"),
        ([], False, "tool_call.none"),
    ],
)
def test_tool_call_match(calls: list[tuple[str, Any]], passed: bool, code: str) -> None:
    for output in (msg(*calls), hermes(*calls)):
        v = verdict("tool-call-match", output, EXPECT)
        assert (v.passed, v.code) == (passed, code), v.reason


def test_tool_call_match_parallel_any_order_and_bfcl_shape() -> None:
    expected = [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Rome"]}}, {"now": {}}]
    out = hermes(("now", {}), ("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Paris"}))
    assert verdict("tool-call-match", out, expected).passed
    v = verdict(
        "tool-call-match",
        hermes(("now", {}), ("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Oslo"})),
        expected,
    )
    assert (v.passed, v.code) == (False, "tool_call_match.value_mismatch")
    assert v.score == pytest.approx(2 / 3)
    # Two calls that satisfy the same expected call cannot both be paired.
    v = verdict(
        "tool-call-match",
        hermes(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Paris"})),
        [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Paris", "Rome"]}}],
    )
    assert v.passed


def test_tool_call_match_numbers_lists_dicts() -> None:
    exp = [
        {
            "name": "f",
            "arguments": {
                "x": [1.5, 2.0],
                "n": [3],
                "flag": [True],
                "xs": [["a", "b"]],
                "opts": [{"mode": ["fast"], "level": [1, ""]}],
            },
        }
    ]
    good = {"x": 2, "n": 3, "flag": True, "xs": ["A", "b"], "opts": {"mode": "FAST"}}
    assert verdict("tool-call-match", hermes(("f", good)), exp).passed  # int accepted for a float
    for bad, code in [
        ({**good, "n": 3.0}, "tool_call_match.value_mismatch"),  # a float is not accepted for an int
        ({**good, "flag": 1}, "tool_call_match.type_error"),
        ({**good, "xs": ["b", "a"]}, "tool_call_match.value_mismatch"),
        ({**good, "opts": {"mode": "fast", "extra": 1}}, "tool_call_match.value_mismatch"),
        ({**good, "x": "2"}, "tool_call_match.type_error"),
    ]:
        v = verdict("tool-call-match", hermes(("f", bad)), exp)
        assert (v.passed, v.code) == (False, code), (bad, v.reason)


def test_tool_call_match_broken_call_and_negation() -> None:
    v = verdict("tool-call-match", msg(("get_weather", "{oops")), EXPECT)
    assert (v.passed, v.code) == (False, "tool_call.invalid_json")
    v = verdict("not-tool-call-match", hermes(("get_weather", {"city": "Paris"})), EXPECT)
    assert (v.passed, v.code) == (False, "tool_call_match.matched")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("get_weather", "expected a non-empty list of expected calls, got string"),
        ([], "expected a non-empty list of expected calls"),
        (
            [{"name": "f", "arguments": {"x": "Paris"}}],
            "value[0].arguments.x: tool-call-match: expected a non-empty list",
        ),
        ([{"name": "f", "arguments": {"x": []}}], "value[0].arguments.x: tool-call-match: expected a non-empty list"),
        ([{"name": "f", "args": {}}], "unknown field(s) ['args']"),
        ([{"name": 3}], "value[0].name: tool-call-match: expected a function name, got integer"),
        ([{"f": {}, "g": {}}], 'an expected call is {"name"'),
        (
            [{"name": "f", "arguments": {"o": [{"k": "v"}]}}],
            "value[0].arguments.o[0].k: tool-call-match: expected a list",
        ),
    ],
)
def test_tool_call_match_bad_values(value: Any, fragment: str) -> None:
    with pytest.raises(CheckConfigError) as exc:
        verdict("tool-call-match", "x", value)
    assert fragment in str(exc.value), str(exc.value)
