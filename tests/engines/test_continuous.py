"""Continuous batching: rows that join a running batch, reuse finished slots or widen it answer as they would alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.engines import kvcache
from quantgate.engines.continuous import Event, RunningBatch
from quantgate.engines.local import LocalEngine
from quantgate.engines.types import Generation, GenerationRequest, SamplingParams
from quantgate.errors import QuantgateError
from quantgate.models import load_model

SHORT, LONG = "hi", "the quick brown fox jumps over the lazy dog " * 3


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalEngine:
    return LocalEngine(load_model(tiny_model_dir), max_batch_size=4)


def _alone(engine: LocalEngine, prompt: str, n: int) -> Generation:
    return engine.generate([GenerationRequest(prompt, SamplingParams(max_tokens=n))])[0]


def _collect(events: list[Event], done: dict[object, Generation], texts: dict[object, str]) -> None:
    for e in events:
        assert e.error is None
        texts[e.tag] = texts.get(e.tag, "") + e.text
        if e.generation is not None:
            done[e.tag] = e.generation


def test_rows_joining_at_different_steps_answer_as_alone(engine: LocalEngine) -> None:
    # a joins first (short prompt), b joins later with a wider prompt (the batch widens to the left),
    # c takes the slot a finished in (placed into a dead slot), d is added below (a new slot)
    plan = {"a": (SHORT, 3), "b": (LONG, 12), "c": ("what is love?", 9), "d": ("xyz 123 abc", 6)}
    batch = RunningBatch(engine, capacity=3)
    done: dict[object, Generation] = {}
    texts: dict[object, str] = {}

    def join(*tags: str) -> None:
        _collect(batch.join([(t, GenerationRequest(plan[t][0], SamplingParams(max_tokens=plan[t][1])))
                             for t in tags]), done, texts)

    join("a")
    _collect(batch.step(), done, texts)
    join("b")
    while "a" not in done:
        _collect(batch.step(), done, texts)
    assert batch.live == 1 and len(batch._rows) == 2  # a's slot is dead, not yet reclaimed
    join("c", "d")
    assert len(batch._rows) == 3  # c reused a's slot, d was appended
    while batch.live:
        _collect(batch.step(), done, texts)
    for tag, (prompt, n) in plan.items():
        alone = _alone(engine, prompt, n)
        assert done[tag].token_ids == alone.token_ids, tag
        assert done[tag].text == alone.text == texts[tag], tag
        assert done[tag].finish_reason == alone.finish_reason
        assert done[tag].logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_compaction_and_trimming_keep_answers_exact(engine: LocalEngine) -> None:
    # three short rows finish early: dead slots outnumber the live one, the batch compacts, and the
    # long row's leading padding columns (from the widest prompt) are cut once nobody needs them
    batch = RunningBatch(engine, capacity=4)
    reqs = [("long", LONG, 40), ("s1", SHORT, 2), ("s2", "ok", 2), ("s3", LONG + " and more words here " * 4, 2)]
    done: dict[object, Generation] = {}
    texts: dict[object, str] = {}
    _collect(batch.join([(t, GenerationRequest(p, SamplingParams(max_tokens=n))) for t, p, n in reqs]), done, texts)
    widths = []
    while batch.live:
        _collect(batch.step(), done, texts)
        widths.append(batch._mask.shape[1])
    assert len(batch._rows) == 0  # reset when the last row left
    assert min(widths) < max(widths)  # trimmed at some point
    for tag, prompt, n in reqs:
        assert done[tag].token_ids == _alone(engine, prompt, n).token_ids, tag


def test_a_bad_request_is_refused_alone(engine: LocalEngine) -> None:
    batch = RunningBatch(engine, capacity=4)
    too_long = " ".join(["word"] * (engine.max_context + 10))
    events = batch.join([("bad", GenerationRequest(too_long, SamplingParams(max_tokens=4))),
                         ("good", GenerationRequest(SHORT, SamplingParams(max_tokens=4)))])
    errors = [e for e in events if e.error is not None]
    assert [e.tag for e in errors] == ["bad"] and isinstance(errors[0].error, QuantgateError)
    assert "context" in str(errors[0].error)
    assert batch.live == 1


def test_join_beyond_capacity_and_compiled_engines_are_refused(engine: LocalEngine, tiny_model_dir: Path) -> None:
    batch = RunningBatch(engine, capacity=1)
    with pytest.raises(ValueError, match="free slots"):
        batch.join([(i, GenerationRequest(SHORT)) for i in range(2)])
    with pytest.raises(ValueError, match="eager"):
        RunningBatch(LocalEngine(load_model(tiny_model_dir), compile=True), capacity=2)


def test_growable_layer_matches_concatenation() -> None:
    torch.manual_seed(0)
    layer = kvcache.GrowableLayer()
    keys, values = [], []
    for n in (5, 1, 70, 1, 1):  # fills the prefill's spare room, then grows
        k, v = torch.randn(2, 3, n, 4), torch.randn(2, 3, n, 4)
        keys.append(k)
        values.append(v)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, torch.cat(keys, dim=2)) and torch.equal(got_v, torch.cat(values, dim=2))
    assert layer.get_seq_length() == 78
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat(keys, dim=2)[1:])


_OPS = st.lists(st.one_of(st.tuples(st.just("update"), st.integers(1, 70)), st.tuples(st.just("drop"), st.integers(0, 80)),
                          st.tuples(st.just("pad"), st.integers(0, 90)), st.tuples(st.just("select"), st.integers(0, 2))),
                min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_growable_layer_follows_a_plain_tensor_through_any_operations(ops: list[tuple[str, int]]) -> None:
    # the view's offset into its buffers (widening into dropped columns, room kept on the left)
    # must never change what keys/values hold: compared with plain concatenation and slicing
    gen = torch.Generator().manual_seed(0)
    layer = kvcache.GrowableLayer()
    ref = torch.randn(3, 2, 4, 4, generator=gen)
    layer.update(ref, ref * 2)
    for op, n in ops:
        if op == "update":
            new = torch.randn(ref.shape[0], 2, n, 4, generator=gen)
            layer.update(new, new * 2)
            ref = torch.cat([ref, new], dim=2)
        elif op == "drop":
            first = min(n, ref.shape[2] - 1)
            layer.drop_leading(first)
            ref = ref[:, :, first:]
        elif op == "pad":
            layer.pad_left(n)
            ref = torch.nn.functional.pad(ref, (0, 0, n, 0))
        elif ref.shape[0] > 1:
            keep = [r for r in range(ref.shape[0]) if r != n % ref.shape[0]]
            layer.batch_select_indices(torch.tensor(keep))
            ref = ref[keep]
        assert layer.get_seq_length() == ref.shape[2]
        assert torch.equal(layer.keys, ref) and torch.equal(layer.values, ref * 2), (op, n)


def test_decode_steps_after_a_prefill_write_in_place() -> None:
    # the prefill's buffer has room for the next steps: copying it all on the first step cost
    # more than the step's attention at 16 rows
    layer = kvcache.GrowableLayer()
    layer.update(torch.randn(2, 3, 300, 4), torch.randn(2, 3, 300, 4))
    buffer = layer._k.data_ptr()
    for _ in range(48):
        layer.update(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    assert layer._k.data_ptr() == buffer and layer.get_seq_length() == 348


def test_widening_reuses_dropped_columns_and_zeroes_them() -> None:
    # generate() joins requests shortest first, so nearly every join widens the batch: columns that
    # trim dropped (and a reallocation's left room) take the widening without copying the cache
    torch.manual_seed(0)
    layer = kvcache.GrowableLayer()
    k, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    layer.update(k, v)
    layer.drop_leading(6)
    buffer = layer._k.data_ptr()
    layer.pad_left(4)  # exactly the dropped columns: in place, and no longer stale keys
    assert layer._k.data_ptr() == buffer and layer.get_seq_length() == 8
    assert torch.equal(layer.keys[:, :, :4], torch.zeros(2, 3, 4, 4)) and torch.equal(layer.keys[:, :, 4:], k[:, :, 6:])
    assert torch.equal(layer.values[:, :, :4], torch.zeros(2, 3, 4, 4)) and torch.equal(layer.values[:, :, 4:], v[:, :, 6:])
    layer.pad_left(3)  # no room left: a copy, which keeps room on the left for the next widening
    assert layer._k.data_ptr() != buffer and layer.get_seq_length() == 11
    assert torch.equal(layer.keys[:, :, 7:], k[:, :, 6:]) and not layer.keys[:, :, :7].any()
    buffer = layer._k.data_ptr()
    layer.pad_left(20)
    assert layer._k.data_ptr() == buffer and torch.equal(layer.keys[:, :, 27:], k[:, :, 6:])
    step = torch.randn(2, 3, 1, 4)
    got_k, _ = layer.update(step, step)  # a decode step still appends after the view
    assert torch.equal(got_k[:, :, -1:], step) and torch.equal(got_k[:, :, 27:-1], k[:, :, 6:])


def test_additive_mask_weighs_like_the_boolean_one() -> None:
    torch.manual_seed(0)
    mask = torch.ones(3, 7, dtype=torch.long)
    assert kvcache.additive_mask(mask, torch.float32) is None  # nothing padded: no mask at all
    mask[0, :4] = 0
    mask[2, :1] = 0
    for dtype in (torch.float32, torch.bfloat16):
        additive = kvcache.additive_mask(mask, dtype)
        assert additive is not None and additive.shape == (3, 1, 1, 7) and additive.dtype == dtype
        q = torch.randn(3, 2, 1, 8, dtype=dtype)
        k, v = torch.randn(3, 2, 7, 8, dtype=dtype), torch.randn(3, 2, 7, 8, dtype=dtype)
        boolean = mask.bool()[:, None, None, :]
        got = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=boolean)
        assert torch.allclose(got, want, atol=0, rtol=1e-6 if dtype == torch.float32 else 1e-2)


def test_only_full_attention_models_take_the_prepared_mask() -> None:
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    assert kvcache.full_attention_only(LlamaConfig())
    assert not kvcache.full_attention_only(MistralConfig(sliding_window=64))
    assert kvcache.full_attention_only(MistralConfig(sliding_window=None))
    assert kvcache.full_attention_only(Qwen2Config(use_sliding_window=False))
    assert not kvcache.full_attention_only(Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=1,
                                                       num_hidden_layers=2))


def test_only_models_on_the_attention_interface_take_the_prepared_mask(engine: LocalEngine, tmp_path: Path) -> None:
    from tests.conftest import build_tiny_arch_model

    mistral = load_model(build_tiny_arch_model(tmp_path / "mistral", "mistral")).model
    bloom = load_model(build_tiny_arch_model(tmp_path / "bloom", "bloom")).model
    assert kvcache.takes_additive_mask(engine.model)  # the tiny Llama
    assert not kvcache.takes_additive_mask(mistral)  # sliding window: transformers builds that mask itself
    assert not kvcache.takes_additive_mask(bloom)  # ALiBi from the 2D mask
    assert kvcache.unsupported_cache(bloom) is None
