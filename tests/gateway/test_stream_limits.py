"""Streams under the same books and clocks as buffered answers: reservations given back when shed,
the request deadline on the first token and on the whole stream, engine-second prices reserved and
charged. A real gateway in front of real fake upstreams."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.fakes.upstream import Reply, completion, sse_events
from tests.gateway.conftest import ADMIN, KEY, Rig
from tests.waiting import wait_until_async

USER = [{"role": "user", "content": "x"}]
AUTH = {"authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"authorization": f"Bearer {ADMIN}"}


def _events(r: httpx.Response) -> list[Any]:
    return [json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
            for line in r.text.splitlines() if line.startswith("data: ")]


async def _until_int4_is_busy(client: httpx.AsyncClient, rig: Rig) -> None:
    """Poll the admin API until int4's only slot is taken (no fixed sleep: a loaded machine is slow)."""

    async def busy() -> bool:
        listing = (await client.get(rig.url + "/admin/variants", headers=ADMIN_AUTH)).json()
        return bool(next(v for v in listing["variants"] if v["name"] == "int4")["in_flight"] == 1)

    assert await wait_until_async(busy), "int4's slot was never taken"


def test_a_shed_stream_gives_back_what_it_reserved(rig_factory: Any) -> None:
    # worst case per request on int4: 5 prompt tokens * 100e-6 + 50 completion tokens * 200e-6 = 0.0105;
    # the budget holds two reservations, not three
    rig: Rig = rig_factory(variant={"max_concurrency": 1}, admission={"queue_size": 0},
                           tenants=[{"name": "acme", "keys": [KEY], "budget": {"amount": 0.025, "period": "day"}}],
                           routes=[{"name": "a", "model": "assistant", "variants": ["int4"],
                                    "escalation": {"max_attempts": 1}, "limits": {"default_completion_tokens": 50}}])
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["a", "b", "c"]), event_delay_s=0.5)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "assistant", "messages": USER, "stream": True}
            holder = asyncio.create_task(client.post(rig.url + "/v1/chat/completions", json=body, headers=AUTH))
            await _until_int4_is_busy(client, rig)  # the holder has the only slot
            shed = [await client.post(rig.url + "/v1/chat/completions", json=body, headers=AUTH) for _ in range(2)]
            return [await holder, *shed]

    held, first, second = asyncio.run(fire())
    assert held.status_code == 200 and _events(held)[-1] == "[DONE]"
    # had the first shed request kept its reservation, the second would be refused for budget instead
    assert [(r.status_code, r.json()["error"]["code"]) for r in (first, second)] == [(429, "overloaded")] * 2
    assert rig.metric("quantgate_requests_total", route="a", variant="int4", status="429") == 2
    assert rig.metric("quantgate_shed_total", reason="overloaded") == 2


def test_no_first_token_within_the_deadline_is_a_504_not_a_late_answer(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["late"]), delay_s=4.0)
    start = time.perf_counter()
    r = httpx.post(rig.url + "/v1/chat/completions", headers={**AUTH, "x-quantgate-deadline-ms": "400"},
                   json={"model": "assistant", "messages": USER, "stream": True}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert time.perf_counter() - start < 3.0  # did not wait for the upstream's late first byte
    assert rig.metric("quantgate_attempts_total", variant="int4", outcome="timeout") == 1
    # past the deadline no rung can answer in time: no escalation, nothing sent to int8
    assert rig.metric("quantgate_requests_total", route="assistant", variant="int4", status="504") == 1
    assert not rig.upstreams["int8"].requests


def test_a_stream_running_past_the_deadline_is_cut_not_finished(rig: Rig) -> None:
    rig.replies["int4"] = lambda body: Reply(events=sse_events(list("abcdefghij")), event_delay_s=0.25)
    r = httpx.post(rig.url + "/v1/chat/completions", headers={**AUTH, "x-quantgate-deadline-ms": "1200"},
                   json={"model": "assistant", "messages": USER, "stream": True}, timeout=10)
    events = _events(r)
    assert r.status_code == 200  # the headers went out with the first token
    assert "[DONE]" not in events and events[-1]["error"]["code"] == "upstream_stream_cut"
    assert "deadline" in events[-1]["error"]["message"]
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1] if e.get("choices"))
    assert rig.metric("quantgate_requests_total", route="assistant", variant="int4", status="stream_error") == 1


def test_engine_second_prices_are_reserved_for_the_deadline_and_charged(rig_factory: Any) -> None:
    rig: Rig = rig_factory(variant={"price": {"per_engine_second": 0.01}},
                           tenants=[{"name": "acme", "keys": [KEY], "budget": {"amount": 0.2, "period": "day"}}],
                           routes=[{"name": "a", "model": "assistant", "escalation": {"max_attempts": 1}}])
    rig.replies["int4"] = lambda body: Reply(body=completion("ok"), delay_s=0.1) if not body.get("stream") \
        else Reply(events=sse_events(["o", "k"]), event_delay_s=0.05)
    url = rig.url + "/v1/chat/completions"
    # the default 30 s deadline could cost 0.30: more than the whole budget
    r = httpx.post(url, headers=AUTH, json={"model": "assistant", "messages": USER})
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    assert "may cost up to 0.3000" in r.json()["error"]["message"]
    # a 5 s deadline bounds it at 0.05
    short = {**AUTH, "x-quantgate-deadline-ms": "5000"}
    assert httpx.post(url, headers=short, json={"model": "assistant", "messages": USER}).status_code == 200
    buffered = rig.metric("quantgate_cost_total", route="a", variant="int4")
    assert 0.001 <= buffered < 0.05  # about 0.1 s of engine time
    r = httpx.post(url, headers=short, json={"model": "assistant", "messages": USER, "stream": True})
    assert _events(r)[-1] == "[DONE]"
    assert rig.metric("quantgate_cost_total", route="a", variant="int4") - buffered >= 0.001  # streams pay too


def test_queue_wait_in_flight_and_first_token_are_measured(rig_factory: Any) -> None:
    rig: Rig = rig_factory(variant={"max_concurrency": 1},
                           routes=[{"name": "a", "model": "assistant", "variants": ["int4"]}])
    rig.replies["int4"] = lambda body: Reply(events=sse_events(["a", "b"]), event_delay_s=0.3)
    body = {"model": "assistant", "messages": USER, "stream": True}

    async def two() -> tuple[httpx.Response, httpx.Response, str]:
        async with httpx.AsyncClient(timeout=10) as client:
            first = asyncio.create_task(client.post(rig.url + "/v1/chat/completions", json=body, headers=AUTH))
            await _until_int4_is_busy(client, rig)  # the first holds the only slot: the second queues behind it
            scrape = (await client.get(rig.url + "/metrics")).text
            second = await client.post(rig.url + "/v1/chat/completions", json=body, headers=AUTH)
            return await first, second, scrape

    first, second, scrape = asyncio.run(two())
    assert first.status_code == second.status_code == 200
    assert 'quantgate_in_flight{variant="int4"} 1.0' in scrape
    assert rig.metric("quantgate_queue_wait_seconds_count", variant="int4") == 2
    assert rig.metric("quantgate_queue_wait_seconds_sum", variant="int4") >= 0.3  # the second waited for the first
    assert rig.metric("quantgate_time_to_first_token_seconds_count", route="a") == 2
    assert rig.metric("quantgate_time_to_first_token_seconds_sum", route="a") >= 0.6  # first chunk after 0.3 s each
    assert rig.metric("quantgate_in_flight", variant="int4") == 0
