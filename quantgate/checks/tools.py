"""Tool-call checks: ``is-valid-tool-call`` (schema validity) and ``tool-call-match`` (BFCL-style).

``is-valid-tool-call`` (alias ``is-valid-openai-tools-call``, promptfoo's name): every call names a
function among the request's tools (``case.tools``, or a tools list as ``value``), its arguments
parse as a JSON object, and they validate against that function's ``parameters`` schema with
``jsonschema``. One deliberate strictness: a top-level parameters object that does not say whether
it allows undeclared properties is treated as ``additionalProperties: false``, because the
function on the other side would get an unexpected keyword argument; a schema that says
``additionalProperties`` (or uses ``patternProperties``/combinators at the top) is taken as written.

``tool-call-match`` follows the Berkeley Function-Calling Leaderboard's AST checker: ``value`` is a
list of ``{"name": ..., "arguments": {param: [acceptable values]}}`` (BFCL's own
``{name: {param: [...]}}`` shape is accepted too). A parameter whose list holds ``""`` may be
omitted; strings compare normalised (case, spaces and ``,./-_*^`` ignored); an int is accepted
where a float is expected (not the reverse); a dict inside an expected value again maps keys to
lists of acceptable values; parallel calls match in any order (a bipartite matching), and there
must be exactly as many calls as expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from quantgate.checks.errors import CheckConfigError, located
from quantgate.checks.json_checks import SchemaError, compile_schema, first_schema_issue
from quantgate.checks.registry import CheckFn, CheckType, CompileContext
from quantgate.checks.text import type_name
from quantgate.checks.tool_parsing import ToolCall
from quantgate.checks.types import Outcome, Output

__all__ = ["TOOL_CHECKS", "closed_schema", "normalize_string", "tool_name", "tool_parameters"]

_SCHEMA_CODES = {"required": "tool_call.missing_required", "type": "tool_call.type_error",
                 "enum": "tool_call.enum_mismatch", "const": "tool_call.enum_mismatch",
                 "additionalProperties": "tool_call.unexpected_argument",
                 "unevaluatedProperties": "tool_call.unexpected_argument"}
_OPEN_KEYWORDS = ("additionalProperties", "unevaluatedProperties", "patternProperties", "anyOf",
                  "oneOf", "allOf", "$ref", "if")
_BFCL_STRIP = re.compile(r"[ ,./\-_*^]")


def tool_name(tool: Any) -> str | None:
    """The function name of an OpenAI tool (``{"type": "function", "function": {...}}``) or bare function."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else None


def tool_parameters(tool: dict[str, Any]) -> Any:
    fn = tool.get("function", tool)
    # No "parameters": the function takes none (OpenAI's convention).
    return fn.get("parameters", {"type": "object", "properties": {}})


