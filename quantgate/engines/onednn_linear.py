"""Float linear layers of an eager engine on oneDNN with their weights laid out once, not per call.

Two measured losses of torch's own CPU linear (2-core AMD EPYC, family 26 / Zen 5, torch 2.13, MKL
2024.2; ``python bench/onednn_linear.py``):

* **fp32 runs through MKL, which takes its AVX2 code on AMD processors** whatever they support. On that
  host 2,600 rows through a 256x640 layer ran at ~210 GFLOP/s on MKL and ~490 on oneDNN (which torch also
  ships, and which picks its code by instruction set); at a few rows MKL's time grows with every row
  while oneDNN's stays that of reading the weight once (1024x2816 at 4 rows: 477 us against 79). On an
  AMD CPU with AVX2 only (family 25 model 1, Zen 3) both run AVX2 code, yet MKL's few-row calls are
  slow there too (1024x2816 at 2 rows 1,998 us against 226; at one row 575 against 232), while
  oneDNN lost on small layers at a few rows (256x256 at one row 15 us against 46): there only layers
  of at least ``MIN_WEIGHT_AVX2`` weights are routed.
* **bf16 runs on oneDNN, which reorders the weight into its blocked layout on every call**: with the
  weight reordered once, 1024x1024 at one row took 26.9 us against 61.9, the same bits.

So on such CPUs an eager engine's linears call ``torch.ops.mkldnn._linear_pointwise`` on a copy of
their weights reordered once: fp32 layers on AMD CPUs (without AVX-512, only large ones), for calls of
at least ``MIN_WORK`` multiply-adds (rows x in x out; a 256x256 layer at one row stays on MKL: 4.7 us
against 13.0), large fp32 layers on Intel CPUs at four rows or more ("Where", below), bf16 layers on
AMD CPUs that compute bf16 natively, every call.

The trade-offs:

* **Memory**: the copies double the linear weights in memory (14 MB for the fp32 reference model), so a
  model gets them only while they weigh at most ``REORDER_LIMIT`` (512 MiB) in all, the limit within which
  the compiled path freezes (prepacks) a float model's weights too. Past it, fp32 layers multiply on oneDNN
  from their weights as they are (reordered inside each call: on the 291M benchmark model, 1 GB of fp32
  linear weights, 1.3-1.6x MKL's decode speed at one row and 1.8x at eight, against 1.6-2.8x with the
  copies) and bf16 layers keep torch's path. ``LocalEngine(..., onednn=False)`` keeps torch's paths.
* **First calls**: oneDNN builds a primitive for each new (rows, layer shape), ~0.5 ms, then keeps it in
  a cache (1,024 by default, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``): a prompt length seen for the first time
  pays it once per layer shape.
* **Bits**: bf16 outputs are the same as torch's own (tested). fp32 sums run in another order than MKL's,
  so outputs differ in the last bits (~1e-7 relative) and a greedy answer can differ where two tokens
  were a near tie. Neither library gives a row the same bits alone and in a batch (MKL changes its code
  between one, two and four rows), so batched decoding equals one row at a time as before: to the token.
* **Where**: only where measured to pay: on AMD CPUs fp32 with AVX-512 (and without it, large layers),
  bf16 with native bf16; on Intel CPUs, where MKL takes its AVX-512 code, fp32 layers of at least
  ``MIN_WEIGHT_INTEL`` weights in calls of at least ``MIN_ROWS_INTEL`` rows (a 2-core Intel Xeon with
  AMX: 1024x2816 at 4-16 rows 1.6-1.9x MKL with the weights reordered, 1.0-1.25x without; at 1-2 rows
  0.8-0.9x; layers 256-640 wide 0.24-1.05x). bf16 on Intel CPUs (AMX or AVX512-BF16: torch's reorder per
  call is the same code there, but its cost against AMX kernels is not measured) keeps torch's path until
  a host of that kind measures it (``python bench/onednn_linear.py --dtype bf16``).

Not under ``torch.compile`` (inductor lays out its own weights), not with gradients (the op has no
backward), not for a weight changed after the copy was made (its version is checked on each call; the
copy is rebuilt while the weight is still a plain float tensor, otherwise ``F.linear`` runs).
"""

from __future__ import annotations

import functools

import torch

from quantgate.quantize.schemes import cpu_flags, cpu_has_native_bf16, cpu_vendor

__all__ = ["MIN_ROWS_INTEL", "MIN_WEIGHT_AVX2", "MIN_WEIGHT_INTEL", "MIN_WORK", "REORDER_LIMIT",
           "float_linear_bytes", "min_rows", "min_weight", "onednn_status", "use_onednn"]

# Multiply-adds per fp32 call from which oneDNN wins on the AMD host (bench/onednn_linear.py): 256x2057 at
# one row 28.7 vs 34.2 us (MKL), 256x256 at four rows 12.9 vs 12.2, 256x640 at four 15.7 vs 27.5.
MIN_WORK = 1 << 19
# On an AMD CPU without AVX-512, the fewest weight elements an fp32 layer needs to be routed: there
# oneDNN lost on the reference model's small layers at a few rows (256x256 at 1-16 rows 0.33-0.84x MKL,
# 640x256 0.48-0.97x) and won on every layer from 1024x1024 (1.4-8.9x at 1-16 rows, 1.2-1.5x at 164;
# 256x2057 1.06x at one row, 1.8x from two): 2-core AMD EPYC, family 25 model 1, 2026-12-07.
MIN_WEIGHT_AVX2 = 1 << 19
# On an Intel CPU, the fewest weight elements and rows of a routed fp32 call: a 2-core Intel Xeon with AMX
# (2026-12-07, docs/benchmarks.md) ran 1024x2816 and 2816x1024 1.57-1.87x MKL at 4-16 rows and 1.1-1.4x
# at 32-164, 0.78-0.89x at 1-2; 1024x1024 0.93-1.68x; every layer 256 or 640 wide 0.24-1.05x.
MIN_WEIGHT_INTEL = 1 << 21
MIN_ROWS_INTEL = 4
# The most bytes of reordered copies a model gets (module docstring, "Memory").
REORDER_LIMIT = 512 << 20
_SIZES = {torch.float32: 4, torch.bfloat16: 2}


