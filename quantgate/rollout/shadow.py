"""Shadow comparison: replay a share of canary requests on the baseline, off the request path.

After a canary answer has been sent, the request, the answer and its check failures go into a
bounded queue with probability ``share``; a full queue drops the item (counted) rather than slow
anyone down. Workers replay the request on the baseline engine (only when the baseline has a free
slot right now: shadow traffic never queues ahead of users), run the same checks on its answer and
compare the two:

* exact agreement: same text and the same tool calls;
* normalised agreement: equal after canonicalising JSON (key order, spacing), tool-call arguments
  parsed, and text lower-cased with whitespace collapsed;
* flips: the canary's answer fails a check the baseline's passes (a regression flip) or the
  reverse (an improvement flip).

Results go to metrics and to the rollout's judge as the ``shadow_flips`` guard (regression flips
per shadowed request, tested against a tolerated rate). Trade-off: each shadowed request costs a
baseline call, so ``share`` is a budget; where both variants are local engines of one vocabulary, the canary's
answer is also scored under both models (teacher forcing) for the mean per-token KL divergence and
top-1 agreement, two more forward passes per shadowed request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quantgate.gateway.engines import Completion, EngineFailure
from quantgate.gateway.protocol import ChatRequest

__all__ = ["ShadowComparison", "ShadowReplayer", "agreement", "token_divergence"]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ShadowComparison:
    exact: bool
    normalized: bool
    regression_flip: bool   # canary failed a check the baseline passed
    improvement_flip: bool  # baseline failed a check the canary passed
    token_kl: float | None = None    # mean KL(canary || baseline) per token of the canary's answer (both local)
    token_top1: float | None = None  # share of those positions where both models' most likely token agree


def token_divergence(canary_logprobs: Any, baseline_logprobs: Any) -> tuple[float, float]:
    """Mean per-token KL(canary || baseline) and top-1 agreement from two (tokens x vocab) log-prob matrices."""
    import torch

    p, q = canary_logprobs.float(), baseline_logprobs.float()
    kl = (p.exp() * (p - q)).sum(-1).clamp(min=0).mean()
    top1 = (p.argmax(-1) == q.argmax(-1)).float().mean()
    return float(kl), float(top1) if torch.isfinite(top1) else 0.0


def _canonical_text(text: str | None) -> str:
    if text is None:
        return ""
    stripped = text.strip()
    try:
        return json.dumps(json.loads(stripped), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return _SPACE.sub(" ", stripped).lower()


def _canonical_calls(calls: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    out = []
    for call in calls or []:
        fn = call.get("function", {})
        args = fn.get("arguments", "")
        try:
            args = json.dumps(json.loads(args) if isinstance(args, str) else args, sort_keys=True)
        except ValueError:
            pass  # unparseable arguments compare as their text
        out.append((str(fn.get("name")), str(args)))
    return sorted(out)


def agreement(canary: Completion, baseline: Completion, canary_failed: bool, baseline_failed: bool) -> ShadowComparison:
    exact = canary.content == baseline.content and (canary.tool_calls or []) == (baseline.tool_calls or [])
    normalized = exact or (_canonical_text(canary.content) == _canonical_text(baseline.content)
                           and _canonical_calls(canary.tool_calls) == _canonical_calls(baseline.tool_calls))
    return ShadowComparison(exact, normalized, canary_failed and not baseline_failed, baseline_failed and not canary_failed)


@dataclass
class _Item:
    request: ChatRequest
    max_tokens: int
    answer: Completion
    failed: bool


class ShadowReplayer:
    """One route's shadow queue and workers. ``offer`` from the request path, ``start`` in the loop."""

    def __init__(self, route: str, share: float, queue_size: int, workers: int,
                 replay: Callable[[ChatRequest, int], Any], check: Callable[[ChatRequest, Completion], bool],
                 report: Callable[[ShadowComparison], None], on_drop: Callable[[], None],
                 rng: random.Random | None = None,
                 divergence: Callable[[ChatRequest, Completion], Any] | None = None):
        self.route, self.share, self.workers = route, share, workers
        self._replay, self._check, self._report, self._on_drop = replay, check, report, on_drop
        self._divergence = divergence
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self.counts = {"offered": 0, "queued": 0, "dropped": 0, "compared": 0, "skipped": 0}

    def offer(self, request: ChatRequest, max_tokens: int, answer: Completion, failed: bool) -> None:
        """Called after a canary answer was produced; never blocks."""
        self.counts["offered"] += 1
        if self._rng.random() >= self.share:
            return
        if not self._tasks:
            self._start()
        try:
            self._queue.put_nowait(_Item(request, max_tokens, answer, failed))
            self.counts["queued"] += 1
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            self._on_drop()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                base = await self._replay(item.request, item.max_tokens)
            except EngineFailure:
                self.counts["skipped"] += 1  # a baseline failure says nothing about the canary's answer
                continue
            if base is None:  # no free baseline slot: users come first
                self.counts["skipped"] += 1
                continue
            self.counts["compared"] += 1
            cmp = agreement(item.answer, base, item.failed, self._check(item.request, base))
            if self._divergence is not None and item.answer.content:
                divergence = await self._divergence(item.request, item.answer)
                if divergence is not None:
                    cmp = dataclasses.replace(cmp, token_kl=divergence[0], token_top1=divergence[1])
            self._report(cmp)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the queue is empty (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._queue.empty() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []
