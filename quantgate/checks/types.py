"""The records the check library passes around: assertions, cases, outputs, verdicts.

All are frozen dataclasses (an ``Output`` caches its parsed tool calls, nothing else mutates), so a
compiled assertion list can be reused across the samples of one case and across threads. Parsing
raw JSON into these records, with errors naming file/line/field, lives in ``cases.py``; these
constructors trust their arguments, which keeps the hot path of ``quantgate check`` free of
re-validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from quantgate.checks.codes import OK
from quantgate.checks.tool_parsing import ToolCall, parse_tool_calls_from_text

__all__ = ["Assertion", "Case", "CaseResult", "Outcome", "Output", "ToolCall", "Verdict"]


@dataclass(frozen=True, slots=True)
class Assertion:
    """One entry of a case's ``assert`` list, as in promptfoo: ``{type, value, weight, threshold}``.

    ``type`` is kept as written, ``not-`` prefix included; the registry resolves it. ``weight`` 0
    makes the assertion report-only: it appears in the verdicts but neither gates nor scores.
    """

    type: str
    value: Any = None
    weight: float = 1.0
    threshold: float | None = None
    metric: str | None = None


@dataclass(frozen=True)
class Case:
    """What the checks may consult besides the output: the request's tools, sources, format...

    ``where`` ("cases.jsonl:3") prefixes errors raised while compiling the case's assertions;
    ``base_dir`` is where ``file://`` values (python checks) resolve.
    """

    id: str
    assertions: tuple[Assertion, ...] = ()
    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    response_format: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()
    critical: bool = False
    samples: int = 1
    sources: tuple[Any, ...] | None = None
    vars: Mapping[str, Any] | None = None
    description: str | None = None
    metadata: Mapping[str, Any] | None = None
    base_dir: Path | None = None
    where: str = ""


class Output:
    """A model output as the checks see it: its text, its tool calls, why it stopped.

    ``tool_calls`` are the message's own (OpenAI ``tool_calls``) when it has any, else the Hermes
    ``<tool_call>`` blocks in the text, parsed on first use: most checks never look at them.
    ``completion_tokens`` comes from the line's ``usage`` when present (for ``token-count``).
    ``reasoning`` is a thinking model's reasoning, kept apart from ``text``, the answer the checks
    grade (``reasoning`` module).
    """

    __slots__ = ("text", "finish_reason", "completion_tokens", "reasoning", "_tool_calls")

    def __init__(self, text: str = "", *, tool_calls: tuple[ToolCall, ...] | None = None,
                 finish_reason: str | None = None, completion_tokens: int | None = None,
                 reasoning: str | None = None) -> None:
        self.text = text
        self.finish_reason = finish_reason
        self.completion_tokens = completion_tokens
        self.reasoning = reasoning
        self._tool_calls = tool_calls or None

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        if self._tool_calls is None:
            self._tool_calls = tuple(parse_tool_calls_from_text(self.text))
        return self._tool_calls

    def __repr__(self) -> str:
        return (f"Output(text={self.text!r}, tool_calls={self._tool_calls!r}, "
                f"finish_reason={self.finish_reason!r})")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a check function returns; the registry turns it into a ``Verdict``.

    ``code`` is the failure code when ``passed`` is False, and the check's "matched" code when it
    is True (used if the assertion is negated). ``errored`` means the check could not be evaluated
    (a user function raised, no finish_reason on the line): negation does not turn that into a pass.
    """

    passed: bool
    score: float
    reason: str
    code: str
    errored: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one assertion on one output. ``code`` is ``ok`` exactly when ``passed``."""

    type: str
    passed: bool
    score: float
    reason: str
    code: str = OK
    weight: float = 1.0
    errored: bool = False
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "passed": self.passed, "score": self.score,
                             "code": self.code, "reason": self.reason, "weight": self.weight}
        if self.errored:
            d["errored"] = True
        if self.metric is not None:
            d["metric"] = self.metric
        return d


@dataclass(frozen=True)
class CaseResult:
    """All verdicts for one output of one case, with the promptfoo-style aggregate.

    ``passed``: every assertion of non-zero weight passed. ``score``: the weight-averaged score of
    those (1.0 when there are none).
    """

    case_id: str
    passed: bool
    score: float
    verdicts: tuple[Verdict, ...]
    critical: bool = False
    tags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.case_id, "passed": self.passed, "score": self.score,
                "critical": self.critical, "verdicts": [v.to_dict() for v in self.verdicts]}
