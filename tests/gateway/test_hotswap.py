"""Hot swap through the admin API while traffic flows: replace, add, remove; nothing fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from tests.fakes.upstream import FakeUpstream, Reply, completion
from tests.gateway.conftest import ADMIN, KEY, Rig
from tests.waiting import wait_until

ADMIN_AUTH = {"authorization": f"Bearer {ADMIN}"}


@contextmanager
def traffic(rig: Rig, threads: int = 4) -> Iterator[list[int]]:
    """Requests from ``threads`` threads until the block ends; yields the list of status codes."""
    statuses: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=rig.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10) as client:
            while not stop.is_set():
                r = client.post("/v1/chat/completions", json={"model": "assistant",
                                                              "messages": [{"role": "user", "content": "hi"}]})
                statuses.append(r.status_code)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield statuses
    finally:
        stop.set()
        for w in workers:
            w.join()


def _put(rig: Rig, name: str, spec: dict[str, object]) -> httpx.Response:
    return httpx.put(rig.url + f"/admin/variants/{name}", headers=ADMIN_AUTH, json=spec, timeout=30)


def test_replacing_a_variant_under_load_fails_no_request(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(admission={"deadline_s": 1.0})
    with FakeUpstream(reply=lambda body: Reply(body=completion("from the new server"))) as new:
        with traffic(rig) as statuses:
            time.sleep(0.3)
            r = _put(rig, "int4", {"engine": "upstream", "url": new.url, "model": "fake"})
            assert r.status_code == 200 and r.json()["action"] == "replaced", r.text
            assert wait_until(lambda: len(new.requests) > 0)
            served_new = len(new.requests)
            old_count = len(rig.upstreams["int4"].requests)
            time.sleep(2.5)  # past the grace period: the old engine is closed
        assert statuses and set(statuses) == {200}, set(statuses)
        assert served_new > 0 and len(new.requests) > served_new
        assert len(rig.upstreams["int4"].requests) <= old_count + 4  # at most the requests in flight at the swap


def test_adding_and_removing_a_rung_under_load(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(admission={"deadline_s": 1.0})
    with FakeUpstream(reply=lambda body: Reply(body=completion("from int2"))) as int2:
        with traffic(rig) as statuses:
            r = _put(rig, "int2", {"engine": "upstream", "url": int2.url, "model": "fake", "position": 0})
            assert r.status_code == 200 and r.json()["ladder"] == ["int2", "int4", "int8", "bf16"]
            assert wait_until(lambda: len(int2.requests) > 0)  # the lowest rung is the route's default
            gone = httpx.delete(rig.url + "/admin/variants/int2", headers=ADMIN_AUTH)
            assert gone.status_code == 200 and gone.json()["ladder"] == ["int4", "int8", "bf16"]
            after = len(int2.requests)
            time.sleep(0.4)
        assert set(statuses) == {200}
        assert len(int2.requests) <= after + 4
    listing = httpx.get(rig.url + "/admin/variants", headers=ADMIN_AUTH).json()
    assert listing["ladder"] == ["int4", "int8", "bf16"]


def test_hot_swap_errors_name_the_problem(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory()
    bad = _put(rig, "int8", {"engine": "upstream", "url": "ftp://x", "model": "m", "colour": "red"})
    assert bad.status_code == 400
    msg = bad.json()["error"]["message"]
    assert msg.startswith("variants/int8:") and "url" in msg and "colour: unknown key" in msg
    pool = _put(rig, "int1", {"engine": "local", "path": str(tmp_path / "nope"), "threads": torch.get_num_threads() + 1})
    assert pool.status_code == 400 and "shared by every local variant" in pool.json()["error"]["message"]
    missing = _put(rig, "int1", {"engine": "local", "path": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "cannot load" in missing.json()["error"]["message"]
    used = httpx.delete(rig.url + "/admin/variants/bf16", headers=ADMIN_AUTH)
    assert used.status_code == 409 and "route 'assistant'" in used.json()["error"]["message"]
    assert httpx.delete(rig.url + "/admin/variants/fp8", headers=ADMIN_AUTH).status_code == 404
    assert httpx.delete(rig.url + "/admin/variants/int4").status_code == 401
    # a failed replacement leaves the old engine serving
    ok = httpx.post(rig.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                    json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_a_local_model_loads_in_the_background_and_serves(rig_factory: Callable[..., Rig], tiny_model_dir: Path) -> None:
    rig = rig_factory()
    assert httpx.get(rig.url + "/readyz").json() == {"status": "ready", "variants": ["int4", "int8", "bf16"],
                                                     "loading": []}
    # a slow disk: the load waits until the test has seen it in /readyz
    manager, seen = rig.app.state.variants, threading.Event()
    build = manager.build
    manager.build = lambda variant: (seen.wait(10), build(variant))[1]
    put: list[httpx.Response] = []
    with traffic(rig, threads=2) as statuses:
        loader = threading.Thread(target=lambda: put.append(
            _put(rig, "local", {"engine": "local", "path": str(tiny_model_dir), "position": 0})))
        loader.start()
        assert wait_until(lambda: httpx.get(rig.url + "/readyz").json()["loading"] == ["local"])
        seen.set()
        loader.join()
        assert put[0].status_code == 200, put[0].text
        served_during_load = len(statuses)
        time.sleep(0.5)
    assert set(statuses) == {200} and served_during_load > 0
    assert httpx.get(rig.url + "/readyz").json() == {"status": "ready", "variants": ["local", "int4", "int8", "bf16"],
                                                     "loading": []}
    answer = httpx.post(rig.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=30,
                        json={"model": "assistant", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and answer.headers["x-quantgate-variant"] == "local"
