"""Apply a scheme to a loaded model, layer by layer, with per-layer overrides by name pattern.

One entry point, ``quantize_model``, in the torchao style: the default scheme goes to every
``nn.Linear``; ``overrides`` (ordered ``(pattern, scheme)`` pairs, fnmatch patterns on the module's
full name, first match wins) change it per layer, ``"none"`` keeping a layer in the compute dtype.
A layer whose shape the scheme cannot take (group size does not divide in_features, say) stays in
float and the layer map says why, rather than the whole run failing.

Embeddings are never quantized here: torchao's weight-only configs target linear layers, and on a
small model the embedding gather is cheap while its precision matters. ``lm_head`` is a linear
layer and is quantized by default; keep it with ``--override lm_head=none``. Modules that are linear
layers in another form (GPT-2's ``Conv1D``, fused MoE experts: one per expert) are first turned into
``nn.Linear`` (``compat``), and what still stays float is counted in ``QuantizeResult.unquantized``.
"""

from __future__ import annotations

import fnmatch
import math
import time
from dataclasses import dataclass, field
from typing import Any

from quantgate.errors import QuantgateError
from quantgate.models.loading import resolve_dtype
from quantgate.quantize.compat import custom_forward, linearize, unquantized_weights
from quantgate.quantize.schemes import Scheme, get_scheme

__all__ = ["LayerPlan", "QuantizeResult", "parse_override", "plan_layers", "quantize_model"]


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one linear layer, and why."""

    name: str
    scheme: str  # scheme name, or "none" for the compute dtype
    in_features: int
    out_features: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "shape": [self.out_features, self.in_features],
            "reason": self.reason,
        }


@dataclass
class QuantizeResult:
    layers: list[LayerPlan]
    seconds: float
    tensor_classes: dict[str, str] = field(default_factory=dict)
    linearized: dict[str, str] = field(default_factory=dict)  # module -> original class (compat.linearize)
    unquantized: dict[str, Any] = field(default_factory=dict)  # compat.unquantized_weights
    probe_snr_db: float | None = None  # quantized vs float logits on a fixed probe; None: identical, or no probe


def parse_override(text: str) -> tuple[str, str]:
    """Parse ``PATTERN=SCHEME`` (scheme may be ``none``) from the command line."""
    pattern, sep, scheme = text.partition("=")
    if not sep or not pattern.strip() or not scheme.strip():
        raise QuantgateError(f"bad override {text!r}: expected PATTERN=SCHEME, e.g. lm_head=none")
    scheme = scheme.strip()
    if scheme != "none":
        get_scheme(scheme)
    return pattern.strip(), scheme


def plan_layers(
    model: Any, scheme: Scheme, overrides: list[tuple[str, str]] | None = None
) -> list[LayerPlan]:
    """Decide each linear layer's scheme without touching the model."""
    import torch

    plans: list[LayerPlan] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        chosen, reason = (scheme.name if scheme.quantizes else "none"), "default scheme"
        own = custom_forward(module)
        if own is not None:
            plans.append(LayerPlan(name, "none", module.in_features, module.out_features,
                                   f"kept in float: {own} has its own forward, which quantized weights may not support"))
            continue
        for pattern, override in overrides or []:
            if fnmatch.fnmatchcase(name, pattern):
                chosen, reason = override, f"override {pattern}={override}"
                break
        if chosen != "none":
            misfit = get_scheme(chosen).layer_fits(module.in_features, module.out_features)
            if misfit:
                chosen, reason = "none", f"kept in float: {misfit}"
        plans.append(LayerPlan(name, chosen, module.in_features, module.out_features, reason))
    return plans


