"""Checks: grade a model output against promptfoo-style assertions, with stable error codes.

Pure Python (plus ``jsonschema``); importing this package never imports torch, and the learned
refusal detector runs on numpy, loaded on first use. The pieces:

- ``types``: ``Assertion``, ``Case``, ``Output``, ``Verdict``, ``CaseResult``;
- ``registry``: ``Registry`` (check types by name, ``not-`` negation, compile-then-run) and
  ``CheckEnv`` (per-run resources); ``builtin.default_registry()`` fills one with every built-in;
- one module per family: ``text``, ``json_checks``, ``tools``, ``citations``, ``refusal``, ``custom``;
- ``cases``: parsing cases, assertions and outputs with file:line:field errors;
- ``runner``: the ``quantgate check`` loop;
- ``codes.CODES``: every error code a verdict can carry.

Typical use::

    reg = default_registry()
    case = parse_case(case_dict, "golden.jsonl:3")
    compiled = reg.compile_case(case)           # raises CheckConfigError on a bad assertion
    result = compiled.run(parse_output(output, "golden.jsonl:3"))
    result.passed, result.score, [v.code for v in result.verdicts]
"""

from __future__ import annotations

from quantgate.checks.builtin import BUILTIN_CHECKS, check_output, default_registry
from quantgate.checks.cases import parse_assertion, parse_case, parse_check_line, parse_output
from quantgate.checks.codes import CODES, OK
from quantgate.checks.errors import CasesFileError, CheckConfigError, UnknownCheckError
from quantgate.checks.refusal import load_refusal_detector
from quantgate.checks.registry import (
    CheckEnv, CheckType, CompileContext, CompiledAssertion, CompiledCase, Registry, aggregate,
)
from quantgate.checks.runner import CheckSummary, run_check
from quantgate.checks.tool_parsing import ToolCall, parse_tool_calls_from_text
from quantgate.checks.types import Assertion, Case, CaseResult, Outcome, Output, Verdict

__all__ = [
    "BUILTIN_CHECKS", "CODES", "OK", "Assertion", "Case", "CaseResult", "CasesFileError", "CheckConfigError",
    "CheckEnv", "CheckSummary", "CheckType", "CompileContext", "CompiledAssertion", "CompiledCase", "Outcome",
    "Output", "Registry", "ToolCall", "UnknownCheckError", "Verdict", "aggregate", "check_output",
    "default_registry", "load_refusal_detector", "parse_assertion", "parse_case", "parse_check_line",
    "parse_output", "parse_tool_calls_from_text", "run_check",
]