def closed_schema(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` added to an object schema that says nothing of extra keys."""
    if (isinstance(schema, dict) and schema.get("type") == "object"
            and not any(k in schema for k in _OPEN_KEYWORDS)):
        return {**schema, "additionalProperties": False}
    return schema


def _compile_tools(tools: Any, ctx: CompileContext, field: str, from_value: bool) -> dict[str, Any]:
    def fail(message: str, sub: str) -> CheckConfigError:
        if from_value:
            return ctx.error(message, f"value{sub}")
        return CheckConfigError(located(ctx.case.where, f"{field}{sub}", message))

    if not isinstance(tools, (list, tuple)) or not tools:
        raise fail(f"is-valid-tool-call needs a non-empty tools list, got {type_name(tools)}", "")
    validators: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        name = tool_name(tool)
        if name is None:
            raise fail('a tool is {"type": "function", "function": {"name": ..., "parameters": ...}}', f"[{i}]")
        try:
            validators[name] = compile_schema(closed_schema(tool_parameters(tool)), ctx.env)
        except SchemaError as exc:
            raise fail(str(exc), f"[{i}].function.parameters") from None
    return validators


def _is_valid_tool_call(value: Any, ctx: CompileContext) -> CheckFn:
    if value is not None:
        validators = _compile_tools(value, ctx, "", from_value=True)
    elif ctx.case.tools:
        validators = _compile_tools(ctx.case.tools, ctx, "case.tools", from_value=False)
    else:
        raise ctx.error("needs the request's tools: give case.tools or a tools list as value", "")
    known = ", ".join(sorted(validators))

    def check(out: Output) -> Outcome:
        calls = out.tool_calls
        if not calls:
            return Outcome(False, 0.0, "the output makes no tool call", "tool_call.none")
        for i, call in enumerate(calls):
            label = f"call {i + 1}" + (f" ({call.name})" if call.name else "")
            if call.error is not None:
                return Outcome(False, i / len(calls), f"{label}: {call.error}", "tool_call.invalid_json")
            validator = validators.get(call.name)  # type: ignore[arg-type]
            if validator is None:
                return Outcome(False, i / len(calls), f"{label}: no tool named {call.name!r} (tools: {known})",
                               "tool_call.unknown_function")
            if not isinstance(call.arguments, dict):
                return Outcome(False, i / len(calls), f"{label}: arguments are JSON {type_name(call.arguments)}, "
                               "not an object", "tool_call.arguments_not_object")
            issue = first_schema_issue(validator, call.arguments, root="arguments")
            if issue is not None:
                code = _SCHEMA_CODES.get(issue.keyword, "tool_call.schema_violation")
                return Outcome(False, i / len(calls), f"{label}: {issue}", code)
        return Outcome(True, 1.0, f"{len(calls)} tool call(s), all valid", "tool_call.valid")

    return check


# ---------------------------------------------------------------- tool-call-match


def normalize_string(s: str) -> str:
    """BFCL's string standardisation: drop spaces and ``,./-_*^``, compare case-insensitively."""
    return _BFCL_STRIP.sub("", s).casefold()


@dataclass(frozen=True, slots=True)
class _Expected:
    name: str
    arguments: dict[str, list[Any]]


def _check_acceptable(v: Any, ctx: CompileContext, path: str) -> None:
    """Every dict inside an expected value maps keys to lists of acceptable values (BFCL)."""
    if isinstance(v, dict):
        for k, sub in v.items():
            if not isinstance(sub, list):
                raise ctx.error(f"expected a list of acceptable values, got {type_name(sub)}", f"{path}.{k}")
            for j, item in enumerate(sub):
                _check_acceptable(item, ctx, f"{path}.{k}[{j}]")
    elif isinstance(v, list):
        for j, item in enumerate(v):
            _check_acceptable(item, ctx, f"{path}[{j}]")


def _parse_expected(item: Any, i: int, ctx: CompileContext) -> _Expected:
    where = f"value[{i}]"
    if not isinstance(item, dict):
        raise ctx.error(f"an expected call is an object, got {type_name(item)}", where)
    if "name" in item:
        extra = set(item) - {"name", "arguments"}
        if extra:
            raise ctx.error(f"unknown field(s) {sorted(extra)}; an expected call is {{name, arguments}}", where)
        name, args = item["name"], item.get("arguments", {})
    elif len(item) == 1:  # BFCL ground truth: {"func": {"param": [values]}}
        name, args = next(iter(item.items()))
    else:
        raise ctx.error('an expected call is {"name": ..., "arguments": {param: [values]}}', where)
    if not isinstance(name, str) or not name:
        raise ctx.error(f"expected a function name, got {type_name(name)}", f"{where}.name")
    if not isinstance(args, dict):
        raise ctx.error(f"expected an object of param: [acceptable values], got {type_name(args)}",
                        f"{where}.arguments")
    for param, acceptable in args.items():
        if not isinstance(acceptable, list) or not acceptable:
            raise ctx.error(f"expected a non-empty list of acceptable values, got {json.dumps(acceptable)[:60]}",
                            f"{where}.arguments.{param}")
        for j, v in enumerate(acceptable):
            _check_acceptable(v, ctx, f"{where}.arguments.{param}[{j}]")
    return _Expected(name, args)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return type_name(v)


def _value_equal(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and normalize_string(got) == normalize_string(want)
    if isinstance(want, bool) or got is None or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, float):
        return isinstance(got, (int, float)) and float(got) == want  # int accepted for a number
    if isinstance(want, int):
        return type(got) is int and got == want
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_value_equal, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and _args_mismatch(got, want) is None
    return bool(want is None and got is None)


def _args_mismatch(got: dict[str, Any], want: dict[str, list[Any]]) -> tuple[str, str] | None:
    """None if ``got`` satisfies ``want``; else (code, reason)."""
    for param in got:
        if param not in want:
            return "tool_call_match.unexpected_argument", f"unexpected argument {param!r}"
    for param, acceptable in want.items():
        if param not in got:
            if "" in acceptable:
                continue
            return "tool_call_match.missing_argument", f"missing argument {param!r}"
        value = got[param]
        if any(_value_equal(value, a) for a in acceptable):
            continue
        shown = _short(json.dumps(value, ensure_ascii=False))
        options = _short(", ".join(json.dumps(a, ensure_ascii=False) for a in acceptable if a != ""), 120)
        wanted = f"expected one of [{options}]" + (" or nothing" if "" in acceptable else "")
        if all(_kind(a) != _kind(value) for a in acceptable if a != ""):
            return "tool_call_match.type_error", f"argument {param!r} is {_kind(value)} {shown}, {wanted}"
        return "tool_call_match.value_mismatch", f"argument {param!r} is {shown}, {wanted}"
    return None


def _call_mismatch(call: ToolCall, want: _Expected) -> tuple[str, str] | None:
    if call.error is not None:
        return "tool_call.invalid_json", call.error
    if call.name != want.name:
        return "tool_call_match.name_mismatch", f"called {call.name!r}, expected {want.name!r}"
    if not isinstance(call.arguments, dict):
        return "tool_call.arguments_not_object", f"arguments are JSON {type_name(call.arguments)}, not an object"
    return _args_mismatch(call.arguments, want.arguments)


def _max_matching(ok: list[list[bool]], n_calls: int) -> int:
    """Size of a maximum bipartite matching expected -> calls (Kuhn's algorithm; n is tiny)."""
    owner = [-1] * n_calls

    def augment(e: int, seen: list[bool]) -> bool:
        for c in range(n_calls):
            if ok[e][c] and not seen[c]:
                seen[c] = True
                if owner[c] == -1 or augment(owner[c], seen):
                    owner[c] = e
                    return True
        return False

    return sum(augment(e, [False] * n_calls) for e in range(len(ok)))


def _tool_call_match(value: Any, ctx: CompileContext) -> CheckFn:
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise ctx.error(f"expected a non-empty list of expected calls, got {type_name(value)}")
    expected = [_parse_expected(item, i, ctx) for i, item in enumerate(items)]
    want_names = [e.name for e in expected]

    def check(out: Output) -> Outcome:
        calls = out.tool_calls
        if not calls:
            return Outcome(False, 0.0, f"no tool call, expected {want_names}", "tool_call.none")
        mismatch = [[_call_mismatch(c, e) for c in calls] for e in expected]
        matched = _max_matching([[m is None for m in row] for row in mismatch], len(calls))
        score = matched / max(len(calls), len(expected))
        if matched == len(expected) == len(calls):
            return Outcome(True, 1.0, f"{len(calls)} call(s) match {want_names}", "tool_call_match.matched")
        if len(calls) != len(expected):
            got = [c.name for c in calls]
            return Outcome(False, score, f"{len(calls)} call(s) {got}, expected {len(expected)} "
                           f"{want_names}", "tool_call_match.count_mismatch")
        # Explain the first expected call nothing matches: against a same-name call if there is one.
        for e, row in zip(expected, mismatch):
            if any(m is None for m in row):
                continue
            same = [m for c, m in zip(calls, row) if c.name == e.name]
            if same:
                code, why = same[0]  # type: ignore[misc]
                return Outcome(False, score, f"call {e.name}: {why}", code)
            errors = [m for c, m in zip(calls, row) if c.error is not None]
            if errors:
                code, why = errors[0]  # type: ignore[misc]
                return Outcome(False, score, why, code)
            return Outcome(False, score, f"no call to {e.name!r}; got {[c.name for c in calls]}",
                           "tool_call_match.name_mismatch")
        # Each expected call matches some call, but not all at once (two expect the same call).
        return Outcome(False, score, f"calls {[c.name for c in calls]} cannot all be paired with "
                       f"{want_names}", "tool_call_match.value_mismatch")

    return check


TOOL_CHECKS: tuple[CheckType, ...] = (
    CheckType("is-valid-tool-call", _is_valid_tool_call, "every tool call names an offered function "
              "and its arguments validate against its parameters schema; value: optional tools list"),
    CheckType("is-valid-openai-tools-call", _is_valid_tool_call, "promptfoo's name for is-valid-tool-call"),
    CheckType("tool-call-match", _tool_call_match, "the calls match the expected ones, BFCL-style; "
              "value: [{name, arguments: {param: [acceptable values]}}]"),
)
