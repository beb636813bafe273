"""Drive an OpenAI-compatible target at a sweep of concurrency levels and report its capacity curve.

Each level keeps ``concurrency`` requests in flight (closed loop: a worker sends its next request
when the last one answers) until ``requests`` have completed, with prompts cycled from a golden
set or a JSONL file of request bodies. Per level: requests/s, completion tokens/s, latency and
time-to-first-token percentiles (TTFT needs ``stream``), errors and sheds (429/503 counted apart,
since shedding is the gateway working as designed). The client is aiohttp, whose per-request cost
is a fraction of httpx's, because on a small machine the load generator competes for the same
cores as the thing it measures.

Trade-off: a closed loop measures capacity at a concurrency, not latency at an offered rate; an
open-loop (fixed arrival rate) mode is the next thing to add when someone needs it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantgate.errors import QuantgateError

__all__ = ["LevelResult", "format_table", "load_prompts", "percentile", "run_sweep"]


class LoadtestError(QuantgateError):
    """Bad prompts file or sweep settings."""


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    ok: int
    errors: int
    shed: int
    seconds: float
    requests_per_s: float
    tokens_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    error_sample: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def load_prompts(path: str | Path, max_tokens: int = 64) -> list[dict[str, Any]]:
    """Request bodies (without ``model``) from a golden set (.jsonl/.yaml cases) or a JSONL of bodies."""
    p = Path(path)
    if not p.is_file():
        raise LoadtestError(f"{p}: prompts file not found")
    bodies: list[dict[str, Any]] = []
    text = p.read_text()
    if p.suffix == ".jsonl" and text.lstrip()[:1] == "{":
        lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        try:
            rows = [(i, json.loads(line)) for i, line in lines]
        except json.JSONDecodeError as e:
            raise LoadtestError(f"{p}: not JSON lines ({e})") from None
        if rows and all("messages" in r and "assert" not in r for _, r in rows):
            for i, r in rows:
                if not isinstance(r["messages"], list):
                    raise LoadtestError(f"{p}:{i}: messages must be a list")
                bodies.append({k: v for k, v in r.items() if k != "model"} | {"max_tokens": r.get("max_tokens", max_tokens)})
            return bodies
    from quantgate.checks import default_registry
    from quantgate.evaluate.golden import load_golden

    golden = load_golden(p, default_registry())
    for case in golden.cases:
        messages = [dict(m) for m in case.messages] if case.messages else [{"role": "user", "content": case.prompt or ""}]
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
        if case.tools:
            body["tools"] = [dict(t) for t in case.tools]
        if case.response_format:
            body["response_format"] = case.response_format  # the gateway validates against it: part of the cost
        bodies.append(body)
    if not bodies:
        raise LoadtestError(f"{p}: no prompts")
    return bodies


async def _level(url: str, model: str, bodies: list[dict[str, Any]], concurrency: int, requests: int,
                 api_key: str | None, stream: bool, timeout_s: float) -> LevelResult:
    import aiohttp

    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}  # usage, for tokens/s
    payloads = [json.dumps({**b, "model": model, "stream": stream, **extra}).encode() for b in bodies]
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = ok = errors = shed = 0
    sample: str | None = None
    counter = iter(range(requests))
    endpoint = url.rstrip("/") + ("/chat/completions" if url.rstrip("/").endswith("/v1") else "/v1/chat/completions")

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal tokens, ok, errors, shed, sample
        for i in counter:
            t0 = time.perf_counter()
            try:
                async with session.post(endpoint, data=payloads[i % len(payloads)], headers=headers) as r:
                    if r.status in (429, 503):
                        shed += 1
                        await r.read()
                        continue
                    if r.status != 200:
                        errors += 1
                        sample = sample or f"{r.status}: {(await r.text())[:200]}"
                        continue
                    if stream:
                        first, n, done, failure = None, 0, False, None
                        async for line in r.content:
                            if line.startswith(b"data: {"):
                                first = first or time.perf_counter()
                                chunk = json.loads(line[6:])
                                if "error" in chunk:
                                    err = chunk["error"]
                                    failure = str(err.get("message", err) if isinstance(err, dict) else err)
                                if chunk.get("usage"):
                                    n = chunk["usage"].get("completion_tokens", n)
                            elif line.strip() == b"data: [DONE]":
                                done = True
                        if failure is not None or not done:
                            # a stream cut short (an error event, or no [DONE]) is a failed request
                            errors += 1
                            sample = sample or f"stream cut: {failure or 'ended without [DONE]'}"[:200]
                            continue
                        if first is not None:
                            ttfts.append(first - t0)
                        tokens += n
                    else:
                        data = await r.json()
                        tokens += (data.get("usage") or {}).get("completion_tokens", 0)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                errors += 1
                sample = sample or f"{type(e).__name__}: {e}"
                continue
            ok += 1
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - start

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return LevelResult(concurrency, requests, ok, errors, shed, seconds, ok / seconds, tokens / seconds,
                       ms(latencies, 50), ms(latencies, 95), ms(latencies, 99),
                       ms(ttfts, 50) if ttfts else None, ms(ttfts, 95) if ttfts else None,
                       ms(ttfts, 99) if ttfts else None, sample)


def run_sweep(url: str, model: str, bodies: list[dict[str, Any]], levels: Sequence[int], requests: int,
              api_key: str | None = None, stream: bool = False, timeout_s: float = 120.0,
              warmup: int = 0) -> list[LevelResult]:
    """One ``LevelResult`` per concurrency level, measured in order on a fresh connection pool each."""
    if not bodies:
        raise LoadtestError("no prompts to send")

    async def go() -> list[LevelResult]:
        if warmup:
            await _level(url, model, bodies, min(levels), warmup, api_key, stream, timeout_s)
        return [await _level(url, model, bodies, c, max(requests, c), api_key, stream, timeout_s) for c in levels]

    return asyncio.run(go())


def format_table(results: Sequence[LevelResult]) -> str:
    head = (f"{'conc':>5} {'ok':>6} {'err':>5} {'shed':>5} {'req/s':>8} {'tok/s':>8} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'ttft p50':>9} {'ttft p95':>9} {'ttft p99':>9}")
    lines = [head]
    for r in results:
        ttft = " ".join(f"{v:9.1f}" if v is not None else f"{'-':>9}" for v in (r.ttft_p50_ms, r.ttft_p95_ms, r.ttft_p99_ms))
        lines.append(f"{r.concurrency:>5} {r.ok:>6} {r.errors:>5} {r.shed:>5} {r.requests_per_s:>8.1f} "
                     f"{r.tokens_per_s:>8.1f} {r.latency_p50_ms:>8.1f} {r.latency_p95_ms:>8.1f} "
                     f"{r.latency_p99_ms:>8.1f} {ttft}")
    for r in results:
        if r.error_sample:
            lines.append(f"concurrency {r.concurrency}: first error: {r.error_sample}")
    return "\n".join(lines)


def to_json(results: Sequence[LevelResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
