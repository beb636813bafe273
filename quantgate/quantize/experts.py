"""Fused mixture-of-experts weights as one ``nn.Linear`` per expert, so that torchao quantizes them.

transformers 5 keeps the experts of a MoE layer (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3,
Granite-MoE...) as two 3-D parameters, ``gate_up_proj`` ``[E, 2I, H]`` and ``down_proj`` ``[E, H, I]``, in
a module decorated with ``use_experts_implementation``, whose forward runs one of several
implementations chosen by the config (a loop over the experts a batch hits, batched or grouped
matmuls). torchao 0.18 quantizes none of them for quantgate's CPU schemes (int4 refuses a parameter,
int8's tensor lacks ``transpose``), so they stayed float: 81% of a tiny Mixtral's weights, most of a
real one's.

Here each of the two parameters becomes an ``nn.ModuleList`` of E ``nn.Linear`` (expert e's weight is
``W[e]``), and the module's forward becomes transformers' eager loop calling those layers. Then the
experts are planned, quantized, stored and loaded like any other linear layer: same schemes, same
kernels, overrides by name (``model.layers.*.mlp.experts.*=none``), and the manifest's ``linearized``
names the module so that loading rebuilds the same skeleton.

The trade-offs: only transformers' default layout (weights not transposed, no biases, a gate, no norm
after each expert); other layouts (GPT-OSS, Llama 4) stay float and are reported. And only where the
loop is provably the module's own function: before a module is swapped, its eager forward and the
loop run on a probe that sends tokens to every expert, and the two must agree bit for bit, else the
module is left as it was. The loop is transformers' eager implementation whatever the config asks
for (its default, grouped matmuls, sums in another order: the last bits move), and it branches on
data (which experts a batch hits), so a compiled decode step of such a model runs uncompiled
(``engines.local``).
"""

from __future__ import annotations

import types
from typing import Any

import torch

__all__ = ["EXPERT_PARAMS", "eligibility", "swap_experts"]

EXPERT_PARAMS = ("gate_up_proj", "down_proj")


def eligibility(module: Any) -> str | None:
    """Why ``module`` cannot have its fused experts turned into linear layers, or None when it can.

    A module without the two 3-D parameters is not fused experts at all (the answer says so)."""
    params = [module._parameters.get(name) for name in EXPERT_PARAMS]
    if any(p is None or p.dim() != 3 for p in params):
        return "no 3-D gate_up_proj and down_proj parameters"
    if not hasattr(type(module).forward, "__wrapped__"):  # use_experts_implementation keeps the eager forward there
        return f"{type(module).__name__} does not use transformers' experts implementations"
    layout = {"is_transposed": False, "has_bias": False, "has_gate": True, "has_post_expert_norm": False}
    odd = [f"{k}={getattr(module, k, None)}" for k, v in layout.items() if getattr(module, k, None) is not v]
    if odd:
        return f"a layout quantgate does not split into linear layers ({', '.join(odd)})"
    gate_up, down = params
    experts = getattr(module, "num_experts", None)
    if not (gate_up.shape[0] == down.shape[0] == experts and gate_up.shape[2] == down.shape[1]
            and gate_up.shape[1] == 2 * down.shape[2]):
        return f"shapes {tuple(gate_up.shape)} and {tuple(down.shape)} are not {experts} experts' [2I, H] and [H, I]"
    return None


def _forward(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
             top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' eager experts loop (``MixtralExperts.forward``), one ``nn.Linear`` call per product."""
    final = torch.zeros_like(hidden_states)
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
    for expert in hit.flatten().tolist():
        if expert == self.num_experts:  # the padding slot some routers use for "no expert"
            continue
        position, token = torch.where(mask[expert])
        h = self._apply_gate(self.gate_up_proj[expert](hidden_states[token]))
        h = self.down_proj[expert](h) * top_k_weights[token, position, None]
        final.index_add_(0, token, h.to(final.dtype))
    return final


def _probe(module: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states, expert indices and weights that send two tokens to every expert (top-2 routing)."""
    gate_up = module._parameters["gate_up_proj"]
    experts, hidden = gate_up.shape[0], gate_up.shape[2]
    g = torch.Generator().manual_seed(0)
    states = torch.randn(experts, hidden, generator=g).to(gate_up.device, gate_up.dtype)
    index = torch.stack([torch.arange(experts), (torch.arange(experts) + 1) % experts], dim=1).to(gate_up.device)
    weights = torch.rand(experts, 2, generator=g).softmax(dim=-1).to(gate_up.device)
    return states, index, weights


def _split(module: Any) -> dict[str, Any]:
    """Replace the two 3-D parameters by lists of linear layers; returns the parameters, to undo it."""
    taken = {}
    for name in EXPERT_PARAMS:
        param = module._parameters.pop(name)
        taken[name] = param
        layers = torch.nn.ModuleList()
        for weight in param.detach():
            out_f, in_f = weight.shape
            linear = torch.nn.Linear(in_f, out_f, bias=False, device=weight.device, dtype=weight.dtype)
            linear.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
            layers.append(linear)
        setattr(module, name, layers)
    module.forward = types.MethodType(_forward, module)
    return taken


def _undo(module: Any, taken: dict[str, Any]) -> None:
    for name, param in taken.items():
        del module._modules[name]
        module._parameters[name] = param
    module.__dict__.pop("forward", None)


def swap_experts(module: Any, check: bool = True) -> str | None:
    """Turn ``module``'s fused experts into per-expert ``nn.Linear`` layers in place; returns why not
    (the module untouched) or None.

    ``check`` runs the module's own eager forward and the loop on a probe first and keeps the module
    as it was unless they agree exactly; a skeleton on the meta device (loading a variant whose
    manifest says the swap was checked when it was made) skips it.
    """
    why = eligibility(module)
    if why:
        return why
    if not check or module._parameters["gate_up_proj"].device.type == "meta":
        _split(module)
        return None
    probe = _probe(module)
    with torch.no_grad():
        try:
            want = type(module).forward.__wrapped__(module, *probe)
        except (RuntimeError, TypeError, AttributeError, IndexError) as exc:
            return f"its eager forward failed on a probe ({type(exc).__name__})"
        taken = _split(module)
        try:
            got = module(*probe)
        except (RuntimeError, TypeError, AttributeError, IndexError) as exc:
            _undo(module, taken)
            return f"the per-expert loop failed on a probe ({type(exc).__name__}: {exc})"
    if not torch.equal(got, want):
        _undo(module, taken)
        return "its forward is not transformers' eager loop (a probe's outputs differ)"
    return None
