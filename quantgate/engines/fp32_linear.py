"""fp32 linear layers on oneDNN where MKL's ``sgemm`` runs below the CPU's speed: AMD CPUs with AVX-512.

Why: torch runs an fp32 ``nn.Linear`` on the CPU through MKL, and MKL takes its AVX2 code on AMD
processors whatever they support. On a 2-core AMD EPYC with AVX-512 (family 26, Zen 5; torch 2.13,
MKL 2024.2; ``python bench/fp32_linear.py``), 2,600 rows through a 256x640 layer ran at ~210 GFLOP/s
on MKL and ~490 on oneDNN (which torch also ships, and which picks its code by instruction set); at a
few rows MKL's time grows with every row while oneDNN's stays that of reading the weight once
(1024x2816 at 4 rows: 477 us on MKL, 79 us on oneDNN with the weight in its own layout). bf16 layers
already run on oneDNN.

So on such a CPU every fp32 ``nn.Linear`` of an eager engine's model runs
``torch.ops.mkldnn._linear_pointwise`` on a copy of its weight reordered once into oneDNN's blocked
layout (within a memory limit, below), wherever a call does at least ``MIN_WORK`` multiply-adds (rows
x in x out); smaller calls, a 256x256 layer at one row for example (4.7 us on MKL against 13.0), keep
MKL.

The trade-offs:

* **Memory**: the reordered copies double the fp32 linear weights in memory (14 MB more for the
  reference model), so a model gets them only while they weigh at most ``REORDER_LIMIT`` (512 MiB) in
  all; a larger one multiplies on its weights as they are (oneDNN then reorders inside each call, which
  keeps most of the gain on large layers and none of the memory), the rule the compiled path follows
  for float weights too (a second copy only on request). ``LocalEngine(..., onednn_fp32=False)``
  keeps MKL.
* **First calls**: oneDNN builds a primitive for each new (rows, layer shape), ~0.5 ms, then keeps it
  in a cache (1,024 by default, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``): a prompt length seen for the
  first time pays it once per layer shape.
* **Bits**: sums run in another order than MKL's, so outputs differ in the last bits (~1e-7 relative)
  and a greedy answer can differ where two tokens were a near tie. Neither library gives a row the
  same bits alone and in a batch (MKL changes its code between one, two and four rows), so batched
  decoding equals one row at a time as before: to the token, not to the bit.
* **Where**: only where measured to pay (AMD with AVX-512). On Intel CPUs MKL takes its AVX-512 code;
  on AMD CPUs without AVX-512 both libraries run AVX2 code; neither is measured here.

Not under ``torch.compile`` (inductor lays out its own weights), not with gradients (the op has no
backward), not for a weight changed after the copy was made (its version is checked on each call;
the copy is rebuilt for an fp32 weight, otherwise ``F.linear`` runs).
"""

from __future__ import annotations

import functools

import torch

from quantgate.quantize.schemes import cpu_flags

__all__ = ["MIN_WORK", "REORDER_LIMIT", "onednn_status", "use_onednn_fp32"]

# Multiply-adds per call from which oneDNN wins on the AMD host (bench/fp32_linear.py): 256x2057 at one
# row 28.7 vs 34.2 us (MKL), 256x256 at four rows 12.9 vs 12.2, 256x640 at four 15.7 vs 27.5.
MIN_WORK = 1 << 19
# The most bytes of reordered copies a model gets (module docstring, "Memory"); past it, oneDNN reads the
# weights as they are, reordering inside each call: on the 291M benchmark model (1 GB of fp32 linear
# weights) 1.3-1.6x MKL's decode speed at one row and 1.8x at eight, against 1.6-2.8x with the copies.
REORDER_LIMIT = 512 << 20


def _vendor(cpuinfo: str) -> str:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return ""
    return ""


def onednn_status(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``"ready"`` where fp32 linears are worth routing to oneDNN on this CPU, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN"
    vendor = _vendor(cpuinfo)
    if vendor != "AuthenticAMD":
        return f"MKL runs its own best code on this CPU ({vendor or 'vendor unknown'})"
    if "avx512f" not in cpu_flags(cpuinfo):
        return "an AMD CPU without AVX-512: MKL and oneDNN both run AVX2 code"
    return "ready"


class _Packed:
    """A layer's weight as oneDNN gets it (reordered into its layout, or the weight itself), with the
    weight and version it was made from."""

    __slots__ = ("source", "version", "weight")

    def __init__(self, weight: torch.Tensor, reorder: bool):
        self.source = weight
        self.version = weight._version
        # the batch size is a hint for the layout: 16 rows (a decode batch) measured best here
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 16) if reorder else weight.detach()


def _fits(module: torch.nn.Module) -> bool:
    w = module.weight
    return (isinstance(module, torch.nn.Linear) and type(w) in (torch.Tensor, torch.nn.Parameter)
            and w.dtype == torch.float32 and w.device.type == "cpu" and w.dim() == 2)


def _forward(module: torch.nn.Linear, packed: list[_Packed | None], reorder: bool, x: torch.Tensor) -> torch.Tensor:
    w = module.weight
    n, k = w.shape
    if (x.dtype != torch.float32 or x.numel() // max(k, 1) * k * n < MIN_WORK or torch.compiler.is_compiling()
            or (w.requires_grad and torch.is_grad_enabled())):
        return torch.nn.functional.linear(x, w, module.bias)
    p = packed[0]
    if p is None or p.source is not w or p.version != w._version:
        if not _fits(module):  # quantized or cast since: the layer's own forward
            return torch.nn.functional.linear(x, w, module.bias)
        p = packed[0] = _Packed(w, reorder)
    return torch.ops.mkldnn._linear_pointwise(x, p.weight, module.bias, "none", [], "")


def use_onednn_fp32(model: torch.nn.Module, enabled: bool = True, cpuinfo: str = "/proc/cpuinfo",
                    reorder_limit: int = REORDER_LIMIT) -> int:
    """Route ``model``'s fp32 CPU ``nn.Linear`` layers through oneDNN where ``onednn_status`` says it
    pays (``enabled=False``: back to their own forward), on reordered copies of their weights while
    those weigh at most ``reorder_limit`` bytes in all, on the weights as they are beyond it. Returns
    how many layers now do."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and _fits(m)]
    for m in layers:
        if getattr(m.__dict__.get("forward"), "func", None) is _forward:
            del m.__dict__["forward"]
    if not enabled or not layers or onednn_status(cpuinfo) != "ready":
        return 0
    reorder = sum(m.weight.numel() * 4 for m in layers) <= reorder_limit
    for m in layers:
        if "forward" in m.__dict__:  # another routing owns this layer
            continue
        m.forward = functools.partial(_forward, m, [_Packed(m.weight, reorder)], reorder)
    return sum(getattr(m.__dict__.get("forward"), "func", None) is _forward for m in layers)
