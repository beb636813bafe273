"""The built-in registry and the one-call helpers most callers want.

``default_registry()`` returns a fresh ``Registry`` holding every built-in check type, with its
own ``CheckEnv``; callers own it (keep one per run to share compiled schemas and the refusal
model across cases). ``check_output`` grades one output against a list of assertions without
building a ``Case`` by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from quantgate.checks.cases import parse_assertion, parse_output
from quantgate.checks.citations import CITATION_CHECKS
from quantgate.checks.custom import CUSTOM_CHECKS
from quantgate.checks.json_checks import JSON_CHECKS
from quantgate.checks.refusal import REFUSAL_CHECKS
from quantgate.checks.registry import CheckEnv, CheckType, Registry
from quantgate.checks.text import TEXT_CHECKS
from quantgate.checks.tools import TOOL_CHECKS
from quantgate.checks.types import Assertion, Case, CaseResult, Output

__all__ = ["BUILTIN_CHECKS", "check_output", "default_registry"]

BUILTIN_CHECKS: tuple[CheckType, ...] = (
    *TEXT_CHECKS, *JSON_CHECKS, *TOOL_CHECKS, *CITATION_CHECKS, *REFUSAL_CHECKS, *CUSTOM_CHECKS,
)


def default_registry(*, allow_python: bool = False, count_tokens: Callable[[str], int] | None = None,
                     refusal_detector: Any = None, base_dir: Path | None = None) -> Registry:
    """A new registry with every built-in check; the keyword arguments configure its ``CheckEnv``."""
    env = CheckEnv(allow_python=allow_python, count_tokens=count_tokens, refusal_detector=refusal_detector,
                   base_dir=base_dir)
    return Registry(BUILTIN_CHECKS, env=env)


def check_output(output: str | Mapping[str, Any] | Output, assertions: Sequence[Assertion | Mapping[str, Any]],
                 *, case: Case | None = None, registry: Registry | None = None) -> CaseResult:
    """Grade one output (text, assistant message or ``Output``) against ``assertions``.

    ``case`` supplies the context (tools, sources, response_format); its own assertions are
    replaced by ``assertions``. Raises ``CheckConfigError`` for a bad assertion.
    """
    reg = registry if registry is not None else default_registry()
    where = case.where if case is not None else ""
    parsed = tuple(a if isinstance(a, Assertion) else parse_assertion(a, where, f"assert[{i}]")
                   for i, a in enumerate(assertions))
    ctx_case = dataclasses.replace(case if case is not None else Case("output"), assertions=parsed)
    out = output if isinstance(output, Output) else parse_output(output, where)
    return reg.compile_case(ctx_case, "assert").run(out)
