"""What ``eval`` and ``compare`` can point at: a local model or variant directory, or a server URL.

A ``Target`` answers a list of golden-case requests and says what it is (weight bytes, scheme).
Local targets batch through ``LocalEngine`` and return generated token ids with their
log-probabilities; URL targets send concurrent requests through ``UpstreamEngine`` and return
what the server says (no token-level data). Local models ignore ``response_format`` (no
constrained decoding here); the checks still grade the output against it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from quantgate.checks.reasoning import prompt_opens_reasoning, split_reasoning
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.errors import ChatTemplateError, QuantgateError

__all__ = ["Answer", "ChatRequest", "LocalTarget", "Target", "UpstreamTarget", "open_target", "with_reasoning"]


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    params: SamplingParams
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


@dataclass
class Answer:
    output: Any  # text (local) or an OpenAI assistant message (server)
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float]
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    error: str | None = None


class Target(Protocol):
    """Something that answers chat requests: a local model, or a server."""

    name: str
    kind: str  # "local" | "url"
    info: dict[str, Any]

    def answer(self, requests: list[ChatRequest]) -> list[Answer]: ...

    def close(self) -> None: ...


class LocalTarget:
    def __init__(self, path: str, batch_size: int = 16, dtype: str | None = None, device: str = "cpu"):
        from quantgate.engines.local import LocalEngine
        from quantgate.quantize.storage import load_any

        loaded = load_any(path, dtype=dtype, device=device)
        self.engine = LocalEngine(loaded, max_batch_size=batch_size)
        info: dict[str, Any] = {"path": str(loaded.path), "dtype": loaded.dtype, "device": device}
        if loaded.variant:
            info["scheme"] = loaded.variant["scheme"]["name"]
            info["weight_bytes"] = loaded.variant["weight_bytes"]["total"]
        else:
            info["scheme"] = loaded.dtype
            info["weight_bytes"] = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        self.name, self.kind, self.info = loaded.name, "local", info

    def close(self) -> None:
        return None

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        return self.engine.encode(self.engine.render(request.messages, request.tools))

    def answer(self, requests: list[ChatRequest]) -> list[Answer]:
        # A case the model's chat template refuses (a system turn for Gemma, say) is that case's
        # error, as a server's 400 is for an upstream target; the other cases still run.
        answers: list[Answer | None] = [None] * len(requests)
        prompts: list[tuple[int, str]] = []
        for i, r in enumerate(requests):
            try:
                prompts.append((i, self.engine.render(r.messages, r.tools)))
            except ChatTemplateError as exc:
                answers[i] = Answer("", None, 0, 0, {}, error=str(exc))
        results = self.engine.generate([GenerationRequest(self.engine.encode(text), requests[i].params)
                                        for i, text in prompts])
        for (i, text), g in zip(prompts, results):
            timings = {"queue_s": g.timings.queue_s, "prefill_s": g.timings.prefill_s, "ttft_s": g.timings.ttft_s,
                       "decode_s": g.timings.decode_s, "total_s": g.timings.total_s}
            answers[i] = Answer(with_reasoning(g.text, text), g.finish_reason, g.usage.prompt_tokens,
                                g.usage.completion_tokens, timings, g.token_ids, g.logprobs)
        return [a for a in answers if a is not None]


def with_reasoning(text: str, prompt: str) -> Any:
    """The output as graded: plain text, or a message with ``reasoning_content`` when the model thought first.

    Split here, where the prompt is known (a template that opens ``<think>`` itself leaves only the
    block's end in the output); the message form is what a server with a reasoning parser returns.
    """
    reasoning, answer = split_reasoning(text, prompt_opens_reasoning(prompt))
    if reasoning is None:
        return text
    return {"role": "assistant", "content": answer, "reasoning_content": reasoning}


class UpstreamTarget:
    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, concurrency: int = 8):
        from quantgate.engines.upstream import UpstreamEngine

        self.engine = UpstreamEngine(url, model=model, api_key=api_key)
        self.concurrency = concurrency
        self.name, self.kind = url, "url"
        self.info: dict[str, Any] = {"url": url, "model": self.engine.resolve_model()}

    def _one(self, request: ChatRequest) -> Answer:
        from quantgate.engines.upstream import UpstreamError

        try:
            r = self.engine.chat(request.messages, request.params, request.tools, request.response_format)
        except UpstreamError as exc:
            return Answer({"role": "assistant", "content": ""}, None, 0, 0, {}, error=str(exc))
        return Answer(r.message, r.finish_reason, r.prompt_tokens, r.completion_tokens, {"total_s": r.latency_s})

    def answer(self, requests: list[ChatRequest]) -> list[Answer]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        self.engine.close()


def open_target(spec: str, batch_size: int = 16, api_key: str | None = None, model: str | None = None,
                device: str = "cpu") -> Target:
    """``http(s)://...`` opens a server; anything else is a local model or variant directory (on ``device``)."""
    if spec.startswith(("http://", "https://")):
        return UpstreamTarget(spec, model=model, api_key=api_key)
    if model:
        raise QuantgateError("--model-name applies to server URLs only")
    return LocalTarget(spec, batch_size=batch_size, device=device)
