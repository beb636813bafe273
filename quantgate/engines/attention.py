"""What the compiled decode step attends with: eager attention, without copying grouped keys and values.

The compiled step runs transformers' eager attention rather than SDPA (``local`` explains why). For
grouped-query models (fewer key/value heads than query heads: Llama 3, Qwen, Mistral ...) that
function first copies every key and value head once per query head that shares it (``repeat_kv``),
then multiplies. At one query token that copy is most of the step's attention: on the 291M
benchmark Llama (16 query heads, 4 key/value heads, fp32 activations) at batch 8 over a 256-column
cache it is ~16 MB written and read again per layer. ``packed_gqa_attention`` instead folds the
query heads that share a key/value head into one matrix, ``[batch, kv_heads, group, head_dim]``,
and multiplies it by the keys as they lie (what transformers' SDPA path does outside compile).
Same products and sums, no copy; the last bits may differ from the repeated form, as any change of
matrix shapes can, which is why it serves only the compiled step (already not bit-identical to
eager).

On a CPU without native bf16 (AVX2 only), bf16 matrix products are emulated: a bf16 model's step
attention there took 604 us a layer against 88 in fp32 (one query token, 16 heads over 256 columns,
2-core AMD EPYC), ~10 ms of a ~30 ms step of the 291M model. ``PACKED_FP32`` attends in fp32 for such
a model (grouped or not), rounding the output back to bf16: more precise, not less.

It replaces only a model's *standard* eager function, the one ~180 transformers decoders share
(Llama's, byte for byte). Models whose eager attention does more (Gemma 2's soft-capping, gpt-oss's
sinks) keep their own, unchanged. The function is registered with transformers' attention and
mask interfaces under ``PACKED``; registering the same function twice is harmless.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["PACKED", "PACKED_FP32", "packed_gqa_attention", "packed_gqa_attention_fp32", "step_attention"]

PACKED = "quantgate_packed_gqa"
PACKED_FP32 = "quantgate_packed_gqa_fp32"


def _standard_eager() -> Any:
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


def packed_gqa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard eager attention; at one query token, grouped heads multiply the unrepeated keys."""
    batch, heads, q_len, dim = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if q_len != 1 or not shared_mask or (dropout and module.training):
        return _standard_eager()(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    # query head h = kv * group + g, the order repeat_kv gives the copies
    packed = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    weights = torch.matmul(packed, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask  # [batch, 1, 1, columns]: the same for every head
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value)  # [batch, kv_heads, group, dim]
    return out.reshape(batch, 1, heads, dim), weights.reshape(batch, heads, 1, columns)


def packed_gqa_attention_fp32(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float,
                              dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``packed_gqa_attention`` in fp32 for a bf16 model, on a CPU that emulates bf16 (module docstring)."""
    mask = attention_mask if attention_mask is None else attention_mask.float()
    out, weights = packed_gqa_attention(module, query.float(), key.float(), value.float(), mask, scaling, dropout,
                                        **kwargs)
    return out.to(query.dtype), weights.to(query.dtype)


def _same_function(a: Any, b: Any) -> bool:
    ca, cb = a.__code__, b.__code__
    return (ca.co_code, ca.co_consts, ca.co_names, ca.co_varnames) == (cb.co_code, cb.co_consts, cb.co_names,
                                                                       cb.co_varnames)


def step_attention(model: torch.nn.Module, fp32: bool = False) -> str:
    """What the compiled decode step attends with: ``PACKED`` for a grouped-query model whose every attention
    layer uses the standard eager function, ``PACKED_FP32`` for such a model (grouped or not) when ``fp32``
    (a bf16 model on a CPU without native bf16), else ``"eager"``."""
    layers = [m for m in model.modules() if hasattr(m, "num_key_value_groups")]
    if not layers or (all(getattr(m, "num_key_value_groups", 1) == 1 for m in layers) and not fp32):
        return "eager"  # nothing is repeated, nothing to save
    standard = _standard_eager()
    for layer in layers:
        own = getattr(sys.modules.get(type(layer).__module__), "eager_attention_forward", None)
        if own is None or not _same_function(own, standard) or hasattr(layer, "sinks"):
            return "eager"
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    name, function = (PACKED_FP32, packed_gqa_attention_fp32) if fp32 else (PACKED, packed_gqa_attention)
    AttentionInterface.register(name, function)
    # without a mask function of its own transformers would build no mask at all for the step
    AttentionMaskInterface.register(name, eager_mask)
    return name
