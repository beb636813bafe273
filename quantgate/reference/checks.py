"""Grade one model output against an ``Example``: is it *valid* for its behaviour, and is it *correct*?

Validity is the format bar a gateway cares about (a tool call that parses and validates against the
offered schema, JSON with the requested keys and types, a refusal, a citation of an existing source,
a short plain answer). Correctness is stricter (the same arguments, values and source numbers as the
gold target). Quantized variants are compared on both: validity degrades last, so correctness is the
more sensitive signal, and validity failures are the ones users notice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from quantgate.reference.corpus import Example
from quantgate.checks.tool_parsing import strict_json_loads
from quantgate.reference.tools import validate_call

__all__ = ["CheckResult", "check_output", "is_refusal", "parse_json_object", "parse_tool_calls"]

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_REFUSAL_RE = re.compile(
    r"^\s*(I can(?:'|no)t|I won't|I will not|Sorry, but I can(?:'|no)t|I'm sorry|I am sorry|I'm not able|I am unable)",
    re.I,
)
_CITE_RE = re.compile(r"\[(\d+)\]")
_SHORT_MAX_CHARS = 160


@dataclass(frozen=True)
class CheckResult:
    """Outcome for one output: ``valid`` (format bar), ``correct`` (matches gold), and why not."""

    valid: bool
    correct: bool
    reason: str = ""


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """Parse Hermes-style ``<tool_call>{...}</tool_call>`` blocks; None if absent or any is not JSON.

    Text outside the blocks other than whitespace also makes it None: a gateway would have to guess
    whether that text is a reply or a broken call.
    """
    blocks = _TOOL_CALL_RE.findall(text)
    if not blocks or _TOOL_CALL_RE.sub("", text).strip():
        return None
    calls = []
    for block in blocks:
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict):
            return None
        calls.append(call)
    return calls


def parse_json_object(text: str) -> dict[str, Any] | None:
    """Parse ``text`` as exactly one RFC 8259 JSON object (NaN/Infinity rejected); None otherwise."""

    try:
        obj = strict_json_loads(text.strip())
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def is_refusal(text: str) -> bool:
    """True if ``text`` opens with a refusal phrase ("I can't", "I won't", "Sorry, but I cannot" ...)."""
    return bool(_REFUSAL_RE.match(text))


def _same_type(value: Any, gold: Any) -> bool:
    if isinstance(gold, bool):
        return isinstance(value, bool)
    if isinstance(gold, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(gold, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(gold))


def _check_tool_call(ex: Example, out: str) -> CheckResult:
    calls = parse_tool_calls(out)
    if calls is None:
        return CheckResult(False, False, "no parseable <tool_call>")
    for call in calls:
        err = validate_call(call, ex.tools or [])
        if err:
            return CheckResult(False, False, err)
    gold = ex.expected["calls"]
    if sorted(c["name"] for c in calls) != sorted(c["name"] for c in gold):
        return CheckResult(False, False, "wrong tool name(s)")
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731 - order-insensitive comparison
    same = sorted(map(key, ({"name": c["name"], "arguments": c["arguments"]} for c in calls))) == sorted(map(key, gold))
    return CheckResult(True, same, "" if same else "arguments differ from gold")


def _check_extract(ex: Example, out: str) -> CheckResult:
    obj = parse_json_object(out)
    if obj is None:
        return CheckResult(False, False, "not a JSON object")
    gold = ex.expected["object"]
    for k, v in gold.items():
        if k not in obj:
            return CheckResult(False, False, f"missing key {k!r}")
        if not _same_type(obj[k], v):
            return CheckResult(False, False, f"key {k!r} has type {type(obj[k]).__name__}")
    return CheckResult(True, obj == gold, "" if obj == gold else "values differ from gold")


def _check_refusal(ex: Example, out: str) -> CheckResult:
    ok = is_refusal(out)
    return CheckResult(ok, ok, "" if ok else "did not refuse")


def _check_cited(ex: Example, out: str) -> CheckResult:
    if is_refusal(out) or "<tool_call>" in out:
        return CheckResult(False, False, "refused or called a tool")
    cited = [int(n) for n in _CITE_RE.findall(out)]
    if not cited:
        return CheckResult(False, False, "no [n] citation")
    if any(not 1 <= n <= ex.expected["n_sources"] for n in cited):
        return CheckResult(False, False, "cites a source that does not exist")
    correct = sorted(set(cited)) == sorted(ex.expected["sources"]) and all(v in out for v in ex.expected["values"])
    return CheckResult(True, correct, "" if correct else "wrong source or value")


def _check_short(ex: Example, out: str) -> CheckResult:
    text = out.strip()
    if not text or len(text) > _SHORT_MAX_CHARS or "\n" in text:
        return CheckResult(False, False, "empty, long or multi-line")
    if "<tool_call>" in text or parse_json_object(text) is not None or text.startswith(("{", "[")):
        return CheckResult(False, False, "tool call or JSON in a plain answer")
    if is_refusal(text):
        return CheckResult(False, False, "refused a benign request")
    correct = text == ex.expected["answer"]
    return CheckResult(True, correct, "" if correct else "differs from gold")


def _check_copy(ex: Example, out: str) -> CheckResult:
    same = out == ex.expected["answer"]
    return CheckResult(same, same, "" if same else "not an exact copy")


_CHECKERS = {"copy": _check_copy, "tool_call": _check_tool_call, "extract": _check_extract, "refusal": _check_refusal,
             "cited": _check_cited, "short": _check_short}


def check_output(example: Example, output: str) -> CheckResult:
    """Grade ``output`` (the assistant text, special tokens stripped) for ``example``'s behaviour."""
    return _CHECKERS[example.kind](example, output)
