"""Shadow replays: agreement rules, a bounded queue that drops instead of blocking, the flip guard."""

from __future__ import annotations

import asyncio
import random
import time

from quantgate.config import GuardConfig, RolloutConfig, ShadowConfig
from quantgate.gateway.engines import Completion
from quantgate.gateway.protocol import ChatRequest
from quantgate.rollout.judge import Judge
from quantgate.rollout.shadow import ShadowComparison, ShadowReplayer, agreement


def _c(content: str | None = None, calls: list[dict[str, object]] | None = None) -> Completion:
    return Completion(content, calls, "stop", 5, 3, 0.01, 0.01)


def test_agreement_exact_normalised_and_flips() -> None:
    assert agreement(_c("Paris."), _c("Paris."), False, False) == ShadowComparison(True, True, False, False)
    loose = agreement(_c('{"a": 1, "b": 2}'), _c('{"b":2,"a":1}'), False, False)
    assert not loose.exact and loose.normalized
    assert agreement(_c("Hello  World"), _c("hello world"), False, False).normalized
    call_a = [{"type": "function", "function": {"name": "f", "arguments": '{"x": 1, "y": 2}'}}]
    call_b = [{"type": "function", "function": {"name": "f", "arguments": '{"y":2, "x":1}'}}]
    assert agreement(_c(None, call_a), _c(None, call_b), False, False).normalized
    flip = agreement(_c('{"a": 1'), _c('{"a": 1}'), True, False)
    assert flip.regression_flip and not flip.improvement_flip and not flip.normalized
    assert agreement(_c("x"), _c("y"), False, True).improvement_flip


def _request() -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_full_queue_drops_without_blocking_the_caller() -> None:
    async def main() -> tuple[dict[str, int], float, int]:
        dropped: list[int] = []
        reports: list[ShadowComparison] = []

        async def slow_replay(request: ChatRequest, max_tokens: int) -> Completion:
            await asyncio.sleep(0.2)
            return _c("ok")

        r = ShadowReplayer("r", 1.0, 2, 1, slow_replay, lambda req, c: False, reports.append,
                           lambda: dropped.append(1), rng=random.Random(0))
        t0 = time.perf_counter()
        for _ in range(50):
            r.offer(_request(), 8, _c("ok"), False)
        offered_s = time.perf_counter() - t0
        await r.drain(2.0)
        await asyncio.sleep(0.25)
        await r.aclose()
        return r.counts, offered_s, len(dropped)

    counts, offered_s, dropped = asyncio.run(main())
    assert offered_s < 0.05  # offering is a put_nowait, whatever the replays cost
    assert counts["dropped"] == dropped >= 45 and counts["queued"] + counts["dropped"] == 50
    assert counts["compared"] == counts["queued"]


def test_no_free_baseline_slot_skips_the_replay() -> None:
    async def main() -> dict[str, int]:
        async def busy(request: ChatRequest, max_tokens: int) -> None:
            return None

        r = ShadowReplayer("r", 1.0, 8, 1, busy, lambda req, c: False, lambda cmp: None, lambda: None)
        r.offer(_request(), 8, _c("ok"), False)
        await r.drain(1.0)
        await asyncio.sleep(0.01)
        await r.aclose()
        return r.counts

    assert asyncio.run(main())["skipped"] == 1


def test_shadow_flip_guard_rolls_back_on_frequent_flips_and_passes_rare_ones() -> None:
    spec = RolloutConfig(route="r", baseline="b", candidate="c", shadow=ShadowConfig(share=1.0),
                         guards=[GuardConfig(metric="shadow_flips", floor=0.02)])
    bad, good = Judge(spec), Judge(spec)
    rng = random.Random(0)
    for _ in range(1500):
        bad.observe_shadow(rng.random() < 0.10, True)
        good.observe_shadow(False, True)
    assert bad.verdict().action == "rollback" and "shadow_flips" in bad.verdict().reason
    assert good.verdict().action == "promote"
    assert good.verdict().evidence["shadow_flips"]["normalized_agreement"] == 1.0


def test_token_divergence_is_zero_for_one_model_and_grows_apart() -> None:
    import torch

    from quantgate.rollout.shadow import token_divergence

    p = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]]), -1)
    q = torch.log_softmax(torch.tensor([[0.0, 2.0, -1.0], [0.0, 3.0, 0.5]]), -1)
    assert token_divergence(p, p) == (0.0, 1.0)
    kl, top1 = token_divergence(p, q)
    assert kl > 0.1 and top1 == 0.5
