"""Engines turn prompts into generations and scores. ``local`` runs an in-process torch model;
the value objects in ``types`` are shared with the gateway and the evaluator."""

from quantgate.engines.types import (
    Generation,
    GenerationRequest,
    SamplingParams,
    Score,
    Timings,
    TokenDelta,
    Usage,
)

__all__ = ["Generation", "GenerationRequest", "SamplingParams", "Score", "Timings", "TokenDelta", "Usage"]
