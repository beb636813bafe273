"""The registry of check types, and compiling a case's assertions into something cheap to run.

A ``CheckType`` pairs a name (promptfoo's where promptfoo has one) with a *compile* function: it
validates the assertion's ``value`` once, against the case (its tools, sources...), and returns a
plain ``Output -> Outcome`` function. Compiling up front is the trade-off that makes both goals
hold: bad values fail before any output is graded, with a message naming file, line and field,
and grading the N samples of a case reruns only the closure.

``not-X`` is resolved here for every X: the inner outcome's pass/fail and score are inverted; an
*errored* outcome stays a failure (a crashed user function is never a pass).

The registry is an object the caller owns; ``builtin.default_registry()`` builds one with every
built-in type. Per-run resources (schema validators, loaded user functions, the refusal detector)
live in its ``CheckEnv``, so two registries never share state.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from quantgate.checks.codes import OK
from quantgate.checks.errors import CheckConfigError, UnknownCheckError, located
from quantgate.checks.reasoning import split_reasoning
from quantgate.checks.types import Assertion, Case, CaseResult, Outcome, Output, Verdict

__all__ = [
    "CheckEnv", "CheckFn", "CheckType", "CompileContext", "CompiledAssertion", "CompiledCase",
    "NEGATION_PREFIX", "Registry", "aggregate",
]

NEGATION_PREFIX = "not-"
CheckFn = Callable[[Output], Outcome]
T = TypeVar("T")


class CheckEnv:
    """Per-run resources the compiled checks share, owned by one registry.

    ``allow_python``: run ``python`` assertions (user code from the cases file); off by default,
    like ``--allow-pickle``. ``count_tokens``: a tokenizer for ``token-count`` when lines carry no
    ``usage``. ``refusal_detector``: an object with ``probability(text) -> float``; None loads the
    default (learned if its model is installed, else the pattern fallback) on first use.
    ``memo`` caches anything expensive to build (compiled JSON Schemas, imported user files), up to
    ``MEMO_LIMIT`` entries.
    """

    def __init__(self, *, allow_python: bool = False, count_tokens: Callable[[str], int] | None = None,
                 refusal_detector: Any = None, base_dir: Path | None = None) -> None:
        self.allow_python = allow_python
        self.count_tokens = count_tokens
        self.refusal_detector = refusal_detector
        self.base_dir = base_dir
        self._memo: dict[Hashable, Any] = {}

    MEMO_LIMIT = 4096  # a gateway compiles every request's own schemas: clients must not grow it without bound

    def memo(self, key: Hashable, build: Callable[[], T]) -> T:
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            if len(self._memo) >= self.MEMO_LIMIT:
                del self._memo[next(iter(self._memo))]  # oldest first: a schema still in use just compiles again
            value = self._memo[key] = build()
            return value


@dataclass(frozen=True)
class CompileContext:
    """What a compile function may consult: the case, the assertion, the env; and how to complain."""

    case: Case
    assertion: Assertion
    field: str  # e.g. "case.assert[2]"
    env: CheckEnv

    def error(self, message: str, field: str = "value") -> CheckConfigError:
        """A ``CheckConfigError`` located at ``where: case.assert[i].FIELD``; raise it."""
        path = f"{self.field}.{field}" if field else self.field
        return CheckConfigError(located(self.case.where, path, f"{self.assertion.type}: {message}"))


@dataclass(frozen=True)
class CheckType:
    """A named check: ``compile(value, ctx)`` validates ``value`` and returns the check function.

    ``takes_threshold``: whether an assertion's ``threshold`` means something for this type
    (a probability or score cut); elsewhere a threshold is rejected as a likely mistake.
    """

    name: str
    compile: Callable[[Any, CompileContext], CheckFn]
    summary: str
    takes_threshold: bool = False


@dataclass(frozen=True, slots=True)
class CompiledAssertion:
    assertion: Assertion
    fn: CheckFn
    negate: bool

    def run(self, output: Output) -> Verdict:
        o = self.fn(output)
        a = self.assertion
        if self.negate and not o.errored:
            passed, score = not o.passed, 1.0 - o.score
        else:
            passed, score = o.passed, o.score
        return Verdict(a.type, passed, score, o.reason, OK if passed else o.code, a.weight,
                       o.errored, a.metric)


def aggregate(verdicts: Sequence[Verdict]) -> tuple[bool, float]:
    """promptfoo's rule: pass iff every weighted assertion passes; score = weighted mean.

    Weight-0 verdicts are reported only. With no weighted verdict the result is (True, 1.0).
    """
    total = 0.0
    acc = 0.0
    passed = True
    for v in verdicts:
        if v.weight > 0:
            total += v.weight
            acc += v.weight * v.score
            passed = passed and v.passed
    return passed, (acc / total if total else 1.0)


@dataclass(frozen=True, slots=True)
class CompiledCase:
    """A case's assertions, compiled; ``run(output)`` grades one output (one sample)."""

    case: Case
    assertions: tuple[CompiledAssertion, ...]

    def run(self, output: Output) -> CaseResult:
        verdicts = tuple(a.run(output) for a in self.assertions)
        passed, score = aggregate(verdicts)
        return CaseResult(self.case.id, passed, score, verdicts, self.case.critical, self.case.tags)


