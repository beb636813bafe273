"""The gateway end to end: the official openai client against a real gateway in front of real fake upstreams."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import Reply, completion, sse_events
from tests.gateway.conftest import ADMIN, Rig
from tests.waiting import wait_until

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"], "additionalProperties": False}}}


def _call(args: Any, name: str = "get_weather") -> list[dict[str, Any]]:
    return [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]


def test_plain_completion_through_the_openai_client(rig: Rig) -> None:
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "hi"}], max_tokens=20, temperature=0.2, seed=3,
        stop=["\n"], user="u1")
    resp = raw.parse()
    assert resp.choices[0].message.content == "answer from int4"
    assert resp.usage.total_tokens == 8
    assert raw.headers["x-quantgate-variant"] == "int4"
    assert raw.headers["x-quantgate-escalated"] == "0"
    assert "route assistant" in raw.headers["x-quantgate-route-reason"]
    sent = rig.upstreams["int4"].requests[-1]["body"]
    assert sent["model"] == "fake" and sent["max_tokens"] == 20 and sent["stop"] == ["\n"] and sent["seed"] == 3
    assert rig.metric("quantgate_requests_total", route="assistant", variant="int4", status="200") == 1
    assert rig.metric("quantgate_cost_total", route="assistant", variant="int4") == pytest.approx((5 * 100 + 3 * 200) / 1e6)


def test_models_health_and_metrics(rig: Rig) -> None:
    assert [m.id for m in rig.client().models.list().data] == ["assistant"]
    assert httpx.get(rig.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(rig.url + "/readyz").status_code == 200
    text = httpx.get(rig.url + "/metrics").text
    assert "quantgate_requests_total" in text and "quantgate_queue_depth" in text
    assert "\nquantgate_event_log_dropped 0.0\n" in text


def test_risk_header_sets_a_precision_floor(rig: Rig) -> None:
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-quantgate-risk": "high"})
    assert raw.headers["x-quantgate-variant"] == "bf16"
    assert "x-quantgate-risk=high" in raw.headers["x-quantgate-route-reason"]


def test_invalid_tool_arguments_escalate_to_higher_precision(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(body=completion(None, _call('{"city": 12}'), "tool_calls"))
    rig.replies["int8"] = lambda body: Reply(body=completion(None, _call('{"city": "Oslo"}'), "tool_calls"))
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "weather in Oslo"}], tools=[WEATHER])
    msg = raw.parse().choices[0].message
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert raw.headers["x-quantgate-variant"] == "int8" and raw.headers["x-quantgate-escalated"] == "1"
    assert rig.metric("quantgate_escalations_total", route="assistant", from_variant="int4", to_variant="int8",
                      reason="validation") == 1
    assert rig.metric("quantgate_tool_calls_total", variant="int4", result="invalid") == 1
    assert rig.metric("quantgate_tool_calls_total", variant="int8", result="valid") == 1
    # both attempts are metered: cost per successful request includes the failed one
    assert rig.metric("quantgate_tokens_total", variant="int4", kind="prompt") == 5


def test_broken_json_escalates_and_last_rung_failure_is_marked(rig: Rig) -> None:
    for name in ("int4", "int8", "bf16"):
        rig.replies[name] = lambda body: Reply(body=completion('{"a": 1'))
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"})
    # max_attempts 2 by default: int4 then int8, whose answer is returned and marked
    assert raw.headers["x-quantgate-variant"] == "int8"
    assert raw.headers["x-quantgate-validation"] == "failed"
    assert "json" in raw.headers["x-quantgate-validation-codes"]
    assert len(rig.upstreams["bf16"].requests) == 0


def test_json_schema_checked(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(body=completion('{"name": 3}'))
    rig.replies["int8"] = lambda body: Reply(body=completion('{"name": "Ada"}'))
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    assert raw.parse().choices[0].message.content == '{"name": "Ada"}'
    assert raw.headers["x-quantgate-variant"] == "int8"


def test_upstream_error_and_timeout_escalate(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(500, {"error": {"message": "boom"}})
    raw = rig.client().chat.completions.with_raw_response.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-quantgate-variant"] == "int8"
    assert rig.metric("quantgate_escalations_total", route="assistant", from_variant="int4", to_variant="int8",
                      reason="error") == 1
    rig.replies["int4"] = lambda body: Reply(body=completion("slow"), delay_s=3.0)  # read timeout is 2 s
    raw = rig.client().chat.completions.with_raw_response.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-quantgate-variant"] == "int8"
    assert rig.metric("quantgate_escalations_total", route="assistant", from_variant="int4", to_variant="int8",
                      reason="timeout") == 1


def test_failure_on_every_rung_is_a_502(rig_factory: Any) -> None:
    rig = rig_factory(routes=[{"name": "a", "model": "assistant", "escalation": {"max_attempts": 1}}])
    rig.replies["int4"] = lambda body: Reply(503, {"error": {"message": "down"}})
    with pytest.raises(openai.APIStatusError) as err:
        rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert "upstream answered 503" in err.value.message


def test_streaming_passthrough(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["Hel", "lo"]))
    stream = rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                                  stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 2
    assert rig.upstreams["int4"].requests[-1]["body"]["stream"] is True


def test_truncated_stream_never_ends_as_a_completion(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["Hel", "lo"], finish_reason=None, done=False))
    stream = rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                                  stream=True)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.append(chunk)
    assert all(c.choices[0].finish_reason is None for c in got if c.choices)
    assert rig.metric("quantgate_requests_total", route="assistant", variant="int4", status="stream_error") == 1


def test_stream_failing_before_first_byte_escalates(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(500, {"error": {"message": "boom"}})
    rig.replies["int8"] = lambda body: Reply(events=sse_events(["ok"]))
    raw = rig.client().chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "x"}], stream=True)
    assert raw.headers["x-quantgate-variant"] == "int8"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "ok"


def test_streamed_through_answers_are_counted_like_buffered_ones(rig_factory: Callable[..., Rig]) -> None:
    # a route that does not check tool arguments streams tool calls straight through; the answer is
    # still put back together afterwards for the dashboards (tool-call and refusal counters)
    rig = rig_factory(routes=[{"name": "a", "model": "assistant", "validate": {"tool_arguments": False}}])

    def chunk(delta: dict[str, object], finish: str | None = None) -> str:
        return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    call = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}},
            {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]
    rig.replies["int4"] = lambda body: Reply(events=[chunk({"role": "assistant"}), chunk({"tool_calls": call[:1]}),
                                                     chunk({"tool_calls": call[1:]}), chunk({}, "tool_calls"), "[DONE]"])
    chunks = list(rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                                       tools=[WEATHER], stream=True))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert rig.upstreams["int4"].requests[-1]["body"]["stream"] is True  # passed through, not buffered
    assert rig.metric("quantgate_tool_calls_total", variant="int4", result="valid") == 1
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["I can't help", " with that."]))
    list(rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                              stream=True))
    assert rig.metric("quantgate_refusals_total", route="a", variant="int4") == 1


def test_streaming_with_validation_buffers_then_streams(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(body=completion(None, _call('{"days": 2}'), "tool_calls"))
    rig.replies["int8"] = lambda body: Reply(body=completion(None, _call('{"city": "Oslo", "days": 2}'), "tool_calls"))
    stream = rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                                  tools=[WEATHER], stream=True)
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo", "days": 2}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the upstream was asked without streaming: the gateway buffered to validate
    assert rig.upstreams["int4"].requests[-1]["body"]["stream"] is False


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b'{"model": "assistant", "messages": "hi"}', "messages"),
    (b'{"model": "assistant", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
    (b'{"model": "assistant", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
    (b'{"model": "assistant", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n"),
    (b'[1, 2]', None),
])
def test_bad_requests_get_openai_style_400(rig: Rig, body: bytes, param: str | None) -> None:
    r = httpx.post(rig.url + "/v1/chat/completions", content=body,
                   headers={"authorization": "Bearer sk-test-acme", "content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_huge_body_is_413_unknown_model_404_bad_key_401(rig: Rig) -> None:
    big = b'{"model": "assistant", "messages": [{"role": "user", "content": "' + b"x" * 3_000_000 + b'"}]}'
    r = httpx.post(rig.url + "/v1/chat/completions", content=big, headers={"authorization": "Bearer sk-test-acme"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    with pytest.raises(openai.NotFoundError):
        rig.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        rig.client(key="wrong").chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    r = httpx.get(rig.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_rate_limit_is_429_with_retry_after(rig_factory: Any) -> None:
    rig = rig_factory(tenants=[{"name": "acme", "keys": ["sk-test-acme"], "rate": {"requests_per_min": 2}}])
    client = rig.client()
    for _ in range(2):
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert rig.metric("quantgate_shed_total", reason="rate_limits") == 0
    assert rig.metric("quantgate_shed_total", reason="rate_requests") == 1


def test_token_caps(rig_factory: Any) -> None:
    rig = rig_factory(routes=[{"name": "a", "model": "assistant",
                               "limits": {"max_prompt_tokens": 30, "max_completion_tokens": 50}}])
    with pytest.raises(openai.BadRequestError) as err:
        rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}],
                                             max_tokens=80)
    assert "max_tokens 80 is over the cap of 50 on route 'a' by 30" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "word " * 200}])
    assert "over the cap of 30 on route 'a'" in err.value.message


def test_trim_oldest_turns(rig_factory: Any) -> None:
    rig = rig_factory(routes=[{"name": "a", "model": "assistant", "limits": {"max_prompt_tokens": 40, "trim_oldest": True}}])
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "old " * 60},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "new question"}]
    rig.client().chat.completions.create(model="assistant", messages=msgs)
    sent = rig.upstreams["int4"].requests[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["be brief", "ok", "new question"]


def test_admin_api(rig: Rig) -> None:
    assert httpx.get(rig.url + "/admin/variants").status_code == 401
    r = httpx.get(rig.url + "/admin/variants", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and [v["name"] for v in r.json()["variants"]] == ["int4", "int8", "bf16"]
    rig.client().chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    def events() -> list[dict[str, Any]]:  # the event log commits in the background
        r = httpx.get(rig.url + "/admin/events?kind=route", headers={"authorization": f"Bearer {ADMIN}"})
        return r.json()["events"]

    assert wait_until(lambda: bool(events()))
    first = events()[0]
    assert first["variant"] == "int4" and "route assistant" in first["reason"]


def test_budget_holds_under_200_concurrent_requests(rig_factory: Any) -> None:
    import asyncio

    rig = rig_factory(tenants=[{"name": "acme", "keys": ["sk-test-acme"], "budget": {"amount": 0.05, "period": "day"}}],
                      routes=[{"name": "a", "model": "assistant", "escalation": {"max_attempts": 1},
                               "limits": {"default_completion_tokens": 50}}])
    # int4 prices: 100 per M prompt tokens, 200 per M completion tokens; worst case per request is
    # 5 * 100e-6 + 50 * 200e-6 = 0.0105, the real cost 5 * 100e-6 + 3 * 200e-6 = 0.0011.
    rig.replies["int4"] = lambda body: Reply(body=completion("ok"), delay_s=0.05)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
            async def one() -> int:
                r = await client.post(rig.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-test-acme"},
                                      json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]})
                return r.status_code
            return await asyncio.gather(*(one() for _ in range(200)))

    codes = asyncio.run(fire())
    ok = codes.count(200)
    assert set(codes) <= {200, 429, 503} and codes.count(429) > 0
    spent = rig.metric("quantgate_cost_total", route="a", variant="int4")
    assert spent == pytest.approx(ok * 0.0011)
    assert spent <= 0.05 + 0.0105  # never more than one reservation over the budget


def test_spans_per_stage_with_an_injected_provider(tmp_path: Any) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from quantgate.config import parse_config
    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving
    from tests.fakes.upstream import FakeUpstream
    from tests.gateway.conftest import base_config

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with FakeUpstream() as a, FakeUpstream(reply=lambda body: Reply(body=completion("x"))) as b, \
            FakeUpstream() as c:
        a_reply = Reply(500, {"error": {"message": "down"}})
        a.reply = lambda body: a_reply
        config = parse_config(base_config({"int4": a.url, "int8": b.url, "bf16": c.url}, tmp_path))
        app = create_app(config, build_engines(config), tracer_provider=provider)
        with serving(app) as url:
            r = httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer sk-test-acme"},
                           json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"quantgate.request", "quantgate.prepare", "quantgate.attempt", "quantgate.validate"} <= set(spans)
    stages = ("quantgate.auth", "quantgate.route", "quantgate.token_budget", "quantgate.limits")
    assert all(spans[s].parent.span_id == spans["quantgate.prepare"].context.span_id for s in stages)
    admissions = [s for s in exporter.get_finished_spans() if s.name == "quantgate.admission"]
    assert len(admissions) == 2 and {s.parent.span_id for s in admissions} == {
        s.context.span_id for s in exporter.get_finished_spans() if s.name == "quantgate.attempt"}
    attempts = [s for s in exporter.get_finished_spans() if s.name == "quantgate.attempt"]
    assert [(s.attributes["quantgate.variant"], s.attributes["quantgate.outcome"]) for s in attempts] == [
        ("int4", "error"), ("int8", "answered")]
    root = spans["quantgate.request"]
    assert all(s.context.trace_id == root.context.trace_id for s in exporter.get_finished_spans())


def test_queue_full_is_429_and_deadline_is_503(rig_factory: Any) -> None:
    import asyncio

    rig = rig_factory(variant={"max_concurrency": 1}, admission={"queue_size": 1, "deadline_s": 5},
                      routes=[{"name": "a", "model": "assistant", "variants": ["int4"],
                               "escalation": {"max_attempts": 1}}])
    rig.replies["int4"] = lambda body: Reply(body=completion("slow"), delay_s=1.0)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            async def one(delay: float, deadline_ms: str | None) -> httpx.Response:
                await asyncio.sleep(delay)
                headers = {"authorization": "Bearer sk-test-acme"}
                if deadline_ms:
                    headers["x-quantgate-deadline-ms"] = deadline_ms
                return await client.post(rig.url + "/v1/chat/completions", headers=headers,
                                         json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]})
            return list(await asyncio.gather(one(0, None), one(0.1, "300"), one(0.2, None), one(0.2, "abc")))

    first, queued, shed, bad = asyncio.run(fire())
    assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
    assert shed.json()["error"]["code"] == "overloaded"
    assert queued.status_code == 503 and queued.json()["error"]["code"] == "queue_timeout"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-quantgate-deadline-ms"
    assert first.status_code == 200


def test_two_replicas_share_rate_limits_through_redis(tmp_path: Any) -> None:
    import uuid

    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    from quantgate.config import parse_config
    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving
    from tests.fakes.upstream import FakeUpstream
    from tests.gateway.conftest import base_config

    with FakeUpstream() as up:
        raw = base_config({"int4": up.url, "int8": up.url, "bf16": up.url}, tmp_path,
                          tenants=[{"name": "acme", "keys": ["sk-test-acme"], "rate": {"requests_per_min": 3}}],
                          state={"backend": "redis", "prefix": f"qgtest-{uuid.uuid4().hex[:8]}"})
        config = parse_config(raw)
        replica_a, replica_b = (create_app(config, build_engines(config)) for _ in range(2))
        with serving(replica_a) as a, serving(replica_b) as b:
            codes = [httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer sk-test-acme"},
                                json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]}).status_code
                     for url in (a, b, a, b)]
    assert codes == [200, 200, 200, 429]
