"""Helpers for the check tests: build a case, grade one output, get the single verdict back."""

from __future__ import annotations

from typing import Any

from quantgate.checks import Case, Output, Registry, Verdict, default_registry, parse_case, parse_output


def verdict(
    type_: str, output: Any, value: Any = None, *, registry: Registry | None = None, **case_fields: Any
) -> Verdict:
    """Grade ``output`` with one assertion ``{type, value}`` on a case with ``case_fields``."""
    a: dict[str, Any] = {"type": type_}
    if value is not None:
        a["value"] = value
    threshold = case_fields.pop("threshold", None)
    if threshold is not None:
        a["threshold"] = threshold
    case: Case = parse_case({"id": "t", "assert": [a], **case_fields}, "test:1")
    reg = registry if registry is not None else default_registry()
    out = output if isinstance(output, Output) else parse_output(output, "test:1")
    (v,) = reg.compile_case(case).run(out).verdicts
    return v