class Registry:
    """Check types by name, plus the ``CheckEnv`` their compiled checks share."""

    def __init__(self, types: Iterable[CheckType] = (), *, env: CheckEnv | None = None) -> None:
        self._types: dict[str, CheckType] = {}
        self.env = env if env is not None else CheckEnv()
        for t in types:
            self.register(t)

    def register(self, check_type: CheckType, *, replace: bool = False) -> None:
        """Add a type. Names starting with ``not-`` are reserved for negation."""
        if check_type.name.startswith(NEGATION_PREFIX):
            raise ValueError(f"check type names may not start with {NEGATION_PREFIX!r}: {check_type.name}")
        if check_type.name in self._types and not replace:
            raise ValueError(f"check type {check_type.name!r} is already registered")
        self._types[check_type.name] = check_type

    def names(self) -> list[str]:
        return sorted(self._types)

    def get(self, name: str) -> CheckType | None:
        return self._types.get(name)

    def resolve(self, type_name: str) -> tuple[CheckType, bool] | None:
        """The check type for ``type_name`` and whether it is negated; None if unknown."""
        t = self._types.get(type_name)
        if t is not None:
            return t, False
        if type_name.startswith(NEGATION_PREFIX):
            t = self._types.get(type_name[len(NEGATION_PREFIX):])
            if t is not None:
                return t, True
        return None

    def compile(self, assertion: Assertion, case: Case, field: str = "case.assert[0]") -> CompiledAssertion:
        """Compile one assertion; raises ``CheckConfigError`` naming ``case.where`` and ``field``."""
        resolved = self.resolve(assertion.type)
        if resolved is None:
            raise UnknownCheckError(located(case.where, f"{field}.type", self._unknown_message(assertion.type)))
        check_type, negate = resolved
        ctx = CompileContext(case, assertion, field, self.env)
        if assertion.threshold is not None and not check_type.takes_threshold:
            raise ctx.error(f"threshold has no meaning for {check_type.name!r}", "threshold")
        return CompiledAssertion(assertion, check_type.compile(assertion.value, ctx), negate)

    def compile_case(self, case: Case, field: str = "case.assert") -> CompiledCase:
        """Compile every assertion of ``case``; the first bad one raises.

        ``field`` is the assertion list's path in errors: ``case.assert`` on ``check`` lines,
        ``assert`` where the case is the whole line (golden sets).
        """
        return CompiledCase(case, tuple(self.compile(a, case, f"{field}[{i}]")
                                        for i, a in enumerate(case.assertions)))

    def check(self, output: Output | str, case: Case) -> CaseResult:
        """Compile ``case`` and grade one output: the one-call API for a single output."""
        if isinstance(output, str):
            reasoning, answer = split_reasoning(output)
            output = Output(answer, reasoning=reasoning)
        return self.compile_case(case).run(output)

    def _unknown_message(self, type_name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(type_name, known + [NEGATION_PREFIX + k for k in known], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown check type {type_name!r}{hint}; known: {', '.join(known)} (each also as not-TYPE)"
