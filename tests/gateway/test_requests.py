"""What a request asks for, end to end: its schemas, tool_choice and sampling parameters, and how refusals are counted.

The official openai client (or httpx for bodies it would not send) against a real gateway in front of
real fake upstreams.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import Reply, completion, sse_events
from tests.gateway.conftest import KEY, Rig, stream_deltas

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
USER = [{"role": "user", "content": "x"}]


def _post(rig: Rig, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(rig.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})


def _call(name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "objec"}}}},
     "response_format.json_schema.schema"),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "bad", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}}}]},
     "tools.1.function.parameters"),
])
def test_an_invalid_json_schema_is_a_400_before_any_engine_call(rig: Rig, extra: dict[str, Any], param: str) -> None:
    r = _post(rig, {"model": "assistant", "messages": USER, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "invalid_schema"
    assert err["message"].startswith(param + ": invalid JSON Schema at ")
    assert not rig.upstreams["int4"].requests  # no tokens spent on a request that cannot be validated
    assert rig.metric("quantgate_requests_total", route="assistant", variant="-", status="400") == 1


@pytest.mark.parametrize("choice, param, words", [
    ({"function": "get_weather"}, "tool_choice", "type"),
    ({"type": "function", "function": {"name": "get_time"}}, "tool_choice.function.name",
     "'get_time' is not among the request's tools (get_weather)"),
    ("required", "tool_choice", "needs tools"),
    ("sometimes", "tool_choice", "none"),
])
def test_a_bad_tool_choice_is_a_400(rig: Rig, choice: Any, param: str, words: str) -> None:
    body: dict[str, Any] = {"model": "assistant", "messages": USER, "tool_choice": choice}
    if choice != "required":
        body["tools"] = [WEATHER]
    r = _post(rig, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"].startswith(param) and words in err["message"]


def test_a_named_tool_choice_is_forwarded_and_enforced(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(body=completion(None, _call("get_time", {"zone": "UTC"}), "tool_calls"))
    rig.replies["int8"] = lambda body: Reply(body=completion(None, _call("get_weather", {"city": "Oslo"}), "tool_calls"))
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=USER, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert raw.headers["x-quantgate-variant"] == "int8" and raw.headers["x-quantgate-escalated"] == "1"
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    sent = rig.upstreams["int4"].requests[-1]["body"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert rig.metric("quantgate_validation_failures_total", variant="int4", check="tool_choice",
                      code="tool_call.wrong_function") == 1


def test_sampling_parameters_reach_the_upstream(rig: Rig) -> None:
    rig.client().chat.completions.create(model="assistant", messages=USER, temperature=0.3, top_p=0.9, seed=7,
                                         max_tokens=12, stop=["END"], user="u-42")
    sent = rig.upstreams["int4"].requests[-1]["body"]
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"], sent["stop"], sent["user"]) == (
        0.3, 0.9, 7, 12, ["END"], "u-42")


def test_refused_requests_are_counted_with_their_status(rig: Rig) -> None:
    with pytest.raises(openai.NotFoundError):
        rig.client().chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        rig.client(key="sk-wrong").chat.completions.create(model="assistant", messages=USER)
    assert rig.metric("quantgate_requests_total", route="-", variant="-", status="404") == 1
    assert rig.metric("quantgate_requests_total", route="assistant", variant="-", status="401") == 1


def test_a_route_assertion_failure_escalates_and_is_logged(rig_factory: Any) -> None:
    from tests.gateway.conftest import ADMIN
    from tests.waiting import wait_until

    rig = rig_factory(routes=[{"name": "a", "model": "assistant",
                               "validate": {"assert": [{"type": "not-icontains", "value": "as an ai"}]}}])
    rig.replies["int4"] = lambda body: Reply(body=completion("As an AI, I cannot say."))
    raw = rig.client().chat.completions.with_raw_response.create(model="assistant", messages=USER)
    assert raw.headers["x-quantgate-variant"] == "int8" and raw.headers["x-quantgate-escalated"] == "1"
    assert raw.parse().choices[0].message.content == "answer from int8"
    assert rig.metric("quantgate_escalations_total", route="a", from_variant="int4", to_variant="int8",
                      reason="validation") == 1
    assert rig.metric("quantgate_validation_failures_total", variant="int4", check="not-icontains",
                      code="text.found") == 1
    assert rig.metric("quantgate_successes_total", route="a", variant="int8") == 1
    assert rig.metric("quantgate_request_seconds_count", route="a") == 1

    def logged() -> list[dict[str, Any]]:
        return httpx.get(rig.url + "/admin/events", params={"kind": "escalation"},
                         headers={"authorization": f"Bearer {ADMIN}"}).json()["events"]

    assert wait_until(lambda: len(logged()) == 1)
    event = logged()[0]
    assert (event["route"], event["variant"], event["reason"]) == ("a", "int8", "validation on int4")
    assert "text.found" in json.dumps(event["detail"])


def test_trimming_drops_orphaned_tool_turns_and_says_when_nothing_can_go(rig_factory: Any) -> None:
    rig = rig_factory(routes=[{"name": "a", "model": "assistant",
                               "limits": {"max_prompt_tokens": 40, "trim_oldest": True}}])
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather? " * 20},
            {"role": "assistant", "content": None, "tool_calls": _call("get_weather", {"city": "Oslo"})},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny " * 30},
            {"role": "user", "content": "thanks"}]
    rig.client().chat.completions.create(model="assistant", messages=msgs)
    sent = rig.upstreams["int4"].requests[-1]["body"]["messages"]
    # the old question went first, then the call; the call's answer alone would be an orphan, so it went too
    assert [m["role"] for m in sent] == ["system", "user"] and sent[-1]["content"] == "thanks"
    too_long = [{"role": "system", "content": "rules " * 100}, {"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        rig.client().chat.completions.create(model="assistant", messages=too_long)
    assert "even with every older turn dropped" in err.value.message and err.value.code == "context_length_exceeded"


def test_a_malformed_upstream_answer_escalates(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(raw=b'{"choices": [{"message": ')
    raw = rig.client().chat.completions.with_raw_response.create(model="assistant", messages=USER)
    assert raw.headers["x-quantgate-variant"] == "int8" and raw.parse().choices[0].message.content == "answer from int8"
    assert rig.metric("quantgate_attempts_total", variant="int4", outcome="error") == 1
    assert rig.metric("quantgate_escalations_total", route="assistant", from_variant="int4", to_variant="int8",
                      reason="error") == 1


def test_an_oversized_body_without_content_length_is_a_413(rig: Rig) -> None:
    def chunks() -> Any:
        yield b'{"model": "assistant", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 100_000
        yield b'"}]}'

    r = httpx.post(rig.url + "/v1/chat/completions", content=chunks(), headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert "content-length" not in {k.lower() for k in r.request.headers}


def test_newer_tool_choice_forms_are_forwarded(rig: Rig) -> None:
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "name": "get_weather"}]}}
    r = _post(rig, {"model": "assistant", "messages": USER, "tools": [WEATHER], "tool_choice": choice})
    assert r.status_code == 200, r.text
    assert rig.upstreams["int4"].requests[-1]["body"]["tool_choice"] == choice


def test_an_upstreams_reasoning_is_relayed_apart_and_not_validated(rig_factory: Any) -> None:
    # vLLM with a reasoning parser: reasoning_content beside the answer, in full answers and in deltas
    rig = rig_factory(routes=[{"name": "assistant", "model": "assistant",
                               "validate": {"assert": [{"type": "is-json"}]}}])
    answer = completion('{"a": 1}')
    answer["choices"][0]["message"]["reasoning_content"] = "They want JSON, not prose."
    rig.replies["int4"] = lambda body: Reply(body=answer)
    r = _post(rig, {"model": "assistant", "messages": USER})
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] == '{"a": 1}' and message["reasoning_content"] == "They want JSON, not prose."
    assert r.headers["x-quantgate-variant"] == "int4"  # the JSON answer passed: no escalation

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "Think"}),
              chunk({"reasoning_content": "ing."}), chunk({"content": "Hi"}), chunk({}, "stop"), "[DONE]"]
    plain = rig_factory()
    plain.replies["int4"] = lambda body: Reply(events=events)
    deltas = stream_deltas(plain.url, {"model": "assistant", "messages": USER}, KEY)
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Thinking."
    assert "".join(d.get("content", "") or "" for d in deltas) == "Hi"


def test_a_think_block_in_an_upstreams_content_is_moved_to_reasoning(rig_factory: Any) -> None:
    # a server run without its reasoning parser writes <think> into content: validated, the answer
    # alone is JSON, as `quantgate check` would grade it
    rig = rig_factory(routes=[{"name": "assistant", "model": "assistant",
                               "validate": {"assert": [{"type": "is-json"}]}}])
    rig.replies["int4"] = lambda body: Reply(body=completion('<think>JSON, then.</think>\n\n{"a": 1}'))
    r = _post(rig, {"model": "assistant", "messages": USER})
    message = r.json()["choices"][0]["message"]
    assert r.headers["x-quantgate-variant"] == "int4"
    assert message["content"] == '{"a": 1}' and message["reasoning_content"] == "JSON, then."

    plain = rig_factory()
    plain.replies["int4"] = lambda body: Reply(events=sse_events(["<thi", "nk>Hm", "m.</th", "ink>", "\n\nHi", " there"]))
    deltas = stream_deltas(plain.url, {"model": "assistant", "messages": USER}, KEY)
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Hmm."
    assert "".join(d.get("content", "") or "" for d in deltas) == "Hi there"


def test_raw_harmony_from_an_upstream_is_split_into_reasoning_answer_and_tool_calls(rig_factory: Any) -> None:
    # gpt-oss behind a server without its harmony parser: channels inline in content. The analysis
    # channel says "I can't" (not a refusal of the user), the function call becomes tool_calls and is
    # validated against the request's schema, and streamed thoughts go out as reasoning deltas
    thought = "<|channel|>analysis<|message|>I can't guess the weather; call the tool.<|end|>"
    call = ('<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
            '{"city": "Oslo"}<|call|>')
    rig = rig_factory()
    rig.replies["int4"] = lambda body: Reply(body=completion(thought + call))
    r = _post(rig, {"model": "assistant", "messages": USER, "tools": [WEATHER]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == "I can't guess the weather; call the tool."
    [tool_call] = choice["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert r.headers["x-quantgate-variant"] == "int4"  # the call validated: no escalation

    final = "<|start|>assistant<|channel|>final<|message|>Sunny in Oslo.<|return|>"
    text = thought + final
    plain = rig_factory()
    plain.replies["int4"] = lambda body: Reply(events=sse_events([text[i:i + 7] for i in range(0, len(text), 7)]))
    deltas = stream_deltas(plain.url, {"model": "assistant", "messages": USER}, KEY)
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "I can't guess the weather; call the tool."
    assert "".join(d.get("content", "") or "" for d in deltas) == "Sunny in Oslo."

    # streamed through the official client, validated (buffered) and passed straight through: the
    # call arrives as a tool_calls delta, whole
    text = thought + call
    pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
    through = rig_factory(routes=[{"name": "assistant", "model": "assistant", "validate": {"tool_arguments": False}}])
    for r in (rig, through):
        r.replies["int4"] = lambda body: Reply(events=sse_events(pieces)) if body.get("stream") \
            else Reply(body=completion(text))
        client = openai.OpenAI(base_url=r.url + "/v1", api_key=KEY)
        chunks = list(client.chat.completions.create(model="assistant", messages=USER, tools=[WEATHER], stream=True))
        deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
        calls = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert [(tc.function.name, tc.function.arguments) for tc in calls] == [("get_weather", '{"city": "Oslo"}')]
        assert not "".join(d.content or "" for d in deltas)
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] \
            == ["tool_calls"]
        assert r.upstreams["int4"].requests[-1]["body"].get("stream", False) is (r is through)


def test_stripped_harmony_streamed_from_an_upstream_is_split_too(rig_factory: Any) -> None:
    # a server decoding gpt-oss with skip_special_tokens streams "analysis...assistantfinal...": the
    # thought arrives as reasoning (in one part, once the answer's marker shows it was one), the rest as content
    text = "analysisThe user wants Oslo's weather. I can't know it.assistantfinalSunny in Oslo."
    rig = rig_factory()
    rig.replies["int4"] = lambda body: Reply(events=sse_events([text[i:i + 4] for i in range(0, len(text), 4)]))
    deltas = stream_deltas(rig.url, {"model": "assistant", "messages": USER}, KEY)
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants Oslo's weather. I can't know it."
    assert "".join(d.get("content", "") or "" for d in deltas) == "Sunny in Oslo."
