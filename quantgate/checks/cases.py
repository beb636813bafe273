"""Parse what users write into checks' records: assertions, cases, outputs, and ``check`` input lines.

Every parser takes ``where`` (``"cases.jsonl:12"``) and a field path, and raises a
``CheckConfigError``/``CasesFileError`` whose message names both, so a bad input is one line of
stderr that points at the byte to fix. Types are checked strictly (a ``weight`` of ``"2"`` is an
error, not a coercion), because a silently coerced gate is worse than a loud one. Unknown fields
are rejected too: ``asserts`` for ``assert`` would otherwise grade nothing.

A ``quantgate check`` line is ``{"case": {...}, "output": ...}`` plus optional ``finish_reason``,
``usage`` (``{"completion_tokens": N}``) and ``sample`` (an index echoed to the verdict line).
``output`` is the output text, an OpenAI assistant message (``content``, ``tool_calls`` with JSON
string ``arguments``, ``refusal``), a chat-completion choice (``{"message", "finish_reason"}``) or
a whole chat completion (its first choice and its ``usage``). A leading ``<think>`` block is the
model's reasoning, not its answer: it is split off (``reasoning``), as is a message's
``reasoning_content``, and the checks grade the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from quantgate.checks.errors import CasesFileError, CheckConfigError, located
from quantgate.checks.reasoning import split_reasoning
from quantgate.checks.text import type_name
from quantgate.checks.tool_parsing import ToolCall, arguments_from_string
from quantgate.checks.types import Assertion, Case, Output

__all__ = ["CASE_FIELDS", "ASSERTION_FIELDS", "iter_check_lines", "parse_assertion", "parse_case",
           "parse_check_line", "parse_output"]

CASE_FIELDS = frozenset({"id", "messages", "prompt", "tools", "response_format", "assert", "tags", "critical",
                         "samples", "sources", "vars", "description", "metadata"})
ASSERTION_FIELDS = frozenset({"type", "value", "weight", "threshold", "metric"})
_PROMPTFOO_ONLY = frozenset({"transform", "provider", "rubricPrompt", "config", "contextTransform"})
_LINE_FIELDS = frozenset({"case", "output", "finish_reason", "usage", "sample"})


def _fail(where: str, field: str, message: str) -> CheckConfigError:
    return CheckConfigError(located(where, field, message))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unknown(raw: Mapping[str, Any], allowed: frozenset[str], where: str, field: str, what: str) -> None:
    if raw.keys() <= allowed:  # the common case, without building sets
        return
    extra = sorted(set(raw) - allowed)
    if extra:
        note = " (promptfoo-only; not supported)" if set(extra) & _PROMPTFOO_ONLY else ""
        raise _fail(where, field, f"unknown {what} field(s) {', '.join(map(repr, extra))}{note}; "
                    f"allowed: {', '.join(sorted(allowed))}")


def parse_assertion(raw: Any, where: str, field: str = "assert[0]") -> Assertion:
    """One promptfoo-style assertion ``{type, value?, weight?, threshold?, metric?}``."""
    if not isinstance(raw, dict):
        raise _fail(where, field, f"expected an assertion object {{type, value}}, got {type_name(raw)}")
    _unknown(raw, ASSERTION_FIELDS, where, field, "assertion")
    t = raw.get("type")
    if not isinstance(t, str) or not t:
        raise _fail(where, f"{field}.type", f"expected a check type name, got {type_name(t)}")
    weight = raw.get("weight", 1.0)
    if not _number(weight) or weight < 0:
        raise _fail(where, f"{field}.weight", f"expected a number >= 0, got {json.dumps(weight)[:40]}")
    threshold = raw.get("threshold")
    if threshold is not None and not _number(threshold):
        raise _fail(where, f"{field}.threshold", f"expected a number, got {type_name(threshold)}")
    metric = raw.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise _fail(where, f"{field}.metric", f"expected a string, got {type_name(metric)}")
    return Assertion(t, raw.get("value"), float(weight), None if threshold is None else float(threshold), metric)


def _list_of(raw: Any, kind: type | tuple[type, ...], where: str, field: str, items: str, item: str) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise _fail(where, field, f"expected a list of {items}, got {type_name(raw)}")
    for i, x in enumerate(raw):
        if not isinstance(x, kind):
            raise _fail(where, f"{field}[{i}]", f"expected {item}, got {type_name(x)}")
    return tuple(raw)


def parse_case(raw: Any, where: str, *, field: str = "case", base_dir: Path | None = None,
               require_assertions: bool = True) -> Case:
    """A case object as golden sets and ``check`` lines write it; see the module docstring.

    ``field`` prefixes field paths in errors (``case.tags``); pass ``""`` where the case is the
    whole line (``tags``).
    """
    if not isinstance(raw, dict):
        raise _fail(where, field, f"expected a case object, got {type_name(raw)}")
    f = f"{field}." if field else ""
    _unknown(raw, CASE_FIELDS, where, field, "case")
    case_id = raw.get("id")
    if isinstance(case_id, int) and not isinstance(case_id, bool):
        case_id = str(case_id)
    if not isinstance(case_id, str) or not case_id:
        raise _fail(where, f"{f}id", f"expected a non-empty string, got {type_name(case_id)}")
    messages = raw.get("messages")
    if messages is not None:
        messages = _list_of(messages, dict, where, f"{f}messages", "message objects", "a message object")
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str):
                raise _fail(where, f"{f}messages[{i}].role", f"expected a string, got {type_name(m.get('role'))}")
    prompt = raw.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _fail(where, f"{f}prompt", f"expected a string, got {type_name(prompt)}")
    tools = raw.get("tools")
    if tools is not None:
        tools = _list_of(tools, dict, where, f"{f}tools", "tool objects", "a tool object")
    for name in ("response_format", "vars", "metadata"):
        v = raw.get(name)
        if v is not None and not isinstance(v, dict):
            raise _fail(where, f"{f}{name}", f"expected an object, got {type_name(v)}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(where, f"{f}description", f"expected a string, got {type_name(description)}")
    tags = _list_of(raw.get("tags", []), str, where, f"{f}tags", "strings", "a string")
    critical = raw.get("critical", False)
    if not isinstance(critical, bool):
        raise _fail(where, f"{f}critical", f"expected true or false, got {type_name(critical)}")
    samples = raw.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise _fail(where, f"{f}samples", f"expected an integer >= 1, got {json.dumps(samples)[:40]}")
    sources = raw.get("sources")
    if sources is not None:
        sources = _list_of(sources, (str, dict), where, f"{f}sources", "strings or objects",
                           "a string or an object")
    raw_asserts = raw.get("assert")
    if raw_asserts is None and not require_assertions:
        raw_asserts = []
    if not isinstance(raw_asserts, list) or (require_assertions and not raw_asserts):
        raise _fail(where, f"{f}assert", f"expected a non-empty list of assertions, got "
                    f"{'an empty list' if raw_asserts == [] else type_name(raw_asserts)}")
    assertions = tuple(parse_assertion(a, where, f"{f}assert[{i}]") for i, a in enumerate(raw_asserts))
    return Case(case_id, assertions, messages, prompt, tools, raw.get("response_format"), tags, critical,
                samples, sources, raw.get("vars"), description, raw.get("metadata"), base_dir, where)


def _content_text(content: Any, where: str, field: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts, in order
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _fail(where, f"{field}[{i}]", f"expected a content part object, got {type_name(part)}")
            if part.get("type") in ("text", "output_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise _fail(where, f"{field}[{i}].text", f"expected a string, got {type_name(text)}")
                parts.append(text)
        return "".join(parts)
    raise _fail(where, field, f"expected a string, a list of content parts or null, got {type_name(content)}")


def _tool_calls(raw: Any, where: str, field: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(where, field, f"expected a list, got {type_name(raw)}")
    calls = []
    for i, tc in enumerate(raw):
        f = f"{field}[{i}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict):
            raise _fail(where, f, 'expected {"type": "function", "function": {"name", "arguments"}}')
        name = fn.get("name")
        if not isinstance(name, str):
            raise _fail(where, f"{f}.function.name", f"expected a string, got {type_name(name)}")
        call_id = tc.get("id") if isinstance(tc.get("id"), str) else None
        args = fn.get("arguments", "{}")
        if isinstance(args, str):  # the wire format: the model's JSON, parsed strictly here
            calls.append(arguments_from_string(name, args, call_id))
        elif isinstance(args, dict):  # some SDKs hand back arguments already parsed
            calls.append(ToolCall(name, arguments=args, id=call_id))
        else:
            raise _fail(where, f"{f}.function.arguments", f"expected a JSON string, got {type_name(args)}")
    return tuple(calls)


def parse_output(raw: Any, where: str, field: str = "output", *, finish_reason: str | None = None,
                 completion_tokens: int | None = None) -> Output:
    """An output in any of the shapes the module docstring lists."""
    if isinstance(raw, str):
        reasoning, answer = split_reasoning(raw)
        return Output(answer, finish_reason=finish_reason, completion_tokens=completion_tokens, reasoning=reasoning)
    if not isinstance(raw, dict):
        raise _fail(where, field, f"expected a string or an assistant message object, got {type_name(raw)}")
    if "choices" in raw:  # a whole chat completion
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise _fail(where, f"{field}.choices", "expected a non-empty list")
        if completion_tokens is None and isinstance(raw.get("usage"), dict):
            completion_tokens = _tokens(raw["usage"], where, f"{field}.usage")
        return parse_output(choices[0], where, f"{field}.choices[0]", finish_reason=finish_reason,
                            completion_tokens=completion_tokens)
    if "message" in raw:  # a choice
        fr = raw.get("finish_reason")
        if fr is not None and not isinstance(fr, str):
            raise _fail(where, f"{field}.finish_reason", f"expected a string, got {type_name(fr)}")
        return parse_output(raw["message"], where, f"{field}.message", finish_reason=finish_reason or fr,
                            completion_tokens=completion_tokens)
    role = raw.get("role", "assistant")
    if role != "assistant":
        raise _fail(where, f"{field}.role", f"expected 'assistant', got {json.dumps(role)[:40]}")
    reasoning, text = split_reasoning(_content_text(raw.get("content"), where, f"{field}.content"))
    for key in ("reasoning_content", "reasoning"):  # vLLM / SGLang; OpenRouter and others
        given = raw.get(key)
        if given is not None and not isinstance(given, str):
            raise _fail(where, f"{field}.{key}", f"expected a string or null, got {type_name(given)}")
        reasoning = reasoning or given
    refusal = raw.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise _fail(where, f"{field}.refusal", f"expected a string or null, got {type_name(refusal)}")
    if refusal and not text:
        text = refusal  # OpenAI structured outputs put a refusal here instead of in content
    calls = _tool_calls(raw.get("tool_calls"), where, f"{field}.tool_calls")
    return Output(text, tool_calls=calls or None, finish_reason=finish_reason, completion_tokens=completion_tokens,
                  reasoning=reasoning)


def _tokens(usage: Any, where: str, field: str) -> int | None:
    if not isinstance(usage, dict):
        raise _fail(where, field, f"expected an object, got {type_name(usage)}")
    n = usage.get("completion_tokens")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise _fail(where, f"{field}.completion_tokens", f"expected an integer >= 0, got {json.dumps(n)[:40]}")
    return n


def parse_check_line(obj: Any, where: str, base_dir: Path | None = None) -> tuple[Case, Output, int | None]:
    """A decoded ``check`` line: its case, its output and its optional sample index."""
    if not isinstance(obj, dict):
        raise CasesFileError(located(where, "", 'expected an object {"case": ..., "output": ...}, got '
                                     + type_name(obj)))
    _unknown(obj, _LINE_FIELDS, where, "", "line")
    for key in ("case", "output"):
        if key not in obj:
            raise _fail(where, key, "missing")
    case = parse_case(obj["case"], where, base_dir=base_dir)
    fr = obj.get("finish_reason")
    if fr is not None and not isinstance(fr, str):
        raise _fail(where, "finish_reason", f"expected a string, got {type_name(fr)}")
    tokens = _tokens(obj["usage"], where, "usage") if obj.get("usage") is not None else None
    sample = obj.get("sample")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
        raise _fail(where, "sample", f"expected an integer, got {type_name(sample)}")
    return case, parse_output(obj["output"], where, finish_reason=fr, completion_tokens=tokens), sample


def iter_check_lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str, Any, CasesFileError | None]]:
    """``(line_number, where, decoded_json, problem)`` for each non-blank line.

    A line that is not UTF-8 or not JSON comes back with ``problem`` set (its message starts with
    ``file:line``) and ``None`` for the JSON, so the caller can go on and report every bad line.
    """
    for n, raw in enumerate(stream, 1):
        where = f"{name}:{n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield n, where, None, CasesFileError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, where, None, CasesFileError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
        except RecursionError:
            yield n, where, None, CasesFileError(f"{where}: not valid JSON: nested too deeply")
        else:
            yield n, where, obj, None