def onednn_status(dtype: torch.dtype = torch.float32, cpuinfo: str = "/proc/cpuinfo") -> str:
    """``"ready"`` where ``dtype`` linears are worth routing to oneDNN on this CPU, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN"
    if dtype not in _SIZES:
        return f"not measured for {dtype}"
    vendor = cpu_vendor(cpuinfo)
    if dtype == torch.bfloat16:
        if not cpu_has_native_bf16(cpuinfo):
            return "this CPU has no native bf16"
        # the cost is torch's, not the CPU's, but only AMD hosts measured it (module docstring, "Where")
        return "ready" if vendor == "AuthenticAMD" else f"not measured on this CPU ({vendor or 'vendor unknown'})"
    if vendor not in ("AuthenticAMD", "GenuineIntel"):
        return f"not measured on this CPU ({vendor or 'vendor unknown'})"
    return "ready"


def min_weight(cpuinfo: str = "/proc/cpuinfo") -> int:
    """The fewest weight elements an fp32 layer needs to be routed on this CPU (``MIN_WEIGHT_INTEL`` on
    Intel, ``MIN_WEIGHT_AVX2`` on AMD without AVX-512, else 0)."""
    if cpu_vendor(cpuinfo) == "GenuineIntel":
        return MIN_WEIGHT_INTEL
    return 0 if "avx512f" in cpu_flags(cpuinfo) else MIN_WEIGHT_AVX2


def min_rows(cpuinfo: str = "/proc/cpuinfo") -> int:
    """The fewest rows of a routed fp32 call on this CPU (``MIN_ROWS_INTEL`` on Intel, else 1)."""
    return MIN_ROWS_INTEL if cpu_vendor(cpuinfo) == "GenuineIntel" else 1


class _Weight:
    """A layer's weight as oneDNN gets it (reordered into its layout, or the weight itself), with the
    weight and version it was made from."""

    __slots__ = ("reorder", "source", "version", "weight")

    def __init__(self, weight: torch.Tensor, reorder: bool):
        self.reorder = reorder
        self.source = weight
        self.version = weight._version
        # the batch size is a hint for the layout: 16 rows (a decode batch) measured best here
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 16) if reorder else weight.detach()


def _float(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of ``module``'s weight if it is a plain 2-D float CPU weight of a ``Linear``, else None."""
    w = getattr(module, "weight", None)
    if (isinstance(module, torch.nn.Linear) and type(w) in (torch.Tensor, torch.nn.Parameter)
            and w.dtype in _SIZES and w.device.type == "cpu" and w.dim() == 2):
        return w.dtype
    return None


def _bytes(layers: list[torch.nn.Module]) -> int:
    return sum(m.weight.numel() * _SIZES[m.weight.dtype] for m in layers)


def float_linear_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s plain float CPU ``nn.Linear`` weights: what a second, reordered copy would cost."""
    return _bytes([m for m in model.modules() if _float(m) is not None])


def _forward(module: torch.nn.Linear, held: list[_Weight], rows: int, x: torch.Tensor) -> torch.Tensor:
    w = module.weight
    n, k = w.shape
    m = x.numel() // max(k, 1)
    if (x.dtype != w.dtype or torch.compiler.is_compiling() or (w.requires_grad and torch.is_grad_enabled())
            or (x.dtype == torch.float32 and (m * k * n < MIN_WORK or m < rows))):
        return torch.nn.functional.linear(x, w, module.bias)
    h = held[0]
    if h.source is not w or h.version != w._version:
        if _float(module) != h.source.dtype:  # quantized or cast since: the layer's own forward
            return torch.nn.functional.linear(x, w, module.bias)
        h = held[0] = _Weight(w, h.reorder)
    return torch.ops.mkldnn._linear_pointwise(x, h.weight, module.bias, "none", [], "")


def use_onednn(model: torch.nn.Module, enabled: bool = True, cpuinfo: str = "/proc/cpuinfo",
               reorder_limit: int = REORDER_LIMIT) -> int:
    """Route ``model``'s float CPU ``nn.Linear`` layers through oneDNN where ``onednn_status`` says it pays
    (``enabled=False``: back to their own forward): on copies of their weights reordered once while those
    weigh at most ``reorder_limit`` bytes in all; past it, fp32 layers on their weights as they are and
    bf16 layers not at all. Returns how many layers now do."""
    layers = [m for m in model.modules() if _float(m) is not None]
    for m in layers:
        if getattr(m.__dict__.get("forward"), "func", None) is _forward:
            del m.__dict__["forward"]
    ready = {d for d in _SIZES if onednn_status(d, cpuinfo) == "ready"} if enabled else set()
    smallest, rows = min_weight(cpuinfo), min_rows(cpuinfo)
    # another routing (quantize.int8_kernel) may own a layer
    layers = [m for m in layers if _float(m) in ready and "forward" not in m.__dict__
              and (m.weight.dtype != torch.float32 or m.weight.numel() >= smallest)]
    reorder = _bytes(layers) <= reorder_limit
    if not reorder:
        layers = [m for m in layers if m.weight.dtype == torch.float32]
    for m in layers:
        m.forward = functools.partial(_forward, m, [_Weight(m.weight, reorder)], rows)
    return len(layers)
