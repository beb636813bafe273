"""The OpenAI chat-completions wire format: request parsing, error bodies, response and chunk bodies.

Requests are validated with pydantic (its Rust core keeps parsing in the tens of microseconds) and
every problem becomes an OpenAI-style 400 naming the field (``messages.2.role``), never a 500.
Fields the API defines but this gateway does not act on (``presence_penalty``, ``logit_bias``...)
are accepted and ignored, as the official client sends some of them; values it cannot honour
(``n`` > 1) are refused rather than silently ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ApiError", "ChatRequest", "Message", "NamedToolChoice", "chunk_body", "completion_body", "error_body", "parse_chat_request",
]


@dataclass
class ApiError(Exception):
    """An error the client gets as ``{"error": {...}}`` with ``status``."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FunctionCall(_Lenient):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text; content parts of type ``text`` are joined, others refused earlier."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.get("text", "") for p in self.content)

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, part in enumerate(v):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"content[{i}]: only text parts are supported")
        return v


class FunctionDef(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ToolChoiceFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    """``{"type": "function", "function": {"name": ...}}``: the answer must call this tool."""

    type: Literal["function"]
    function: ToolChoiceFunction


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    n: int = Field(1, ge=1, le=1)
    metadata: dict[str, str] | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if v is None or v in ("none", "auto", "required"):
            return v
        if isinstance(v, dict) and v.get("type") == "function":
            fn = v.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError('a function choice is {"type": "function", "function": {"name": ...}}')
            return NamedToolChoice.model_validate(v)
        if isinstance(v, dict) and isinstance(v.get("type"), str):
            return v  # a newer form (allowed_tools, custom ...): forwarded as given, not enforced here
        raise ValueError('expected "none", "auto", "required" or {"type": "function", "function": {"name": ...}}')

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    def completion_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        return {t.function.name: t.function.parameters for t in self.tools or []}


def _check_tool_choice(request: ChatRequest) -> None:
    """A choice that needs tools, or names one, must match the request's tools (as the OpenAI API checks)."""
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        names = [t.function.name for t in request.tools or []]
        if choice.function.name not in names:
            raise ApiError(400, f"tool_choice.function.name: {choice.function.name!r} is not among the request's tools"
                                f" ({', '.join(names) or 'none given'})", param="tool_choice.function.name")
    elif choice == "required" and not request.tools:
        raise ApiError(400, "tool_choice: 'required' needs tools in the request", param="tool_choice")


def _param(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "literal[", "str", "list[", "dict[")))


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse a request body; raises ``ApiError(400)`` naming the first bad field."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = _param(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if param == "n":
            msg = "only n=1 is supported"
        raise ApiError(400, f"{param}: {msg}" if param else msg, param=param or None) from None
    _check_tool_choice(request)
    return request


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _message(content: str | None, tool_calls: list[dict[str, Any]] | None, reasoning: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:  # the field vLLM and DeepSeek's API use
        msg["reasoning_content"] = reasoning
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def completion_body(cid: str, model: str, content: str | None, tool_calls: list[dict[str, Any]] | None,
                    finish_reason: str, prompt_tokens: int, completion_tokens: int,
                    reasoning: str | None = None) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": _message(content, tool_calls, reasoning), "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chunk_body(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
               usage: dict[str, int] | None = None, with_choice: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}] if with_choice else []}
    if usage is not None:
        body["usage"] = usage
    return body
