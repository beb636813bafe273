"""Make a transformers model's linear weights reachable by torchao, and say which weights are not.

torchao quantizes ``nn.Linear`` layers: ``quantize_`` swaps each weight for a tensor subclass that
implements ``F.linear``. Some Hugging Face modules hold linear weights another way, and without
this module they would be skipped in silence (a GPT-2 "int8wo" variant used to quantize its
``lm_head`` and nothing else) or quantized and then fail at the first forward:

* ``transformers.pytorch_utils.Conv1D`` (GPT-2 and its descendants) stores the weight transposed,
  ``(in, out)``, and computes ``addmm(bias, x, W)``. It becomes an ``nn.Linear`` holding ``W.T``:
  the same function, then planned and quantized like any other linear layer.
* Subclasses of ``nn.Linear`` with a forward of their own. Falcon's ``FalconLinear`` computes
  ``x @ W.T``, which a quantized weight does not implement, so it becomes a plain ``nn.Linear``
  with the same parameters. Other such subclasses (MoE routers such as ``Llama4Router``) do more
  than a linear map; they stay as they are and in float (``custom_forward`` names them for the
  planner), since nothing says torchao's tensors support what their forward does.

* Fused mixture-of-experts layers (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V3 in transformers 5) hold
  their experts as two 3-D parameters, which torchao 0.18 quantizes for none of quantgate's CPU
  schemes. ``quantize.experts`` turns them into one ``nn.Linear`` per expert where the module has
  transformers' default layout and its forward is provably the eager loop (checked on a probe).

The trade-off is a known list instead of a general rewrite: a module is replaced only where the
replacement is exactly the same function. What stays float is reported instead: fused experts in
another layout (transposed, with biases: GPT-OSS, Llama 4) among them; ``unquantized_weights``
lists them so the manifest and ``quantgate quantize`` say how much of the model they are.
"""

from __future__ import annotations

import re
from typing import Any

from quantgate.quantize.experts import eligibility, swap_experts

__all__ = ["custom_forward", "float_warning", "linearize", "linearized_summary", "unquantized_weights"]

# nn.Linear subclasses whose forward is exactly nn.Linear's, written another way.
_EQUIVALENT_SUBCLASSES = ("FalconLinear",)


def _linear_like(module: Any) -> str | None:
    """How ``module`` can become an ``nn.Linear``: "transpose" (Conv1D), "same", or None."""
    import torch

    name = type(module).__name__
    if name == "Conv1D" and type(module).__module__.startswith("transformers."):
        return "transpose"
    if isinstance(module, torch.nn.Linear) and type(module) is not torch.nn.Linear and name in _EQUIVALENT_SUBCLASSES:
        return "same"
    return None


def linearize(model: Any, only: dict[str, str] | None = None) -> dict[str, str]:
    """Replace linear-equivalent modules by ``nn.Linear`` in place; returns ``{module name: original class}``.

    ``only`` (a previous call's result, from a variant's manifest) replaces exactly those modules,
    which is how a saved variant's skeleton is rebuilt to the shapes its weights were stored in.
    Works on the meta device too. A fused experts module keeps its class: its two 3-D parameters
    become lists of per-expert ``nn.Linear`` (``quantize.experts``).
    """
    import torch

    swapped: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if only is not None and name not in only:
            continue
        if eligibility(module) is None:  # fused experts; where the probe disagrees they stay float
            if swap_experts(module, check=only is None) is None:
                swapped[name] = type(module).__name__
            continue
        how = _linear_like(module)
        if how is None:
            continue
        weight = module.weight
        if how == "transpose":  # Conv1D: weight is (in, out)
            in_f, out_f = weight.shape
            new_weight = weight.detach().t().contiguous()
        else:
            out_f, in_f = weight.shape
            new_weight = weight.detach()
        linear = torch.nn.Linear(in_f, out_f, bias=module.bias is not None, device=weight.device, dtype=weight.dtype)
        linear.weight = torch.nn.Parameter(new_weight, requires_grad=False)
        if module.bias is not None:
            linear.bias = torch.nn.Parameter(module.bias.detach(), requires_grad=False)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, linear)
        swapped[name] = type(module).__name__
    missing = sorted(set(only or ()) - set(swapped))
    if missing:
        raise ValueError(f"no linear-equivalent module named {', '.join(missing)} in this model")
    return swapped


