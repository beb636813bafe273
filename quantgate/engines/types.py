"""Value objects every engine speaks: a request's sampling parameters, and what comes back.

Kept free of torch so the gateway and the evaluator can build and read them cheaply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from quantgate.errors import QuantgateError

__all__ = [
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "SamplingParams",
    "Score",
    "Timings",
    "TokenDelta",
    "Usage",
]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` is greedy; ``seed`` makes sampling repeatable."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise QuantgateError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 5.0:
            raise QuantgateError(f"temperature must be within [0, 5], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise QuantgateError(f"top_p must be within (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise QuantgateError("stop sequences must be non-empty strings")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationRequest:
    """One prompt to continue: already-rendered text, or token ids."""

    prompt: str | list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # tokens generated, the end-of-sequence token included

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Seconds. ``ttft_s`` counts from submission (queue + prefill + first token)."""

    queue_s: float
    prefill_s: float
    ttft_s: float
    decode_s: float
    total_s: float


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int]  # completion tokens, without the end-of-sequence token
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    logprobs: list[float] = field(default_factory=list)  # fp32 log p of each id in token_ids


@dataclass(frozen=True)
class TokenDelta:
    """A piece of text that became final for request ``index`` of a batch (for streaming)."""

    index: int
    text: str
    token_id: int


@dataclass(frozen=True)
class Score:
    """Teacher-forced log-probabilities of a continuation, one entry per continuation token.

    ``logprobs[i]`` is log p(continuation[i] | prompt, continuation[:i]), computed in fp32.
    ``top_ids``/``top_logprobs`` hold the k most likely alternatives at each position when asked.
    """

    token_ids: list[int]
    logprobs: list[float]
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)

    @property
    def total_logprob(self) -> float:
        return float(sum(self.logprobs))
