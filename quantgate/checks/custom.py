"""``python``: a user function decides, as promptfoo's ``python`` assertion does.

``value`` is one of:

- ``file://checks.py`` or ``file://checks.py:my_fn``: a function ``(output, context)`` in a file,
  resolved against the cases file's directory (default function name ``get_assert``, promptfoo's);
- an inline expression, evaluated with ``output`` and ``context`` in scope (``len(output) < 80``);
- an inline multi-line body that ``return``\\ s the result;
- a Python callable, when assertions are built in code rather than read from a file.

The function returns a bool; a number (the score: it passes when ``>= threshold``, or ``> 0``
without one, clamped to [0, 1]); or a promptfoo-style dict ``{"pass": bool, "score": float,
"reason": str}``. ``context`` holds ``case`` (id, tags, vars, sources, tools, metadata), ``vars``,
``prompt``/``messages``, ``tool_calls`` (list of ``{name, arguments, error}``) and
``finish_reason``.

This runs code taken from a cases file, so it is refused unless the registry's env has
``allow_python`` (``quantgate check --allow-python``), the same stance as ``--allow-pickle``.
Exceptions raised by user code are caught broadly on purpose (any failure there is the user's,
and becomes an *errored* verdict, ``python.error``, that negation does not turn into a pass).
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantgate.checks.registry import CheckFn, CheckType, CompileContext
from quantgate.checks.text import clip, type_name
from quantgate.checks.types import Case, Outcome, Output

__all__ = ["CUSTOM_CHECKS"]

_FILE_PREFIX = "file://"
_DEFAULT_FUNCTION = "get_assert"
UserFn = Callable[[str, dict[str, Any]], Any]


def _load_file(spec: str, ctx: CompileContext) -> UserFn:
    ref = spec[len(_FILE_PREFIX):]
    path_text, fn_name = ref, _DEFAULT_FUNCTION
    head, sep, tail = ref.rpartition(":")
    if sep and tail.isidentifier():  # "checks.py:my_fn"; a bare path may hold ':' elsewhere
        path_text, fn_name = head, tail
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        base = ctx.case.base_dir or ctx.env.base_dir or Path.cwd()
        path = base / path
    path = path.resolve()
    if not path.is_file():
        raise ctx.error(f"no such file: {path}")

    def load() -> Any:
        mod_spec = importlib.util.spec_from_file_location(f"_quantgate_user_check_{abs(hash(path))}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ctx.error(f"cannot load {path} as Python")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # user code at import time: report it as the user's error
            raise ctx.error(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
        return module

    module = ctx.env.memo(("python-file", str(path)), load)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ctx.error(f"{path} has no function {fn_name!r}")
    return fn  # type: ignore[no-any-return]


def _compile_inline(source: str, ctx: CompileContext) -> UserFn:
    try:
        expr = compile(source.strip(), "<python assertion>", "eval")
    except SyntaxError:  # not one expression: compiled as a function body below
        expr = None
    if expr is not None:
        return lambda output, context: eval(expr, {"output": output, "context": context})
    body = "def _assert(output, context):\n" + textwrap.indent(textwrap.dedent(source), "    ")
    namespace: dict[str, Any] = {}
    try:
        exec(compile(body, "<python assertion>", "exec"), namespace)
    except SyntaxError as exc:
        raise ctx.error(f"not a Python expression or function body: {exc.msg} (line {exc.lineno})") from None
    return namespace["_assert"]  # type: ignore[no-any-return]


def _case_context(case: Case) -> dict[str, Any]:
    return {
        "case": {"id": case.id, "tags": list(case.tags), "vars": case.vars, "sources": case.sources,
                 "tools": case.tools, "metadata": case.metadata},
        "vars": dict(case.vars or {}),
        "prompt": case.prompt,
        "messages": case.messages,
    }


def _interpret(result: Any, threshold: float | None) -> Outcome:
    if isinstance(result, bool):
        return Outcome(result, float(result), f"function returned {result}",
                       "python.passed" if result else "python.failed")
    if isinstance(result, (int, float)):
        score = min(max(float(result), 0.0), 1.0)
        passed = score >= threshold if threshold is not None else score > 0
        cut = f">= {threshold}" if threshold is not None else "> 0"
        return Outcome(passed, score, f"function scored {result} (pass: {cut})",
                       "python.passed" if passed else "python.failed")
    if isinstance(result, dict) and isinstance(result.get("pass"), bool):
        passed = result["pass"]
        raw_score = result.get("score", 1.0 if passed else 0.0)
        if isinstance(raw_score, bool) or not isinstance(raw_score, (int, float)):
            return Outcome(False, 0.0, f"function returned score {raw_score!r:.40}, not a number",
                           "python.bad_return", errored=True)
        reason = str(result.get("reason") or f"function returned pass={passed}")
        return Outcome(passed, min(max(float(raw_score), 0.0), 1.0), reason,
                       "python.passed" if passed else "python.failed")
    return Outcome(False, 0.0, f"function returned {type_name(result)} {clip(repr(result), 40)}; expected "
                   "bool, number or {pass, score, reason}", "python.bad_return", errored=True)


def _python(value: Any, ctx: CompileContext) -> CheckFn:
    if not ctx.env.allow_python:
        raise ctx.error("runs Python code from the cases file; allow it with --allow-python "
                        "(CheckEnv(allow_python=True))", "")
    if callable(value):
        fn: UserFn = value
    elif isinstance(value, str) and value.startswith(_FILE_PREFIX):
        fn = _load_file(value, ctx)
    elif isinstance(value, str) and value.strip():
        fn = _compile_inline(value, ctx)
    else:
        raise ctx.error(f"expected file://PATH[:FUNCTION], inline Python or a callable, got {type_name(value)}")
    base_context = _case_context(ctx.case)
    threshold = ctx.assertion.threshold

    def check(out: Output) -> Outcome:
        context = {**base_context, "finish_reason": out.finish_reason,
                   "tool_calls": [c.to_dict() for c in out.tool_calls]}
        try:
            result = fn(out.text, context)
        except Exception as exc:  # user code: whatever it raises is a verdict, not a crash of the run
            return Outcome(False, 0.0, f"function raised {type(exc).__name__}: {exc}", "python.error", errored=True)
        return _interpret(result, threshold)

    return check


CUSTOM_CHECKS: tuple[CheckType, ...] = (
    CheckType("python", _python, "a user function (file://path.py[:fn], inline expression or body) "
              "returns bool, score or {pass, score, reason}; needs --allow-python", takes_threshold=True),
)
