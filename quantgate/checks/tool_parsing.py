"""Tool calls out of a model output: OpenAI ``tool_calls`` messages or Hermes ``<tool_call>`` text.

The reference model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks in its
text and the gateway turns them into OpenAI ``tool_calls`` (arguments as a JSON *string*). Checks
see both shapes as the same ``ToolCall`` records, so a case graded on raw model text and on the
gateway's message gets the same verdict.

A call that cannot be parsed is kept as a ``ToolCall`` with ``error`` set rather than dropped: a
broken call is a failure to report (``tool_call.invalid_json``), not the absence of a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolCall", "parse_tool_calls_from_text", "strict_json_loads", "TOOL_CALL_OPEN"]

TOOL_CALL_OPEN = "<tool_call>"
# Non-greedy up to the closing tag, or to the end of the text: a call cut off by the token limit
# (no closing tag) is still a call, and it should fail as broken JSON rather than vanish.
_BLOCK_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (RFC 8259 has no NaN or Infinity)")


def strict_json_loads(text: str) -> Any:
    """``json.loads`` held to RFC 8259: NaN/Infinity rejected; any failure is a ``ValueError``.

    The stdlib already rejects trailing commas, comments, single quotes and control characters in
    strings, and allows only space/tab/CR/LF around the value, as the RFC does.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # The C scanner recurses per nesting level; a hostile "[[[[..." must fail like bad JSON.
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call. ``error`` is set (and ``arguments`` is None) when it could not be parsed."""

    name: str | None
    arguments: Any = None  # parsed arguments; a dict for any well-formed call
    raw_arguments: str | None = None  # arguments as the model wrote them, when they were a string
    error: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "error": self.error}


def _call_from_block(block: str) -> ToolCall:
    try:
        obj = strict_json_loads(block.strip())
    except ValueError as exc:
        return ToolCall(None, raw_arguments=block, error=f"<tool_call> block is not JSON: {exc}")
    if not isinstance(obj, dict):
        return ToolCall(None, error=f"<tool_call> block is JSON {type(obj).__name__}, not an object")
    name = obj.get("name")
    if not isinstance(name, str):
        return ToolCall(None, error='<tool_call> block has no string "name"')
    # Some Llama-family templates say "parameters"; the Hermes convention is "arguments".
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters", {})
    if isinstance(args, str):
        # Models trained on OpenAI-shaped data sometimes write the arguments as a JSON string.
        return arguments_from_string(name, args)
    return ToolCall(name, arguments=args)


def arguments_from_string(name: str | None, raw: str, call_id: str | None = None) -> ToolCall:
    """A call whose arguments are a JSON string (the OpenAI wire shape), parsed strictly."""
    try:
        args = strict_json_loads(raw)
    except ValueError as exc:
        return ToolCall(name, raw_arguments=raw, error=f"arguments are not JSON: {exc}", id=call_id)
    return ToolCall(name, arguments=args, raw_arguments=raw, id=call_id)


def parse_tool_calls_from_text(text: str) -> list[ToolCall]:
    """Every ``<tool_call>...</tool_call>`` block in ``text``, in order; ``[]`` when there is none.

    Text around the blocks is ignored (a model may say "Let me check" first); a block without a
    closing tag runs to the end of the text.
    """
    if TOOL_CALL_OPEN not in text:  # fast path: most outputs have no calls
        return []
    return [_call_from_block(m.group(1)) for m in _BLOCK_RE.finditer(text)]
