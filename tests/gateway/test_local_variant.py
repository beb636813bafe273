"""A local model behind the gateway: concurrent requests share batches and answer as they would alone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantgate.config import parse_config
from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.gateway.app import create_app
from quantgate.models import load_model
from quantgate.gateway.server import build_engines
from quantgate.gateway.server import serving as running
from tests.gateway.conftest import stream_deltas

REFERENCE = Path(__file__).parents[2] / "quantgate" / "reference" / "weights"


def test_local_variant_batches_concurrent_requests(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": "fp32", "engine": "local", "path": str(tiny_model_dir), "max_batch": 8,
                      "batch_wait_ms": 20, "max_concurrency": 8}],
        "ladder": ["fp32"],
        "routes": [{"name": "r", "model": "tiny"}],
        "events": {"path": None},
    })
    engines = build_engines(config)
    app = create_app(config, engines)
    prompts = [f"say {i}" for i in range(8)]

    async def ask(url: str, concurrent: bool) -> list[str]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def one(p: str) -> str:
                r = await client.post("/v1/chat/completions", json={
                    "model": "tiny", "messages": [{"role": "user", "content": p}], "max_tokens": 6})
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["message"]["content"]
            if concurrent:
                return list(await asyncio.gather(*(one(p) for p in prompts)))
            return [await one(p) for p in prompts]

    with running(app) as url:
        alone = asyncio.run(ask(url, concurrent=False))
        together = asyncio.run(ask(url, concurrent=True))
        stream = httpx.post(url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": prompts[0]}], "max_tokens": 6, "stream": True})
    assert together == alone
    sizes = engines["fp32"].batch_sizes  # type: ignore[attr-defined]
    assert max(sizes) > 1, sizes
    body = stream.text
    assert body.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in body.replace(" ", "")


def test_shadow_on_two_local_variants_measures_token_divergence() -> None:
    # the reference model, not the tiny random one: its answers have text to score
    import httpx

    from quantgate.config import parse_config
    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving

    config = parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": n, "engine": "local", "path": str(REFERENCE), "max_concurrency": 8} for n in ("a", "b")],
        "ladder": ["a", "b"], "routes": [{"name": "r", "model": "r"}],
        "rollouts": [{"route": "r", "baseline": "b", "candidate": "a", "steps": [0.5, 1.0], "start": True,
                      "shadow": {"share": 1.0}, "guards": [{"metric": "errors", "floor": 0.05}]}],
        "rollout_state": None, "events": {"path": None}})
    app = create_app(config, build_engines(config))
    with serving(app) as url:
        for i in range(12):
            r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "model": "r", "max_tokens": 12, "messages": [{"role": "user", "content": f"What is {i} plus 2?"}]})
            assert r.status_code == 200
        deadline = time.monotonic() + 20
        registry = app.state.metrics.registry
        while time.monotonic() < deadline and not registry.get_sample_value("quantgate_shadow_token_kl_count", {"route": "r"}):
            time.sleep(0.1)
        count = registry.get_sample_value("quantgate_shadow_token_kl_count", {"route": "r"})
        kl_sum = registry.get_sample_value("quantgate_shadow_token_kl_sum", {"route": "r"})
        top1_sum = registry.get_sample_value("quantgate_shadow_token_top1_sum", {"route": "r"})
    assert count and count >= 1
    assert kl_sum == pytest.approx(0.0, abs=1e-4)  # the same weights on both sides: no divergence
    assert top1_sum == pytest.approx(count)


def test_short_request_overtakes_a_long_stream_in_the_running_batch(tiny_model_dir: Path) -> None:
    # continuous batching: a request that arrives while a long stream decodes joins at the next step
    # and returns long before the stream ends, instead of waiting for the whole batch. (The tiny
    # random model's text is mostly partial UTF-8, so its stream arrives in one piece at the end;
    # the request timing is what shows the overlap.)
    config = parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": "fp32", "engine": "local", "path": str(tiny_model_dir), "max_batch": 4,
                      "max_concurrency": 4}],
        "ladder": ["fp32"], "routes": [{"name": "r", "model": "tiny"}], "events": {"path": None}})
    engines = build_engines(config)
    app = create_app(config, engines)

    async def scenario(url: str) -> tuple[float, float, str]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            stream_done = short_done = 0.0
            text = ""

            async def long_stream() -> None:
                nonlocal stream_done
                async with client.stream("POST", "/v1/chat/completions", json={
                        "model": "tiny", "stream": True, "max_tokens": 400,
                        "messages": [{"role": "user", "content": "tell me everything"}]}) as r:
                    await r.aread()
                stream_done = time.perf_counter()

            async def short() -> None:
                nonlocal short_done, text
                await asyncio.sleep(0.15)  # the stream is decoding by now (400 tokens take ~1 s here)
                r = await client.post("/v1/chat/completions", json={
                    "model": "tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                text = r.json()["choices"][0]["message"]["content"]
                short_done = time.perf_counter()

            await asyncio.gather(long_stream(), short())
            return stream_done, short_done, text

    with running(app) as url:
        stream_done, short_done, text = asyncio.run(scenario(url))
    assert short_done < stream_done
    assert max(engines["fp32"].batch_sizes) >= 2  # type: ignore[attr-defined]
    local = LocalEngine(load_model(tiny_model_dir))
    alone = local.generate([GenerationRequest(local.render([{"role": "user", "content": "hi"}]),
                                              SamplingParams(max_tokens=3))])[0]
    assert text == alone.text  # joining a running batch did not change the answer


def test_a_streamed_local_tool_call_arrives_as_tool_call_deltas() -> None:
    # the reference model calls tools in Hermes markup; a streamed-through route must still send
    # OpenAI tool_calls deltas, never "<tool_call>" as content
    import openai

    from quantgate.reference.tools import get_tool

    config = parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": "fp32", "engine": "local", "path": str(REFERENCE)}], "ladder": ["fp32"],
        "routes": [{"name": "r", "model": "r", "validate": {"tool_arguments": False}}], "events": {"path": None}})
    app = create_app(config, build_engines(config))
    with running(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        chunks = list(client.chat.completions.create(
            model="r", stream=True, max_tokens=48, tools=[get_tool("get_weather")],
            messages=[{"role": "user", "content": "What's the weather in Oslo?"}]))
        plain = list(client.chat.completions.create(
            model="r", stream=True, max_tokens=24, tools=[get_tool("get_weather")],
            messages=[{"role": "user", "content": "Hi!"}]))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert "<tool_call>" not in content
    assert [tc.function.name for tc in calls] == ["get_weather"] and calls[0].index == 0
    assert json.loads(calls[0].function.arguments)["city"] == "Oslo"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # an answer that is not a tool call streams as text
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices).strip()


def test_a_request_that_goes_away_stops_decoding(tiny_model_dir: Path) -> None:
    # a cancelled call (a client that hung up, a deadline) must free its batch slot at once, not
    # keep decoding to max_tokens for nobody
    from quantgate.gateway.batcher import LocalBatchingEngine
    from quantgate.gateway.protocol import ChatRequest

    engine = LocalBatchingEngine("tiny", LocalEngine(load_model(tiny_model_dir)), max_batch=4)
    request = ChatRequest.model_validate({"model": "tiny", "messages": [{"role": "user", "content": "tell me everything"}]})

    async def scenario() -> int:
        try:
            task = asyncio.create_task(engine.complete(request, 400))  # ~1 s of decoding when left alone
            while engine.running_rows == 0:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            task.cancel()
            deadline = time.monotonic() + 5
            while engine.running_rows and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            return engine.running_rows
        finally:
            await engine.aclose()

    assert asyncio.run(scenario()) == 0
    steps = sum(engine.batch_sizes.values())
    assert steps < 200, steps  # stopped long before the 400 tokens it was asked for


def _local_app(variants: dict[str, Path], **route: Any) -> Any:
    """A gateway over local variants (ladder in the given order), one route ``tiny`` with ``route``'s settings."""
    config = parse_config({
        "server": {"require_auth": False}, "events": {"path": None}, "ladder": list(variants),
        "variants": [{"name": n, "engine": "local", "path": str(p)} for n, p in variants.items()],
        "routes": [{"name": "r", "model": "tiny", **route}]})
    return create_app(config, build_engines(config))


