"""Variants as asynchronous engines: an upstream OpenAI-compatible server, or a local model with dynamic batching.

Both answer ``complete(request, max_tokens)`` with a ``Completion`` and ``stream(...)`` with
``StreamPiece``s, and raise ``EngineFailure`` (kind ``error`` or ``timeout``) for anything that is
not a finished answer, so the pipeline can escalate on it. A stream that ends before the upstream
said it finished is a failure, never a normal completion.

Local engines (``gateway.batcher``) run on one worker thread per variant with continuous batching.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp

from quantgate.checks.harmony import is_harmony
from quantgate.checks.reasoning import OPEN, ReasoningStream, split_reasoning
from quantgate.checks.tool_parsing import TOOL_CALL_OPEN, parse_tool_calls_from_text
from quantgate.gateway.protocol import ChatRequest

__all__ = ["Completion", "EngineFailure", "GatewayEngine", "StreamPiece", "StreamTally", "UpstreamAsyncEngine",
           "split_answer", "split_tool_calls"]


@dataclass
class Completion:
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    engine_s: float
    ttft_s: float
    reasoning: str | None = None  # a thinking model's reasoning, apart from the answer (``reasoning_content``)


@dataclass
class StreamPiece:
    """One chunk's worth: a content delta, tool-call deltas (OpenAI shape), a reasoning delta, or the end with usage."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str | None = None


