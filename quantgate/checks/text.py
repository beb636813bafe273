"""Text checks: equals, contains and its variants, regex, starts-with, lengths, finish-reason.

Semantics follow promptfoo so assertion lists carry over: ``contains`` is case-sensitive,
``icontains`` is not, ``equals`` compares the exact text (or, for an object/array value, the parsed
JSON), ``word-count`` takes an exact number or ``{min, max}``. Differences: ``regex`` is Python
``re`` syntax (searched anywhere; use ``(?i)`` for flags), and ``token-count`` is ours, counting the
line's ``usage.completion_tokens`` (or a tokenizer the caller configures) rather than guessing.

All of these look only at ``Output.text`` (an assistant message's content); tool calls are the
business of ``tools.py``.
"""

from __future__ import annotations

import re
from typing import Any

from quantgate.checks.registry import CheckFn, CheckType, CompileContext
from quantgate.checks.tool_parsing import strict_json_loads
from quantgate.checks.types import Outcome, Output

__all__ = ["TEXT_CHECKS", "clip", "type_name"]

# Alternative spellings other APIs use for the same stop reasons (Anthropic, Gemini), so a
# `finish-reason: stop` assertion holds whichever provider format the line came from.
_FINISH_ALIASES = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "tool_use": "tool_calls", "function_call": "tool_calls", "safety": "content_filter"}


