"""The serving half of ``quantgate demo``: the reference variants behind the gateway, under a short load.

The variants the demo quantized sit on a ladder (the most aggressive scheme lowest, fp32 highest)
behind an in-process gateway whose one route starts every request on the lowest rung and escalates
on a failed check. Golden-set prompts are sent concurrently: tool-call cases with their tools (the
answer's arguments are validated against the request's schemas) and extraction cases with
``response_format: json_object``. The table shows, from the gateway's own metrics, where requests
were answered, how many escalated and why, latency, and cost per successful request.

Prices in the demo config are illustrative (proportional to weight bytes), not measured; the
point is the accounting: a cheap rung that fails often costs more per success than it saves.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from quantgate.loadtest import percentile

__all__ = ["run_gateway_demo"]


def _bodies(golden_path: Path, n: int) -> list[dict[str, Any]]:
    """Tool-call and extraction cases, alternating, as chat request bodies."""
    tools, extract = [], []
    for line in golden_path.read_text().splitlines():
        case = json.loads(line)
        kind = next((t for t in case.get("tags", []) if t.startswith("kind:")), "")
        body: dict[str, Any] = {"model": "assistant", "messages": case["messages"], "max_tokens": 120}
        if kind == "kind:tool_call":
            tools.append({**body, "tools": case["tools"], "tool_choice": "required", "max_tokens": 200})
        elif kind == "kind:extract":
            extract.append({**body, "response_format": {"type": "json_object"}})
    mixed = [b for pair in zip(tools, extract) for b in pair]
    return mixed[:n]


def _total(registry: Any, family: str, **labels: str) -> float:
    """Sum of a counter family's ``_total`` samples whose labels include ``labels``."""
    return sum(s.value for fam in registry.collect() if fam.name == family for s in fam.samples
               if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()))


def _config(rungs: list[tuple[str, Path, float]]) -> Any:
    from quantgate.config import parse_config

    return parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": name, "engine": "local", "path": str(path), "max_batch": 8, "batch_wait_ms": 5,
                      "max_concurrency": 8, "price": {"prompt_per_mtok": price, "completion_per_mtok": 2 * price}}
                     for name, path, price in rungs],
        "ladder": [name for name, _, _ in rungs],
        "routes": [{"name": "assistant", "model": "assistant",
                    "escalation": {"max_attempts": len(rungs)}, "limits": {"max_completion_tokens": 256}}],
        "admission": {"deadline_s": 600},
        "events": {"path": None},
    })


def run_gateway_demo(rungs: list[tuple[str, Path, float]], golden_path: Path, console: Console,
                     requests: int = 24, concurrency: int = 4) -> dict[str, Any]:
    """Serve ``rungs`` (name, model dir, illustrative price per M prompt tokens), lowest first; drive load."""
    import httpx

    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving

    config = _config(rungs)
    app = create_app(config, build_engines(config))
    bodies = _bodies(golden_path, requests)
    latencies: list[float] = []
    statuses: list[int] = []

    async def drive(url: str) -> None:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            async def one(body: dict[str, Any]) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    r = await client.post("/v1/chat/completions", json=body)
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(r.status_code)
            await asyncio.gather(*(one(b) for b in bodies))

    console.print(f"\n[bold]gateway[/bold]: ladder {' < '.join(config.ladder)}; {len(bodies)} golden prompts "
                  f"(tool calls required and validated against their schemas, extraction as json_object), concurrency {concurrency}")
    with serving(app) as url:
        asyncio.run(drive(url))
    m = app.state.metrics.registry

    def value(name: str, **labels: str) -> float:
        return m.get_sample_value(name, labels) or 0.0

    table = Table(title="served through the gateway")
    for col in ("variant", "attempts", "answered", "valid answers", "validation failures", "escalated up",
                "tokens", "cost"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    total_cost = successes = 0.0
    per_variant: dict[str, dict[str, float]] = {}
    for name, _, _ in rungs:
        attempts = sum(value("quantgate_attempts_total", variant=name, outcome=o) for o in ("ok", "invalid", "error", "timeout"))
        answered = value("quantgate_requests_total", route="assistant", variant=name, status="200")
        ok = value("quantgate_successes_total", route="assistant", variant=name)
        failures = _total(m, "quantgate_validation_failures", variant=name)
        up = _total(m, "quantgate_escalations", from_variant=name)
        tokens = value("quantgate_tokens_total", variant=name, kind="prompt") + value("quantgate_tokens_total", variant=name, kind="completion")
        cost = value("quantgate_cost_total", route="assistant", variant=name)
        total_cost += cost
        successes += ok
        per_variant[name] = {"attempts": attempts, "answered": answered, "valid": ok, "validation_failures": failures,
                             "escalated_up": up, "tokens": tokens, "cost": cost}
        table.add_row(name, f"{attempts:.0f}", f"{answered:.0f}", f"{ok:.0f}", f"{failures:.0f}", f"{up:.0f}",
                      f"{tokens:.0f}", f"{cost:.6f}")
    console.print(table)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    per_success = total_cost / successes if successes else float("nan")
    console.print(f"HTTP statuses {sorted(set(statuses))}; latency p50 {p50:.2f}s p99 {p99:.2f}s; "
                  f"cost per successful request {per_success:.7f} (every attempt counted, escalations included)")
    return {"statuses": statuses, "p50_s": p50, "p99_s": p99, "cost_per_success": per_success,
            "successes": successes, "requests": len(bodies), "variants": per_variant}