class EngineFailure(Exception):
    def __init__(self, kind: Literal["error", "timeout"], message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class GatewayEngine(Protocol):
    name: str

    def count_prompt_tokens(self, request: ChatRequest) -> int: ...
    async def complete(self, request: ChatRequest, max_tokens: int) -> Completion: ...
    def stream(self, request: ChatRequest, max_tokens: int) -> AsyncIterator[StreamPiece]: ...
    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------ upstream
class UpstreamAsyncEngine:
    """A pooled aiohttp session to ``url`` (``.../v1``), created on first use inside the serving loop.

    aiohttp rather than httpx here: profiled at concurrency 16, httpx's connection pool spent most of
    the gateway's CPU scanning idle connections on every request (O(connections) per request).
    """

    def __init__(self, name: str, url: str, model: str, *, api_key: str | None = None,
                 connect_timeout_s: float = 2.0, read_timeout_s: float = 60.0, max_connections: int = 64,
                 count_tokens: Callable[[str], int] | None = None):
        self.name = name
        base = url.rstrip("/")
        self._endpoint = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self._model = model
        self._count = count_tokens
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30),
                timeout=self._timeout, headers=self._headers)
        return self._session

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        text = "\n".join(m.text() for m in request.messages)
        if request.tools:
            text += json.dumps([t.model_dump() for t in request.tools])
        if self._count is not None:
            return self._count(text)
        # No tokenizer configured: about four characters per token for English, rounded up.
        return (len(text) + 3) // 4 + 4 * len(request.messages)

    def _payload(self, request: ChatRequest, max_tokens: int, stream: bool) -> bytes:
        body = request.model_dump(exclude_none=True, by_alias=True,
                                  exclude={"model", "stream", "stream_options", "metadata", "max_completion_tokens"})
        body.update(model=self._model, max_tokens=max_tokens, stream=stream)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    async def complete(self, request: ChatRequest, max_tokens: int) -> Completion:
        t0 = time.perf_counter()
        try:
            async with self._client().post(self._endpoint, data=self._payload(request, max_tokens, False)) as r:
                raw = await r.read()
                status = r.status
        except (asyncio.TimeoutError, TimeoutError):
            raise EngineFailure("timeout", f"{self.name}: upstream timed out") from None
        except aiohttp.ClientError as e:
            raise EngineFailure("error", f"{self.name}: upstream unreachable ({type(e).__name__}: {e})") from None
        elapsed = time.perf_counter() - t0
        text = raw[:200].decode(errors="replace")
        if status != 200:
            raise EngineFailure("error", f"{self.name}: upstream answered {status}: {text}")
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            msg = choice["message"]
            usage = data.get("usage") or {}
            content, reasoning, calls = msg.get("content"), _reasoning(msg), msg.get("tool_calls") or None
            finish = choice.get("finish_reason") or "stop"
            if reasoning is None and isinstance(content, str):  # a server without its reasoning parser
                if is_harmony(content) and calls is None:  # gpt-oss: its function calls become tool_calls
                    reasoning, content, calls = split_answer(content, opened=False)
                    finish = "tool_calls" if calls else finish
                elif is_harmony(content) or content.lstrip().startswith(OPEN):
                    reasoning, content = split_reasoning(content, opened=False)
            return Completion(content, calls, finish,
                              int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), elapsed, elapsed,
                              reasoning)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise EngineFailure("error", f"{self.name}: upstream answer is not a chat completion: {text}") from None

    async def stream(self, request: ChatRequest, max_tokens: int) -> AsyncIterator[StreamPiece]:
        finished = False
        split = _ContentReasoning()
        try:
            async with self._client().post(self._endpoint, data=self._payload(request, max_tokens, True)) as r:
                if r.status != 200:
                    text = (await r.read())[:200].decode(errors="replace")
                    raise EngineFailure("error", f"{self.name}: upstream answered {r.status}: {text}")
                async for raw_line in r.content:
                    line = raw_line.decode(errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":  # the server's own end marker
                        finished = True
                        for out in split.end():
                            yield out
                        break
                    piece = _piece_from_chunk(self.name, data)
                    finished = finished or piece.finish_reason is not None
                    for out in split.pieces(piece):
                        yield out
        except (asyncio.TimeoutError, TimeoutError):
            raise EngineFailure("timeout", f"{self.name}: upstream stream timed out") from None
        except aiohttp.ClientError as e:
            raise EngineFailure("error", f"{self.name}: upstream stream broke ({type(e).__name__})") from None
        if not finished:
            raise EngineFailure("error", f"{self.name}: upstream stream ended before the completion finished")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _piece_from_chunk(name: str, data: str) -> StreamPiece:
    try:
        chunk = json.loads(data)
        usage = chunk.get("usage") or {}
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") or {} if choices else {}
        return StreamPiece(delta.get("content"), delta.get("tool_calls"),
                           choices[0].get("finish_reason") if choices else None,
                           usage.get("prompt_tokens"), usage.get("completion_tokens"), _reasoning(delta))
    except (ValueError, AttributeError, IndexError, TypeError):
        raise EngineFailure("error", f"{name}: upstream sent a malformed stream chunk: {data[:120]}") from None


class _ContentReasoning:
    """A server without its reasoning parser: a leading ``<think>`` block in streamed content goes out
    as reasoning deltas, and so do gpt-oss's raw harmony channels, whose function calls (each sent
    whole by ``HarmonyStream``) go out as ``tool_calls`` deltas with ``finish_reason`` ``tool_calls``."""

    def __init__(self) -> None:
        self._split = ReasoningStream(opened=False)
        self._calls = 0

    def pieces(self, piece: StreamPiece) -> list[StreamPiece]:
        ends = piece.finish_reason is not None or piece.prompt_tokens is not None
        parts = self._split.feed(piece.content) if piece.content else []
        parts += self._split.flush() if ends else []
        out = self._as_pieces(parts)
        if self._calls and piece.finish_reason is not None:
            piece = dataclasses.replace(piece, finish_reason="tool_calls")
        if not out and piece.content is None:
            return [piece]
        rest = dataclasses.replace(piece, content=None)
        if rest != StreamPiece():
            out.append(rest)
        return out

    def end(self) -> list[StreamPiece]:
        return self._as_pieces(self._split.flush())

    def _as_pieces(self, parts: list[tuple[str, str]]) -> list[StreamPiece]:
        out = []
        for kind, text in parts:
            if kind == "reasoning":
                out.append(StreamPiece(reasoning=text))
                continue
            if self._split.harmony and text.lstrip().startswith(TOOL_CALL_OPEN):
                _, calls = split_tool_calls(text.strip())
                if calls:
                    out.append(StreamPiece(tool_calls=[{"index": self._calls + i, **c} for i, c in enumerate(calls)]))
                    self._calls += len(calls)
                    continue
            out.append(StreamPiece(content=text))
        return out


def _reasoning(message: dict[str, Any]) -> str | None:
    """A server's reasoning field: ``reasoning_content`` (vLLM, SGLang, DeepSeek) or ``reasoning``."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------------------------ local
def split_answer(text: str, opened: bool) -> tuple[str | None, str | None, list[dict[str, Any]] | None]:
    """Raw model text -> (reasoning, content, OpenAI ``tool_calls``), as a server with both parsers answers.

    ``opened``: the prompt left a ``<think>`` block open (``reasoning.prompt_opens_reasoning``).
    """
    reasoning, answer = split_reasoning(text, opened)
    content, calls = split_tool_calls(answer)
    return reasoning, content, calls


def split_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """Hermes ``<tool_call>`` blocks in model text -> (content, OpenAI ``tool_calls``).

    Blocks that do not parse stay in the content, so validation sees exactly what the model wrote.
    """
    calls = parse_tool_calls_from_text(text)
    if not calls or any(c.error for c in calls):
        return text, None
    out = [{"id": "call_" + uuid.uuid4().hex[:20], "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in calls]
    return None, out


class StreamTally:
    """What a relayed stream said, put back together: text, tool calls (OpenAI deltas by index), usage."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason = "stop"
        self.prompt = self.completion = 0
        self.chunks = 0  # pieces that carried content or tool calls (a usage-less estimate of tokens)
        self.started = time.perf_counter()

    def add(self, piece: StreamPiece) -> None:
        self.prompt = piece.prompt_tokens or self.prompt
        self.completion = piece.completion_tokens or self.completion
        self.finish_reason = piece.finish_reason or self.finish_reason
        if piece.content or piece.tool_calls or piece.reasoning:
            self.chunks += 1
        if piece.content:
            self.content.append(piece.content)
        if piece.reasoning:
            self.reasoning.append(piece.reasoning)
        for delta in piece.tool_calls or []:
            call = self.calls.setdefault(int(delta.get("index", len(self.calls))),
                                         {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = delta.get("id") or call["id"]
            fn = delta.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""

    def completed(self) -> Completion:
        text = "".join(self.content) or None
        calls = [self.calls[i] for i in sorted(self.calls)] or None
        if calls is None and text and "<tool_call>" in text:  # a local model writes its calls as text
            text, calls = split_tool_calls(text)
        return Completion(text, calls, self.finish_reason, self.prompt, self.completion,
                          time.perf_counter() - self.started, 0.0, "".join(self.reasoning).strip() or None)
