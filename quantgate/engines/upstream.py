"""An OpenAI-compatible server as an engine (vLLM, llama.cpp server, TGI, Ollama, or a gateway).

This is the blocking client the offline evaluator uses: one pooled ``httpx.Client``, connect and
read timeouts, and the transport injectable so tests can put a real local server, or an
``httpx.MockTransport`` standing in for the network, behind it. Errors a server or the network
cause become ``UpstreamError`` with the status and the server's own message, never a raw
traceback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from quantgate.engines.types import SamplingParams
from quantgate.errors import QuantgateError

__all__ = ["ChatResult", "UpstreamEngine", "UpstreamError"]


class UpstreamError(QuantgateError):
    """The upstream server failed, timed out, or answered something that is not a completion."""


@dataclass(frozen=True)
class ChatResult:
    message: dict[str, Any]  # the assistant message: content and/or tool_calls
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str


class UpstreamEngine:
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 32,
    ):
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else f"{url}/v1"
        self.model = model
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> UpstreamEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve_model(self) -> str:
        """The configured model, or the server's first listed one."""
        if self.model:
            return self.model
        data = self._request("GET", "/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not models or not isinstance(models, list) or "id" not in models[0]:
            raise UpstreamError(f"{self.base_url}/models lists no model; pass one explicitly")
        self.model = str(models[0]["id"])
        return self.model

    def chat(
        self,
        messages: list[dict[str, Any]],
        params: SamplingParams,
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        body: dict[str, Any] = {
            "model": self.resolve_model(), "messages": messages, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if tools:
            body["tools"] = tools
        if response_format:
            body["response_format"] = response_format
        start = time.perf_counter()
        data = self._request("POST", "/chat/completions", body)
        latency = time.perf_counter() - start
        try:
            choice = data["choices"][0]
            message = choice["message"]
            usage = data.get("usage") or {}
            return ChatResult(
                message=dict(message), finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=latency, model=str(data.get("model", body["model"])),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamError(f"{self.base_url}/chat/completions: malformed completion ({exc!r})") from None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"{self.base_url}{path}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise UpstreamError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            detail = response.text[:300]
            try:
                detail = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise UpstreamError(f"{self.base_url}{path}: HTTP {response.status_code}: {detail}")
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"{self.base_url}{path}: answer is not JSON") from None