def quantize_model(
    model: Any,
    scheme: Scheme,
    overrides: list[tuple[str, str]] | None = None,
    device: str = "cpu",
    compute_dtype: str | None = None,
) -> QuantizeResult:
    """Quantize ``model`` in place; return the per-layer plan and the seconds it took.

    The model must be on ``device``, in the scheme's compute dtype or, with ``compute_dtype``, in a
    narrower float dtype that casts to it exactly (a bf16 checkpoint for fp32 activations): then
    each linear layer is cast just before it is quantized and the rest of the model at the end,
    so peak memory is the narrow model plus one layer, not the whole model widened, and the
    result is the same as quantizing the widened model. Linear-equivalent
    modules are replaced by ``nn.Linear`` first (``compat.linearize``), so the model's module tree
    changes where it holds any; ``QuantizeResult.linearized`` says where. A forward pass on a fixed
    probe runs before and after: a model whose quantized form cannot run (a module doing what
    torchao's tensors do not implement) fails here with a message, not at its first request, and
    the logits' signal-to-noise ratio is a first measure of what the scheme costs.
    """
    from torchao.quantization import quantize_

    linearized = linearize(model)
    # The probe needs a causal LM (token ids in, logits out); a bare module (tests, benchmarks) skips it.
    probe = _probe_ids(model, device) if hasattr(model, "get_input_embeddings") else None
    reference = _probe_logits(model, probe) if probe is not None else None
    plans = plan_layers(model, scheme, overrides)
    for plan in plans:
        if plan.scheme != "none":
            get_scheme(plan.scheme).check_device(device)
    untied = _untie_quantized_head(model, plans)
    unquantized = unquantized_weights(model, {p.name for p in plans})
    start = time.perf_counter()
    target = resolve_dtype(compute_dtype) if compute_dtype else None
    widen = target is not None and any(p.dtype != target for p in model.parameters() if p.is_floating_point())
    quantized = [p for p in plans if p.scheme != "none"]
    # Widening: one layer per call (widen it, quantize it, and the wide copy is gone); else one call per scheme.
    batches: dict[tuple[str, str], set[str]] = {}
    for plan in quantized:
        batches.setdefault((plan.scheme, plan.name if widen else ""), set()).add(plan.name)
    for (name, _), fqns in batches.items():
        for fqn in fqns if widen else ():
            model.get_submodule(fqn).to(target)
        quantize_(model, get_scheme(name).torchao_config(device),
                  filter_fn=lambda _m, fqn, fqns=fqns: fqn in fqns, device=device)
    if widen:
        _widen_the_rest(model, target)
        if hasattr(model, "config"):
            model.config.dtype = target  # the saved config.json says what the variant computes in
    seconds = time.perf_counter() - start
    modules = dict(model.named_modules())
    classes = {p.name: type(modules[p.name].weight).__name__ for p in plans}
    if untied:
        model.config.tie_word_embeddings = False
    snr = None
    if probe is not None:
        try:
            logits = _probe_logits(model, probe)
        except (NotImplementedError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise QuantgateError(f"{scheme.name}: the quantized model cannot run a forward pass ({first}); "
                                 "keep the module involved in float with --override PATTERN=none") from None
        noise = float((logits - reference).pow(2).sum())
        snr = None if noise == 0 else round(10 * math.log10(float(reference.pow(2).sum()) / noise), 2)
    return QuantizeResult(layers=plans, seconds=seconds, tensor_classes=classes, linearized=linearized,
                          unquantized=unquantized, probe_snr_db=snr)


def _widen_the_rest(model: Any, target: Any) -> None:
    """Cast every float parameter and buffer that is not quantized to ``target`` (tied ones once)."""
    from quantgate.quantize.codec import is_quantized

    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.is_floating_point() and not is_quantized(p) and p.dtype != target:
                p.data = p.data.to(target)
        for key, b in module._buffers.items():
            if b is not None and b.is_floating_point() and b.dtype != target:
                module._buffers[key] = b.to(target)


def _probe_ids(model: Any, device: str) -> Any:
    """32 fixed token ids spread over the vocabulary (a stride coprime to most vocabulary sizes)."""
    import torch

    vocab = int(model.get_input_embeddings().num_embeddings)
    return ((torch.arange(32) * 7919 + 13) % vocab)[None, :].to(device)


def _probe_logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.float()


def _untie_quantized_head(model: Any, plans: list[LayerPlan]) -> bool:
    """Give lm_head its own weight when it will be quantized but shares the embedding's.

    Quantizing a tied head would otherwise leave the embedding table pointing at the float tensor
    while the saved config still says "tied", and loading would re-tie the two the wrong way.
    """
    import torch

    head = getattr(model, "lm_head", None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or embed is None or head.weight is not embed.weight:
        return False
    if not any(p.name == "lm_head" and p.scheme != "none" for p in plans):
        return False
    head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
    return True
