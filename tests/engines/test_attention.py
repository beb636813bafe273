"""The compiled decode step's attention: grouped heads without repeat_kv, only where the model's eager attention is standard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.models.llama.modeling_llama import eager_attention_forward

from quantgate.engines import kvcache
from quantgate.engines.attention import (
    PACKED,
    PACKED_FP32,
    packed_gqa_attention,
    packed_gqa_attention_fp32,
    step_attention,
)
from quantgate.engines.local import LocalEngine, _attention
from quantgate.models import load_model
from quantgate.reference import WEIGHTS_DIR


class _Layer(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize("q_len", [1, 3])
def test_packed_attention_equals_the_repeated_form(q_len: int) -> None:
    torch.manual_seed(0)
    layer = _Layer(groups=4).eval()
    query = torch.randn(3, 8, q_len, 16)
    key, value = torch.randn(3, 2, 40, 16), torch.randn(3, 2, 40, 16)
    mask = torch.zeros(3, 1, q_len, 40)
    mask[1, ..., :25] = torch.finfo(torch.float32).min  # a left-padded row
    out, weights = packed_gqa_attention(layer, query, key, value, mask, scaling=0.25)
    ref_out, ref_weights = eager_attention_forward(layer, query, key, value, mask, scaling=0.25)
    assert out.shape == ref_out.shape == (3, q_len, 8, 16)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
    assert torch.all(weights[1, ..., :25] == 0)  # the padded columns weigh nothing


@pytest.mark.parametrize("groups", [4, 1])
def test_fp32_attention_of_a_bf16_model_is_the_fp32_product_rounded_once(groups: int) -> None:
    torch.manual_seed(0)
    layer = _Layer(groups=groups).eval()
    query = torch.randn(3, 8, 1, 16).bfloat16()
    key, value = torch.randn(3, 8 // groups, 40, 16).bfloat16(), torch.randn(3, 8 // groups, 40, 16).bfloat16()
    mask = torch.zeros(3, 1, 1, 40, dtype=torch.bfloat16)
    mask[1, ..., :25] = torch.finfo(torch.bfloat16).min  # a left-padded row
    out, weights = packed_gqa_attention_fp32(layer, query, key, value, mask, scaling=0.25)
    wide, _ = eager_attention_forward(layer, query.float(), key.float(), value.float(), mask.float(), scaling=0.25)
    assert out.dtype == weights.dtype == torch.bfloat16
    torch.testing.assert_close(out, wide.bfloat16(), rtol=0, atol=0)  # rounded once, from the fp32 result
    assert torch.all(weights[1, ..., :25] == 0)
    narrow, _ = eager_attention_forward(layer, query, key, value, mask, scaling=0.25)  # bf16 products throughout
    assert (out.float() - wide).abs().max() <= (narrow.float() - wide).abs().max()


def test_a_bf16_model_attends_in_fp32_where_the_cpu_emulates_bf16(tiny_model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from quantgate.engines import local

    loaded = load_model(tiny_model_dir, dtype="bf16")
    assert step_attention(loaded.model, fp32=True) == PACKED_FP32
    monkeypatch.setattr(local, "cpu_has_native_bf16", lambda: False)
    assert LocalEngine(loaded, compile=True).step_attention == PACKED_FP32
    assert LocalEngine(load_model(tiny_model_dir), compile=True).step_attention == PACKED  # fp32: nothing to widen
    monkeypatch.setattr(local, "cpu_has_native_bf16", lambda: True)
    assert LocalEngine(loaded, compile=True).step_attention == PACKED
    # the reference model groups nothing, but its bf16 step still widens where bf16 is emulated
    assert step_attention(load_model(WEIGHTS_DIR, dtype="bf16").model, fp32=True) == PACKED_FP32


def test_grouped_llama_gets_packed_attention_and_the_same_decode_logits(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir).model
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert step_attention(model) == PACKED
    # one decode step after a left-padded prefill, through transformers' own mask building for the name
    ids, mask, positions = kvcache.left_padded([[5, 6, 7, 8, 9, 10], [11, 12]], 0, "cpu")
    logits = {}
    for name in ("eager", PACKED):
        cache = kvcache.new_cache()
        with torch.inference_mode(), _attention(model.config, name):
            model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
            step_mask = torch.cat([mask, mask.new_ones((2, 1))], dim=1)
            out = model(input_ids=torch.tensor([[13], [14]]), attention_mask=step_mask,
                        position_ids=positions[:, -1:] + 1, cache=cache, use_cache=True)
        logits[name] = out.logits[:, -1]
    torch.testing.assert_close(logits[PACKED], logits["eager"], rtol=1e-5, atol=1e-5)


def test_models_without_grouping_or_with_their_own_eager_attention_keep_it(tmp_path: Path) -> None:
    from tests.conftest import build_tiny_arch_model

    # the reference model: as many key/value heads as query heads, nothing repeated
    assert step_attention(load_model(WEIGHTS_DIR).model) == "eager"
    # Gemma 2 soft-caps its scores in its own eager function; Mistral's is Llama's
    assert step_attention(load_model(build_tiny_arch_model(tmp_path / "gemma2", "gemma2")).model) == "eager"
    assert step_attention(load_model(build_tiny_arch_model(tmp_path / "mistral", "mistral")).model) == PACKED


def test_only_compiled_engines_switch(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir)
    assert LocalEngine(loaded).step_attention == "eager"
    assert LocalEngine(loaded, compile=True).step_attention == PACKED


@pytest.mark.slow
@pytest.mark.parametrize("arch,attention", [("mistral", PACKED), ("gemma2", "eager")])
def test_compiled_steps_match_eager_on_sliding_window_models(arch: str, attention: str, tmp_path: Path) -> None:
    # Mistral: grouped heads and a 64-token sliding window that the longer prompt crosses, so the
    # packed step reads transformers' sliding mask; Gemma 2: its own eager attention (soft-capping)
    from quantgate.engines.types import GenerationRequest, SamplingParams
    from tests.conftest import build_tiny_arch_model

    loaded = load_model(build_tiny_arch_model(tmp_path / arch, arch))
    prompts = ["<|user|>hi<|end|><|assistant|>",
               "<|user|>" + " ".join(f"word{i}" for i in range(30)) + "<|end|><|assistant|>"]
    requests = [GenerationRequest(p, SamplingParams(max_tokens=24)) for p in prompts]
    eager, compiled = LocalEngine(loaded, max_batch_size=2), LocalEngine(loaded, max_batch_size=2, compile=True)
    assert compiled.step_attention == attention
    for engine in (eager, compiled):
        engine.eos_ids = set()
    want = [g.token_ids for g in eager.generate(requests)]
    for _ in range(2):  # the second call reuses the first's static cache
        assert [g.token_ids for g in compiled.generate(requests)] == want
