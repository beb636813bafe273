"""is-json / contains-json: RFC 8259 strictness, schemas, response_format, JSON inside text."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.checks import CheckConfigError
from quantgate.checks.json_checks import find_json_values
from quantgate.checks.tool_parsing import strict_json_loads

from .helpers import verdict

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
RFC_WS = st.text(alphabet=" \t\r\n", max_size=4)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@settings(max_examples=150, deadline=None)
@given(JSON_VALUES, RFC_WS, RFC_WS, st.booleans())
def test_is_json_accepts_any_serialised_value(value: object, lead: str, trail: str, ascii_only: bool) -> None:
    text = lead + json.dumps(value, ensure_ascii=ascii_only) + trail
    assert strict_json_loads(text) == value
    assert verdict("is-json", text).passed


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_strict_parser_matches_stdlib_or_rejects(text: str) -> None:
    """Never crashes; accepts only what the stdlib accepts, minus NaN/Infinity."""
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises(ValueError):
            strict_json_loads(text)
        return
    if _contains_non_finite(expected):
        with pytest.raises(ValueError):
            strict_json_loads(text)
    else:
        assert strict_json_loads(text) == expected


def _contains_non_finite(v: object) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, list):
        return any(map(_contains_non_finite, v))
    if isinstance(v, dict):
        return any(map(_contains_non_finite, v.values()))
    return False


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[Infinity]",
        '{"a": -Infinity}',
        "[1, 2,]",
        '{"a": 1,}',
        '{"a": 1} // c',
        "/* c */ {}",
        "{'a': 1}",
        '{"a": 1}{"b": 2}',
        "",
        "   ",
        '\ufeff{"a": 1}',
        '"tab\there"',
        "01",
        "[1] x",
        '```json\n{"a": 1}\n```',
        "\u00a0{}",
    ],
)
def test_is_json_rejects_non_rfc(text: str) -> None:
    v = verdict("is-json", text)
    assert (v.passed, v.code) == (False, "json.parse_error"), text


def test_is_json_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    v = verdict("is-json", "[" * 100_000 + "]" * 100_000)
    assert (v.passed, v.code) == (False, "json.parse_error")


def test_is_json_schema() -> None:
    assert verdict("is-json", '{"name": "Ana", "age": 31}', PERSON).passed
    v = verdict("is-json", '{"name": "Ana", "age": "31"}', PERSON)
    assert (v.passed, v.code) == (False, "json.schema_mismatch")
    assert "$.age" in v.reason and "integer" in v.reason
    v = verdict("is-json", '{"name": "Ana"}', PERSON)
    assert "'age' is a required property" in v.reason
    assert not verdict("is-json", '{"name": "Ana", "age": 1, "x": 0}', PERSON).passed


def test_is_json_uses_response_format_schema_without_value() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    v = verdict("is-json", '{"name": "Ana"}', response_format=rf)
    assert (v.passed, v.code) == (False, "json.schema_mismatch")
    assert "response_format" in v.reason
    assert verdict("is-json", '{"name": "Ana", "age": 3}', response_format=rf).passed
    assert verdict("is-json", '{"x": 1}', response_format={"type": "json_object"}).passed


def test_not_is_json() -> None:
    assert verdict("not-is-json", "plain words").passed
    v = verdict("not-is-json", "{}")
    assert (v.passed, v.code) == (False, "json.valid")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('Here you go: {"name": "Ana", "age": 31}. Anything else?', [{"name": "Ana", "age": 31}]),
        ('```json\n{"name": "Ana", "age": 31}\n```', [{"name": "Ana", "age": 31}]),
        ("```\n[1, 2, 3]\n```", [[1, 2, 3]]),
        ('a {broken {"ok": true} tail', [{"ok": True}]),
        ("see [1] and [2]", []),
        ("no json at all", []),
        ('{"a": NaN} then {"b": 1}', [{"b": 1}]),
    ],
)
def test_find_json_values(text: str, found: list[object]) -> None:
    got = list(find_json_values(text))
    for item in found:
        assert item in got
    if not found:
        assert got == []


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3),
    st.text(alphabet=st.characters(blacklist_characters='{}[]`"\\'), max_size=30),
    st.text(alphabet=st.characters(blacklist_characters='{}[]`"\\'), max_size=30),
    st.booleans(),
)
def test_contains_json_finds_embedded_objects(obj: dict[str, object], before: str, after: str, fenced: bool) -> None:
    body = json.dumps(obj)
    text = f"{before}\n```json\n{body}\n```\n{after}" if fenced else f"{before} {body} {after}"
    assert obj in list(find_json_values(text))
    assert verdict("contains-json", text).passed


def test_contains_json_with_schema() -> None:
    text = 'First {"name": "Ana"} then {"name": "Ben", "age": 40}.'
    assert verdict("contains-json", text, PERSON).passed
    v = verdict("contains-json", 'Only {"name": "Ana"} here', PERSON)
    assert (v.passed, v.code) == (False, "json.schema_mismatch")
    v = verdict("contains-json", "nothing", PERSON)
    assert (v.passed, v.code) == (False, "json.not_found")
    v = verdict("not-contains-json", 'x {"a": 1}')
    assert (v.passed, v.code) == (False, "json.valid")


def test_bad_schemas_are_config_errors() -> None:
    with pytest.raises(CheckConfigError, match=r"test:1: case.assert\[0\].value: is-json: invalid JSON Schema"):
        verdict("is-json", "{}", {"type": "nonsense"})
    with pytest.raises(CheckConfigError, match="a JSON Schema is an object or a boolean, got string"):
        verdict("contains-json", "{}", "schema")
    with pytest.raises(CheckConfigError, match=r"case.response_format.json_schema.schema: invalid JSON Schema"):
        verdict("is-json", "{}", response_format={"type": "json_schema", "json_schema": {"schema": {"type": 5}}})
