"""JSON checks: ``is-json`` (the whole output is RFC 8259 JSON) and ``contains-json`` (JSON inside text).

Both take an optional JSON Schema as ``value``; ``is-json`` without one falls back to the case's
``response_format`` schema (``{"type": "json_schema", "json_schema": {"schema": ...}}``), because
that is the contract the request asked the model to keep.

Parsing is the stdlib's C scanner held to the RFC (``strict_json_loads``: no NaN/Infinity; the
stdlib already refuses trailing commas, comments and single quotes). Validation is the
``jsonschema`` library (the draft named by ``$schema``, else 2020-12); compiled validators are
memoised per schema text in the registry's ``CheckEnv``, since the same schema recurs on every
line of a golden set. ``format`` is an annotation only, as the 2020-12 spec says by default.

``contains-json`` candidates: the body of each fenced code block (any JSON value), and every
``{...}`` object that parses at a ``{`` in the text. Bare ``[...]`` arrays are not looked for
outside fences: citation markers such as ``[1]`` would count as JSON. The scan is quadratic on
pathological text (thousands of unclosed ``{``), which model outputs do not produce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from quantgate.checks.errors import CheckConfigError, located
from quantgate.checks.registry import CheckEnv, CheckFn, CheckType, CompileContext
from quantgate.checks.text import clip, type_name
from quantgate.checks.tool_parsing import strict_json_loads
from quantgate.checks.types import Outcome, Output

__all__ = ["JSON_CHECKS", "SchemaIssue", "compile_schema", "find_json_values", "first_schema_issue"]

_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # stateless: safe to share


class SchemaError(ValueError):
    """A schema that is not a valid JSON Schema; the compile step turns it into a located error."""


def compile_schema(schema: Any, env: CheckEnv) -> Any:
    """A jsonschema validator for ``schema``, built once per distinct schema per env."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON Schema is an object or a boolean, got {type_name(schema)}")
    # Key on the schema's text as written (no sort_keys: measurably cheaper per line, and the same
    # file writes the same schema the same way; a reordered copy merely compiles twice).
    key = ("json-schema", json.dumps(schema))

    def build() -> Any:
        # Imported here: jsonschema costs ~150 ms to import, and most runs compile a schema once.
        import jsonschema
        import jsonschema.exceptions
        import jsonschema.validators

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise SchemaError(f"invalid JSON Schema at {where}: {exc.message}") from None
        return cls(schema)

    return env.memo(key, build)


class SchemaIssue:
    """The most relevant validation error: the failing keyword, where, and jsonschema's message."""

    __slots__ = ("keyword", "path", "message")

    def __init__(self, keyword: str, path: str, message: str) -> None:
        self.keyword, self.path, self.message = keyword, path, message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def first_schema_issue(validator: Any, instance: Any, root: str = "$") -> SchemaIssue | None:
    """None if ``instance`` validates; else jsonschema's ``best_match`` error, summarised."""
    if validator.is_valid(instance):  # the common case; is_valid stops at the first error
        return None
    import jsonschema.exceptions

    err = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    assert err is not None  # is_valid said there is at least one
    path = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    message = err.message if len(err.message) <= 200 else err.message[:199] + "…"
    return SchemaIssue(str(err.validator), path, message)


def find_json_values(text: str) -> Iterator[Any]:
    """JSON values embedded in ``text``: fenced code block bodies first, then bare ``{...}`` objects."""
    if "```" in text:
        for m in _FENCE_RE.finditer(text):
            try:
                yield strict_json_loads(m.group(1))
            except ValueError:
                pass  # a fence of code or prose; its objects are still found by the scan below
    i = text.find("{")
    while i != -1:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):
            i = text.find("{", i + 1)
            continue
        yield value
        i = text.find("{", end)


def _schema_from_value(value: Any, ctx: CompileContext, *, use_response_format: bool) -> tuple[Any, str]:
    """The validator to apply (or None) and a note for reasons saying where the schema came from."""
    schema: Any = value
    source = "the schema"
    if value is None and use_response_format:
        schema = _response_format_schema(ctx)
        source = "case.response_format's schema"
        if schema is None:
            return None, ""
    elif value is None:
        return None, ""
    try:
        return compile_schema(schema, ctx.env), source
    except SchemaError as exc:
        if value is None:
            raise CheckConfigError(located(ctx.case.where, "case.response_format.json_schema.schema",
                                           str(exc))) from None
        raise ctx.error(str(exc)) from None


def _response_format_schema(ctx: CompileContext) -> Any:
    rf = ctx.case.response_format
    if not rf or rf.get("type") != "json_schema":
        return None
    js = rf.get("json_schema")
    return js.get("schema") if isinstance(js, dict) else None


def _is_json(value: Any, ctx: CompileContext) -> CheckFn:
    validator, source = _schema_from_value(value, ctx, use_response_format=True)

    def check(out: Output) -> Outcome:
        try:
            doc = strict_json_loads(out.text)
        except ValueError as exc:
            return Outcome(False, 0.0, f"output is not JSON: {exc}", "json.parse_error")
        if validator is None:
            return Outcome(True, 1.0, "output is JSON", "json.valid")
        issue = first_schema_issue(validator, doc)
        if issue is None:
            return Outcome(True, 1.0, f"output is JSON and validates against {source}", "json.valid")
        return Outcome(False, 0.0, f"output JSON does not validate against {source}: {issue}",
                       "json.schema_mismatch")

    return check


def _contains_json(value: Any, ctx: CompileContext) -> CheckFn:
    validator, source = _schema_from_value(value, ctx, use_response_format=False)

    def check(out: Output) -> Outcome:
        first_issue: Any = None
        found = 0
        for doc in find_json_values(out.text):
            found += 1
            if validator is None:
                return Outcome(True, 1.0, f"output contains JSON {clip(json.dumps(doc), 40)}", "json.valid")
            issue = first_schema_issue(validator, doc)
            if issue is None:
                return Outcome(True, 1.0, f"output contains JSON that validates against {source}", "json.valid")
            first_issue = first_issue or issue
        if not found:
            return Outcome(False, 0.0, "no JSON object or fenced JSON block in the output", "json.not_found")
        return Outcome(False, 0.0, f"{found} JSON value(s) found, none validates against {source}; "
                       f"first: {first_issue}", "json.schema_mismatch")

    return check


JSON_CHECKS: tuple[CheckType, ...] = (
    CheckType("is-json", _is_json, "the whole output is RFC 8259 JSON; value: optional JSON Schema "
              "(default: the case's response_format schema)"),
    CheckType("contains-json", _contains_json, "the output contains a JSON object or a fenced JSON "
              "block; value: optional JSON Schema one of them must validate against"),
)