def clip(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, for reasons that stay one short line."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _scalar_text(value: Any, ctx: CompileContext) -> str:
    # promptfoo stringifies numbers in text assertions; booleans and containers are mistakes.
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ctx.error(f"expected a string, got {type_name(value)}")


def _text_list(value: Any, ctx: CompileContext) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ctx.error(f"expected a non-empty list of strings, got {type_name(value)}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ctx.error(f"expected a string, got {type_name(item)}", f"value[{i}]")
        out.append(str(item))
    return out


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _equals(value: Any, ctx: CompileContext) -> CheckFn:
    if isinstance(value, (dict, list)):
        expected_json = value

        def check_json(out: Output) -> Outcome:
            try:
                got = strict_json_loads(out.text)
            except ValueError:
                return Outcome(False, 0.0, "output is not JSON, expected a JSON value", "text.mismatch")
            if got == expected_json:
                return Outcome(True, 1.0, "output JSON equals the expected value", "text.equal")
            return Outcome(False, 0.0, "output JSON differs from the expected value", "text.mismatch")

        return check_json
    expected = _scalar_text(value, ctx)

    def check(out: Output) -> Outcome:
        if out.text == expected:
            return Outcome(True, 1.0, f"output equals {clip(expected)}", "text.equal")
        at = next((i for i, (a, b) in enumerate(zip(out.text, expected)) if a != b),
                  min(len(out.text), len(expected)))
        return Outcome(False, 0.0, f"output {clip(out.text)} differs from {clip(expected)} at "
                       f"character {at}", "text.mismatch")

    return check


def _contains(value: Any, ctx: CompileContext) -> CheckFn:
    needle = _scalar_text(value, ctx)

    def check(out: Output) -> Outcome:
        if needle in out.text:
            return Outcome(True, 1.0, f"output contains {clip(needle)}", "text.found")
        return Outcome(False, 0.0, f"output does not contain {clip(needle)}", "text.not_found")

    return check


def _icontains(value: Any, ctx: CompileContext) -> CheckFn:
    needle = _scalar_text(value, ctx)
    folded = needle.casefold()

    def check(out: Output) -> Outcome:
        if folded in out.text.casefold():
            return Outcome(True, 1.0, f"output contains {clip(needle)} (ignoring case)", "text.found")
        return Outcome(False, 0.0, f"output does not contain {clip(needle)} (ignoring case)", "text.not_found")

    return check


def _make_all(ignore_case: bool) -> Any:
    def compile_all(value: Any, ctx: CompileContext) -> CheckFn:
        needles = _text_list(value, ctx)
        keys = [n.casefold() for n in needles] if ignore_case else needles

        def check(out: Output) -> Outcome:
            hay = out.text.casefold() if ignore_case else out.text
            missing = [n for n, k in zip(needles, keys) if k not in hay]
            if not missing:
                return Outcome(True, 1.0, f"output contains all {len(needles)} values", "text.found")
            return Outcome(False, 0.0, f"output lacks {len(missing)} of {len(needles)} values: "
                           + ", ".join(clip(m, 30) for m in missing[:5]), "text.not_found")

        return check

    return compile_all


def _make_any(ignore_case: bool) -> Any:
    def compile_any(value: Any, ctx: CompileContext) -> CheckFn:
        needles = _text_list(value, ctx)
        keys = [n.casefold() for n in needles] if ignore_case else needles

        def check(out: Output) -> Outcome:
            hay = out.text.casefold() if ignore_case else out.text
            for n, k in zip(needles, keys):
                if k in hay:
                    return Outcome(True, 1.0, f"output contains {clip(n)}", "text.found")
            return Outcome(False, 0.0, f"output contains none of the {len(needles)} values", "text.not_found")

        return check

    return compile_any


def _regex(value: Any, ctx: CompileContext) -> CheckFn:
    if not isinstance(value, str):
        raise ctx.error(f"expected a regular expression string, got {type_name(value)}")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ctx.error(f"invalid regular expression {clip(value)}: {exc}") from None

    def check(out: Output) -> Outcome:
        m = pattern.search(out.text)
        if m:
            return Outcome(True, 1.0, f"/{value}/ matches {clip(m.group(0), 40)}", "text.match")
        return Outcome(False, 0.0, f"/{value}/ does not match the output", "text.no_match")

    return check


def _starts_with(value: Any, ctx: CompileContext) -> CheckFn:
    prefix = _scalar_text(value, ctx)

    def check(out: Output) -> Outcome:
        if out.text.startswith(prefix):
            return Outcome(True, 1.0, f"output starts with {clip(prefix)}", "text.prefix")
        return Outcome(False, 0.0, f"output starts with {clip(out.text[: len(prefix) + 10])}, not "
                       f"{clip(prefix)}", "text.wrong_prefix")

    return check


def _bounds(value: Any, ctx: CompileContext) -> tuple[int | None, int | None]:
    """An exact count (``5``) or ``{"min": a, "max": b}`` (either may be left out)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ctx.error("a count cannot be negative")
        return value, value
    if not isinstance(value, dict) or not value or set(value) - {"min", "max"}:
        raise ctx.error(f'expected a count or {{"min": N, "max": N}}, got {value!r:.80}')
    lo, hi = value.get("min"), value.get("max")
    for name, bound in (("min", lo), ("max", hi)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
            raise ctx.error(f"expected a non-negative integer, got {bound!r:.40}", f"value.{name}")
    if lo is not None and hi is not None and lo > hi:
        raise ctx.error(f"min {lo} is greater than max {hi}")
    return lo, hi


def _within(count: int, lo: int | None, hi: int | None, unit: str) -> Outcome:
    want = (f"exactly {lo}" if lo == hi and lo is not None else
            " and ".join(p for p in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if p))
    if (lo is None or count >= lo) and (hi is None or count <= hi):
        return Outcome(True, 1.0, f"{count} {unit}, wanted {want}", "length.in_range")
    return Outcome(False, 0.0, f"{count} {unit}, wanted {want}", "length.out_of_range")


def _word_count(value: Any, ctx: CompileContext) -> CheckFn:
    lo, hi = _bounds(value, ctx)

    def check(out: Output) -> Outcome:
        return _within(len(out.text.split()), lo, hi, "words")

    return check


def _token_count(value: Any, ctx: CompileContext) -> CheckFn:
    lo, hi = _bounds(value, ctx)
    count_tokens = ctx.env.count_tokens

    def check(out: Output) -> Outcome:
        n = out.completion_tokens
        if n is None:
            if count_tokens is None:
                return Outcome(False, 0.0, "no usage.completion_tokens on the line and no tokenizer "
                               "configured", "length.tokens_unknown", errored=True)
            n = count_tokens(out.text)
        return _within(n, lo, hi, "tokens")

    return check


def _finish_reason(value: Any, ctx: CompileContext) -> CheckFn:
    if not isinstance(value, str) or not value:
        raise ctx.error(f"expected a finish reason string (stop, length, tool_calls...), got {type_name(value)}")
    want = _FINISH_ALIASES.get(value.lower(), value.lower())

    def check(out: Output) -> Outcome:
        if out.finish_reason is None:
            return Outcome(False, 0.0, "the line has no finish_reason", "finish_reason.missing", errored=True)
        got = _FINISH_ALIASES.get(out.finish_reason.lower(), out.finish_reason.lower())
        if got == want:
            return Outcome(True, 1.0, f"finish_reason is {out.finish_reason!r}", "finish_reason.match")
        return Outcome(False, 0.0, f"finish_reason is {out.finish_reason!r}, expected {value!r}",
                       "finish_reason.mismatch")

    return check


TEXT_CHECKS: tuple[CheckType, ...] = (
    CheckType("equals", _equals, "the output is exactly the value (JSON-equal for an object/array value)"),
    CheckType("contains", _contains, "the output contains the value (case-sensitive)"),
    CheckType("icontains", _icontains, "the output contains the value, ignoring case"),
    CheckType("contains-all", _make_all(False), "the output contains every value of the list"),
    CheckType("contains-any", _make_any(False), "the output contains at least one value of the list"),
    CheckType("icontains-all", _make_all(True), "contains-all, ignoring case"),
    CheckType("icontains-any", _make_any(True), "contains-any, ignoring case"),
    CheckType("regex", _regex, "the Python regular expression matches somewhere in the output"),
    CheckType("starts-with", _starts_with, "the output starts with the value"),
    CheckType("word-count", _word_count, "whitespace-separated words: exact N or {min, max}"),
    CheckType("token-count", _token_count, "completion tokens (line usage or configured tokenizer): N or {min, max}"),
    CheckType("finish-reason", _finish_reason, "the output stopped for this reason (stop, length, tool_calls...)"),
)
