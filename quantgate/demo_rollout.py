"""The rollout half of ``quantgate demo``: canaries of real quantized variants that decide by themselves.

For each candidate, an in-process gateway serves the fp32 reference (baseline) and the candidate
behind one route with a rollout (steps 50% -> 100%); golden-set tool-call and extraction prompts
are sent until the rollout completes or rolls back (or the request cap). Nothing is injected: the
candidate's answers are validated like any request's (tool arguments against their schemas, JSON
mode), and the judge sees the canary's own first attempt. Every decision the controller makes is
printed as it happens, with the evidence it was made on.

Guards for the demo: validation failures (margin 2.0, floor 20%: at the reference model's failure
rates on these prompts, 5-10%, showing a ratio within 2x takes more traffic than a demo should send,
so a canary shown to fail less than one request in five may pass) and engine errors. Rolling back
needs no floor: a variant failing several times as often as fp32 is caught in tens of requests. A
real rollout would guard more (docs/rollouts.md).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from quantgate.demo_gateway import _bodies

__all__ = ["run_rollout_demo"]


def _config(baseline: tuple[str, Path], candidate: tuple[str, Path], state: Path | None) -> Any:
    from quantgate.config import parse_config

    (bname, bpath), (cname, cpath) = baseline, candidate
    return parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": n, "engine": "local", "path": str(p), "max_batch": 8, "batch_wait_ms": 5,
                      "max_concurrency": 8} for n, p in ((cname, cpath), (bname, bpath))],
        "ladder": [cname, bname],
        "routes": [{"name": "assistant", "model": "assistant", "escalation": {"max_attempts": 2},
                    "limits": {"max_completion_tokens": 256}}],
        "rollouts": [{"route": "assistant", "baseline": bname, "candidate": cname, "steps": [0.5, 1.0],
                      "min_requests": 20, "min_seconds": 0, "start": True,
                      "guards": [{"metric": "validation_failures", "margin": 2.0, "floor": 0.2},
                                 {"metric": "errors", "margin": 2.0, "floor": 0.05}]}],
        "rollout_state": str(state) if state else None,
        "drift": {"enabled": False},
        "admission": {"deadline_s": 600},
        "events": {"path": None},
    })


def _describe(decision: dict[str, Any], sent: int) -> str:
    ev = decision.get("evidence", {}).get("validation_failures", {})
    counts = ""
    if ev:
        (bn, bb), (cn, cb) = ev["baseline"], ev["canary"]
        ratio = ev.get("ratio")
        counts = escape(f" [validation failures: canary {cb}/{cn}, baseline {bb}/{bn}"
                        + (f", ratio {ratio:.2f}" if ratio is not None else "") + "]")
    move = ("the canary becomes the route's baseline" if decision["action"] == "complete"
            else f"{decision['from_weight']:.0%} -> {decision['to_weight']:.0%}")
    return f"  after {sent:>4} requests: [bold]{decision['action']}[/bold] {move}: {escape(decision['reason'])}{counts}"


def run_rollout_demo(baseline: tuple[str, Path], candidate: tuple[str, Path], golden_path: Path, console: Console,
                     max_requests: int = 800, concurrency: int = 8, seed: int = 0,
                     max_tokens: int | None = None) -> dict[str, Any]:
    """Roll ``candidate`` out against ``baseline`` (name, model dir) until it decides; returns the outcome."""
    import httpx

    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving

    config = _config(baseline, candidate, None)
    app = create_app(config, build_engines(config))
    controller = app.state.rollouts["assistant"]
    pool = _bodies(golden_path, 10_000)
    if max_tokens is not None:
        pool = [{**b, "max_tokens": max_tokens} for b in pool]
    rng = random.Random(seed)
    console.print(f"\n[bold]rollout[/bold] of {candidate[0]} (canary) against {baseline[0]}: steps 50% -> 100%; "
                  "roll back when the canary's validation-failure rate is shown above 2x the baseline's, promote when "
                  "shown within 2x or below 20%; errors likewise (floor 5%)")
    shown = 0
    sent = 0

    def report() -> None:
        nonlocal shown
        decisions = list(reversed(controller.store.decisions("assistant", 100)))
        for d in decisions[shown:]:
            console.print(_describe(d, sent))
        shown = len(decisions)

    async def drive(url: str) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            while sent < max_requests and controller.state == "running":
                batch = [rng.choice(pool) for _ in range(concurrency)]
                await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in batch))
                sent += len(batch)
                report()

    report()
    with serving(app) as url:  # the app's rollout store closes with it: read everything inside
        asyncio.run(drive(url))
        report()
        state = controller.describe()
    if controller.state == "running":
        console.print(f"  no decision within {max_requests} requests: {state['verdict']['reason'] if state['verdict'] else ''}")
    elif controller.state == "completed":
        console.print(f"  [green]{candidate[0]} completed its rollout and is now the route's baseline[/green]")
    else:
        console.print(f"  [red]{candidate[0]} was rolled back; the route is back on {baseline[0]}[/red]")
    return {"state": controller.state, "requests": sent, "decisions": state["decisions"], "evidence": state["evidence"]}
