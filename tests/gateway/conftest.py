"""Gateway fixtures: three fake upstream servers (int4 < int8 < bf16) behind a real gateway on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from quantgate.config import GatewayConfig, parse_config
from quantgate.gateway.app import create_app
from quantgate.gateway.server import build_engines
from quantgate.gateway.server import serving as running
from tests.fakes.upstream import FakeUpstream, Reply, completion

KEY = "sk-test-acme"
ADMIN = "sk-admin"


@dataclass
class Rig:
    """The gateway URL, its app, and one programmable fake upstream per variant."""

    url: str
    app: Any
    upstreams: dict[str, FakeUpstream]
    replies: dict[str, Callable[[dict[str, Any]], Reply]] = field(default_factory=dict)

    def client(self, key: str = KEY, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def stream_deltas(url: str, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    """POST ``body`` with ``stream: true`` to ``url``'s chat completions; the ``delta`` of every chunk with a choice."""
    import json

    import httpx

    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.stream("POST", url + "/v1/chat/completions", headers=headers, timeout=60,
                      json={**body, "stream": True}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


def base_config(urls: dict[str, str], tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "variants": [{"name": n, "engine": "upstream", "url": u, "model": "fake", "read_timeout_s": 2.0,
                      "max_concurrency": 4, "price": {"prompt_per_mtok": p, "completion_per_mtok": 2 * p}}
                     for (n, u), p in zip(urls.items(), (100.0, 200.0, 400.0))],
        "ladder": list(urls),
        "tenants": [{"name": "acme", "keys": [KEY], "priority": 1}],
        "routes": [{"name": "assistant", "model": "assistant",
                    "rules": [{"header": "x-quantgate-risk", "equals": "high", "floor": "bf16"}]}],
        "events": {"path": str(tmp_path / "events.sqlite")},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Build a rig; keyword arguments override top-level config sections, ``variant`` every variant's keys."""
    stack: list[Any] = []

    def make(variant: dict[str, Any] | None = None, **overrides: Any) -> Rig:
        replies: dict[str, Callable[[dict[str, Any]], Reply]] = {}
        upstreams: dict[str, FakeUpstream] = {}
        for name in ("int4", "int8", "bf16"):
            def reply(body: dict[str, Any], name: str = name) -> Reply:
                fn = replies.get(name)
                return fn(body) if fn else Reply(body=completion(f"answer from {name}"))
            up = FakeUpstream(reply=reply)
            up.__enter__()
            stack.append(up)
            upstreams[name] = up
        raw = base_config({n: u.url for n, u in upstreams.items()}, tmp_path, **overrides)
        raw["variants"] = [{**v, **(variant or {})} for v in raw["variants"]]
        config: GatewayConfig = parse_config(raw)
        app = create_app(config, build_engines(config), admin_key=ADMIN)
        ctx = running(app)
        url = ctx.__enter__()
        stack.append(ctx)
        return Rig(url, app, upstreams, replies)

    yield make
    for item in reversed(stack):
        item.__exit__(None, None, None)


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()
