"""Text checks: each type passing and failing, negation, and bad values."""

from __future__ import annotations

import pytest

from quantgate.checks import CheckConfigError, Output

from .helpers import verdict


@pytest.mark.parametrize(
    ("type_", "value", "output", "passed", "code"),
    [
        ("equals", "Paris", "Paris", True, "ok"),
        ("equals", "Paris", "Paris.", False, "text.mismatch"),
        ("equals", 42, "42", True, "ok"),
        ("equals", {"a": 1}, ' {"a": 1} ', True, "ok"),
        ("equals", {"a": 1}, '{"a": 2}', False, "text.mismatch"),
        ("equals", [1, 2], "not json", False, "text.mismatch"),
        ("contains", "Paris", "The capital is Paris.", True, "ok"),
        ("contains", "paris", "The capital is Paris.", False, "text.not_found"),
        ("icontains", "paris", "The capital is PARIS.", True, "ok"),
        ("icontains", "rome", "The capital is Paris.", False, "text.not_found"),
        ("contains-all", ["a", "b"], "a and b", True, "ok"),
        ("contains-all", ["a", "z"], "a and b", False, "text.not_found"),
        ("icontains-all", ["A", "B"], "a and b", True, "ok"),
        ("icontains-all", ["A", "Z"], "a and b", False, "text.not_found"),
        ("contains-any", ["x", "b"], "a and b", True, "ok"),
        ("contains-any", ["x", "y"], "a and b", False, "text.not_found"),
        ("icontains-any", ["X", "B"], "a and b", True, "ok"),
        ("icontains-any", ["X", "Y"], "a and b", False, "text.not_found"),
        ("regex", r"\d{3}-\d{4}", "call 555-1234 now", True, "ok"),
        ("regex", r"^\d+$", "12a", False, "text.no_match"),
        ("starts-with", "Yes", "Yes, it is.", True, "ok"),
        ("starts-with", "Yes", "No.", False, "text.wrong_prefix"),
        ("word-count", 3, "one two  three", True, "ok"),
        ("word-count", 3, "one two", False, "length.out_of_range"),
        ("word-count", {"min": 2, "max": 4}, "a b c", True, "ok"),
        ("word-count", {"max": 2}, "a b c", False, "length.out_of_range"),
        ("word-count", {"min": 1}, "", False, "length.out_of_range"),
    ],
)
def test_text_checks(type_: str, value: object, output: str, passed: bool, code: str) -> None:
    v = verdict(type_, output, value)
    assert (v.passed, v.code) == (passed, code), v.reason
    assert v.score == (1.0 if passed else 0.0)
    assert v.reason


@pytest.mark.parametrize(
    ("type_", "value", "output", "passed", "code"),
    [
        ("not-contains", "As an AI", "Hello there.", True, "ok"),
        ("not-contains", "As an AI", "As an AI, I think so.", False, "text.found"),
        ("not-icontains", "sorry", "SORRY!", False, "text.found"),
        ("not-equals", "a", "b", True, "ok"),
        ("not-equals", "a", "a", False, "text.equal"),
        ("not-regex", r"\d", "no digits", True, "ok"),
        ("not-regex", r"\d", "1 digit", False, "text.match"),
        ("not-starts-with", "Sure", "Sure!", False, "text.prefix"),
        ("not-contains-any", ["x", "y"], "abc", True, "ok"),
        ("not-contains-all", ["a", "b"], "ab", False, "text.found"),
        ("not-word-count", {"max": 3}, "a b", False, "length.in_range"),
    ],
)
def test_negation(type_: str, value: object, output: str, passed: bool, code: str) -> None:
    v = verdict(type_, output, value)
    assert (v.passed, v.code, v.type) == (passed, code, type_)
    assert v.score == (1.0 if passed else 0.0)


def test_token_count_uses_usage_then_tokenizer() -> None:
    assert verdict("token-count", Output("x y", completion_tokens=5), {"max": 5}).passed
    v = verdict("token-count", Output("x y", completion_tokens=6), {"max": 5})
    assert (v.passed, v.code) == (False, "length.out_of_range")
    v = verdict("token-count", "x y", {"max": 5})
    assert (v.passed, v.code, v.errored) == (False, "length.tokens_unknown", True)
    # Negation never turns "could not evaluate" into a pass.
    v = verdict("not-token-count", "x y", {"max": 5})
    assert (v.passed, v.errored) == (False, True)
    from quantgate.checks import default_registry

    reg = default_registry(count_tokens=lambda s: len(s.split()))
    assert verdict("token-count", "x y", 2, registry=reg).passed
    assert not verdict("token-count", "x y z", 2, registry=reg).passed


def test_finish_reason() -> None:
    assert verdict("finish-reason", Output("hi", finish_reason="stop"), "stop").passed
    assert verdict("finish-reason", Output("hi", finish_reason="end_turn"), "stop").passed  # alias
    v = verdict("finish-reason", Output("hi", finish_reason="length"), "stop")
    assert (v.passed, v.code) == (False, "finish_reason.mismatch")
    v = verdict("finish-reason", "hi", "stop")
    assert (v.passed, v.code, v.errored) == (False, "finish_reason.missing", True)
    assert verdict("not-finish-reason", Output("hi", finish_reason="length"), "stop").passed


@pytest.mark.parametrize(
    ("type_", "value", "fragment"),
    [
        ("contains", None, "expected a string, got null"),
        ("contains", ["a"], "expected a string, got array"),
        ("contains", True, "expected a string, got boolean"),
        ("contains-all", "abc", "expected a non-empty list of strings"),
        ("contains-any", [], "expected a non-empty list of strings"),
        ("contains-any", ["a", {"b": 1}], "value[1]: contains-any: expected a string, got object"),
        ("regex", "(unclosed", "invalid regular expression"),
        ("regex", 5, "expected a regular expression string"),
        ("word-count", -1, "cannot be negative"),
        ("word-count", {"min": 5, "max": 2}, "min 5 is greater than max 2"),
        ("word-count", {"least": 2}, "expected a count or"),
        ("word-count", {"min": "2"}, "value.min: word-count: expected a non-negative integer"),
        ("word-count", 2.5, "expected a count or"),
        ("finish-reason", None, "expected a finish reason string"),
    ],
)
def test_bad_values_name_line_and_field(type_: str, value: object, fragment: str) -> None:
    with pytest.raises(CheckConfigError) as exc:
        verdict(type_, "x", value) if value is not None else verdict(type_, "x")
    msg = str(exc.value)
    assert msg.startswith("test:1: case.assert[0]"), msg
    assert fragment in msg, msg