def test_a_chat_template_that_refuses_the_messages_is_a_400(system_refusing_model_dir: Path) -> None:
    with running(_local_app({"fp32": system_refusing_model_dir})) as url:
        refused = [httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny", "max_tokens": 4, "stream": stream,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
            for stream in (False, True)]
        fine = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    for r in refused:
        assert r.status_code == 400, r.text
        assert r.json()["error"] == {"message": "the model's chat template refused these messages: System role not supported",
                                     "type": "invalid_request_error", "param": "messages", "code": "chat_template_error"}
    assert fine.status_code == 200


def test_a_later_rung_whose_template_refuses_is_that_variants_failure(tiny_model_dir: Path,
                                                                      system_refusing_model_dir: Path) -> None:
    # the first rung accepts the system turn (and its answer fails the route's check); the rung it
    # escalates to refuses it: a failure of that variant, named, not a crash
    app = _local_app({"a": tiny_model_dir, "b": system_refusing_model_dir},
                     validate={"assert": [{"type": "contains", "value": "zzzz"}]})
    with running(app) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny", "max_tokens": 4,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["message"] == ("variant 'b': the model's chat template refused these messages: "
                                            "System role not supported")


def test_a_local_thinking_models_reasoning_is_not_its_answer(reasoning_model_dir: Path) -> None:
    # the template opens <think>; the random model never closes it, so all it writes is reasoning
    ask = {"model": "tiny", "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}
    with running(_local_app({"fp32": reasoning_model_dir})) as url:
        whole = httpx.post(url + "/v1/chat/completions", timeout=60, json=ask)
        deltas = stream_deltas(url, ask)
    message = whole.json()["choices"][0]["message"]
    assert message["reasoning_content"] and message["content"] == ""
    assert "".join(d.get("reasoning_content", "") for d in deltas).strip() == message["reasoning_content"]
    assert not "".join(d.get("content", "") or "" for d in deltas)
