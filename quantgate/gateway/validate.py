"""Validate every answer with the same check library the offline gate uses.

What a request asks for becomes assertions on its own answer: ``response_format`` json_object ->
``is-json``, json_schema -> ``is-json`` with that schema, ``tools`` -> ``is-valid-tool-call`` against
the request's own tool schemas (when the answer calls a tool, or when ``tool_choice`` requires one),
plus the assertions the route configures (any check type, written as in a golden set). Compiled
JSON Schemas are memoised in the registry's environment, so a schema that recurs on every request
is compiled once.

Trade-off: a route that validates must see the whole answer before the client does, so validated
streams are buffered (the pipeline's job); validation itself costs microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quantgate.checks import Assertion, Case, CompiledAssertion, Output, Registry, default_registry, parse_assertion
from quantgate.checks.json_checks import SchemaError, compile_schema
from quantgate.checks.tool_parsing import arguments_from_string
from quantgate.checks.tools import closed_schema
from quantgate.gateway.engines import Completion
from quantgate.gateway.protocol import ApiError, ChatRequest, NamedToolChoice

__all__ = ["Failure", "Validator"]


@dataclass(frozen=True)
class Failure:
    check: str
    code: str
    reason: str


class Validator:
    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()

    def route_assertions(self, raw: Sequence[dict[str, Any]], where: str) -> tuple[CompiledAssertion, ...]:
        """Parse and compile a route's assertions once, at start-up; errors name ``where``."""
        parsed = tuple(parse_assertion(a, where, f"assert[{i}]") for i, a in enumerate(raw))
        return self.registry.compile_case(Case("config", parsed, where=where), "assert").assertions

    def check_schemas(self, request: ChatRequest) -> None:
        """Refuse a request whose own JSON Schemas are invalid (``ApiError`` 400 naming the field).

        Run before the engine call, so a bad schema costs no tokens and never surfaces later as a
        fault; compiled schemas are memoised, so the schemas that recur cost one lookup each.
        """
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None and fmt.json_schema.schema_:
            _compile(fmt.json_schema.schema_, self.registry, "response_format.json_schema.schema")
        for i, tool in enumerate(request.tools or ()):
            _compile(closed_schema(tool.function.parameters), self.registry, f"tools.{i}.function.parameters")

    def check(self, request: ChatRequest, completion: Completion, *, response_format: bool = True,
              tool_arguments: bool = True, extra: tuple[CompiledAssertion, ...] = ()) -> list[Failure]:
        """Every failed check of ``completion``; an empty list means the answer is valid.

        ``extra`` are the route's assertions, compiled at start-up; only what the request itself
        asks for (its schema, its tools) is compiled here, with schemas memoised by the registry.
        """
        assertions: list[Assertion] = []
        failures: list[Failure] = []
        fmt = request.response_format
        if response_format and fmt is not None and fmt.type != "text" and not completion.tool_calls:
            schema = fmt.json_schema.schema_ if fmt.type == "json_schema" and fmt.json_schema else None
            assertions.append(Assertion("is-json", schema or None))
        tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
        if tool_arguments and tools:
            failures += _tool_choice(request, completion)
            if completion.tool_calls:
                assertions.append(Assertion("is-valid-tool-call"))
        if not assertions and not extra:
            return failures
        compiled = extra
        if assertions:
            case = Case("live", tuple(assertions), tools=tuple(tools) if tools else None)
            compiled = extra + self.registry.compile_case(case).assertions
        output = _output(completion)
        verdicts = [a.run(output) for a in compiled]
        failures += [Failure(v.type, v.code, v.reason) for v in verdicts if not v.passed]
        return failures


def _compile(schema: Any, registry: Registry, param: str) -> None:
    try:
        compile_schema(schema, registry.env)
    except SchemaError as e:
        raise ApiError(400, f"{param}: {e}", param=param, code="invalid_schema") from None


def _output(c: Completion) -> Output:
    calls = None
    if c.tool_calls:
        calls = tuple(_call(tc) for tc in c.tool_calls)
    return Output(c.content or "", tool_calls=calls, finish_reason=c.finish_reason,
                  completion_tokens=c.completion_tokens)


def _call(tc: dict[str, Any]) -> Any:
    fn = tc.get("function") or {}
    args = fn.get("arguments", "{}")
    if isinstance(args, dict):
        args = json.dumps(args)
    return arguments_from_string(fn.get("name"), args if isinstance(args, str) else "", tc.get("id"))


def _tool_choice(request: ChatRequest, c: Completion) -> list[Failure]:
    choice = request.tool_choice
    names = [(tc.get("function") or {}).get("name") for tc in c.tool_calls or []]
    if choice == "required" and not names:
        return [Failure("tool_choice", "tool_call.none", "tool_choice is 'required' but the answer calls no tool")]
    if choice == "none" and names:
        return [Failure("tool_choice", "tool_call.unexpected", "tool_choice is 'none' but the answer calls a tool")]
    if isinstance(choice, NamedToolChoice):
        want = choice.function.name
        if not names or names != [want] * len(names):
            return [Failure("tool_choice", "tool_call.wrong_function",
                            f"tool_choice asks for {want!r}, the answer calls {names or 'no tool'}")]
    return []
