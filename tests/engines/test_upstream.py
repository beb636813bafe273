from __future__ import annotations

import pytest

from quantgate.engines.types import SamplingParams
from quantgate.engines.upstream import UpstreamEngine, UpstreamError
from tests.fakes.upstream import FakeUpstream, Reply, completion


def test_chat_round_trip_against_a_real_server() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]
    with FakeUpstream(lambda body: Reply(body=completion(None, tool_calls=calls, finish_reason="tool_calls",
                                                         prompt_tokens=11, completion_tokens=7))) as server:
        with UpstreamEngine(server.url, api_key="k") as engine:
            tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
            result = engine.chat([{"role": "user", "content": "hi"}],
                                 SamplingParams(max_tokens=9, seed=3, stop=("##",)), tools=tools,
                                 response_format={"type": "json_object"})
        sent = server.requests[0]
    assert result.message["tool_calls"] == calls and result.finish_reason == "tool_calls"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 7) and result.latency_s > 0
    body = sent["body"]
    assert body["model"] == "fake" and body["max_tokens"] == 9 and body["seed"] == 3 and body["stop"] == ["##"]
    assert body["tools"] == tools and body["response_format"] == {"type": "json_object"}
    assert sent["headers"]["authorization"] == "Bearer k"


def test_http_error_carries_the_servers_message() -> None:
    with FakeUpstream(lambda body: Reply(503, {"error": {"message": "overloaded"}})) as server:
        with UpstreamEngine(server.url, model="m") as engine:
            with pytest.raises(UpstreamError, match="HTTP 503: overloaded"):
                engine.chat([{"role": "user", "content": "hi"}], SamplingParams())


def test_malformed_and_non_json_answers() -> None:
    with FakeUpstream(lambda body: Reply(body={"choices": []})) as server:
        with UpstreamEngine(server.url, model="m") as engine:
            with pytest.raises(UpstreamError, match="malformed completion"):
                engine.chat([{"role": "user", "content": "hi"}], SamplingParams())
    with FakeUpstream(lambda body: Reply(raw=b"<html>oops")) as server:
        with UpstreamEngine(server.url, model="m") as engine:
            with pytest.raises(UpstreamError, match="answer is not JSON"):
                engine.chat([{"role": "user", "content": "hi"}], SamplingParams())


def test_read_timeout() -> None:
    with FakeUpstream(lambda body: Reply(body=completion(), delay_s=0.5)) as server:
        with UpstreamEngine(server.url, model="m", read_timeout=0.1) as engine:
            with pytest.raises(UpstreamError, match="timed out"):
                engine.chat([{"role": "user", "content": "hi"}], SamplingParams())


def test_connection_refused() -> None:
    with UpstreamEngine("http://127.0.0.1:9", model="m", connect_timeout=0.5) as engine:
        with pytest.raises(UpstreamError, match="ConnectError"):
            engine.chat([{"role": "user", "content": "hi"}], SamplingParams())