def linearized_summary(linearized: dict[str, str]) -> str:
    """``8 Conv1D module(s) stored as nn.Linear``: what ``linearize`` replaced, for people."""
    linear = {n: c for n, c in linearized.items() if c in ("Conv1D", *_EQUIVALENT_SUBCLASSES)}
    experts = {n: c for n, c in linearized.items() if n not in linear}
    parts = [f"{len(group)} {'/'.join(sorted(set(group.values())))} module(s) stored as {how}"
             for group, how in ((linear, "nn.Linear"), (experts, "one nn.Linear per expert")) if group]
    return "; ".join(parts)


def custom_forward(module: Any) -> str | None:
    """The class name of an ``nn.Linear`` subclass that brings its own forward (kept in float), else None."""
    import torch

    cls = type(module)
    if isinstance(module, torch.nn.Linear) and cls is not torch.nn.Linear and cls.forward is not torch.nn.Linear.forward:
        return cls.__name__
    return None


def unquantized_weights(model: Any, planned: set[str], min_share: float = 0.01) -> dict[str, Any]:
    """Weights of two or more dimensions outside the planned linear layers, and why they stay float.

    Call it on the float model. Returns ``{"bytes": n, "model_bytes": all weight bytes, "share":
    their ratio, "tensors": {pattern: {"bytes", "kind", "reason"}}}``, names grouped over layer numbers
    (``model.layers.*.mlp.experts.down_proj``), the groups of at least ``min_share`` of the model
    listed. ``kind`` is ``embedding`` (looked up, not multiplied, so quantgate keeps embedding
    tables in the compute dtype by design), ``experts`` or ``other``. ``planned`` holds the names of
    the linear layers the planner saw (the float ones among them are in the layer map).
    """
    import torch

    owners = dict(model.named_modules())
    total = 0
    left: dict[str, tuple[int, str, str]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        size = int(param.numel() * param.element_size())
        total += size
        owner = name.rpartition(".")[0]
        if owner in planned or param.dim() < 2:
            continue
        if isinstance(owners.get(owner), torch.nn.Embedding):
            left[name] = (size, "embedding", "embedding table (looked up, not multiplied)")
        elif param.dim() == 3:
            why = eligibility(owners[owner]) or "its forward is not transformers' eager loop (checked on a probe)"
            left[name] = (size, "experts", f"3-D expert weights of a fused mixture-of-experts layer kept in float: {why}")
        else:
            left[name] = (size, "other", f"{param.dim()}-D parameter outside a linear layer")
    groups: dict[str, dict[str, Any]] = {}
    for name, (size, kind, reason) in left.items():
        group = groups.setdefault(re.sub(r"\.\d+\.", ".*.", name), {"bytes": 0, "kind": kind, "reason": reason})
        group["bytes"] += size
    outside = sum(s for s, _, _ in left.values())
    listed = {n: g for n, g in groups.items() if total and g["bytes"] / total >= min_share}
    return {"bytes": outside, "model_bytes": total, "share": round(outside / total, 4) if total else 0.0,
            "tensors": listed}


def float_warning(unquantized: dict[str, Any], threshold: float = 0.05) -> str | None:
    """A sentence for the user when weights other than embedding tables keep ``threshold`` or more of the model float."""
    groups = {n: g for n, g in unquantized.get("tensors", {}).items() if g.get("kind") != "embedding"}
    share = sum(g["bytes"] for g in groups.values()) / max(1, unquantized.get("model_bytes", 0))
    if share < threshold:
        return None
    by_reason: dict[str, list[str]] = {}
    for name, g in groups.items():
        by_reason.setdefault(g["reason"], []).append(name)
    named = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())
    return f"{share:.0%} of the weights stay in float outside linear layers: {named}"
