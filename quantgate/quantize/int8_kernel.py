"""A CPU kernel for the decode steps of int8 weight-only linears, built from C on first use.

Why: torchao 0.18 runs an int8 weight-only linear with fp32 activations as ``mm(x, w.to(fp32)) * s``,
which widens the whole weight on every call, and torch's own ``_weight_int8pack_mm`` reads int8 at
~1 GB/s on an AVX2-only CPU. A decode step reads every weight once, so it is bound by how fast the
weights are read: ``kernels/int8_linear.c`` widens 32 int8 weights at a time in registers and
multiplies them into two activation rows at once (on a CPU with AVX-512, into four rows, and two
output columns share each block of activations past 8 rows; the sums and their order stay the same,
so both builds give the same bits). On a 2-core AMD EPYC without AVX-512
(docs/benchmarks.md, *The batch-1 targets on the AVX2-only AMD host, and quantgate's int8 kernel*),
twelve 2816x1024 layers at one row: 2.97 ms against 8.8-22 ms on torchao's path and 8.6 ms for the
same layers in fp32; a 291M Llama decodes 2.9x faster compiled than on torchao's path.

The trade-offs: it needs a C compiler (``$CC`` or ``cc``, the one ``torch.compile``'s CPU backend also
needs, with OpenMP) and an x86-64 CPU with AVX2 and FMA; without them, for bf16 activations, for a
prefill of more than ``MAX_ROWS`` rows in all (there a matrix multiply wins; a shorter one takes the
kernel: a 48-token prompt prefilled 1.6x faster so on the AVX-512 host) and for an asymmetric or
group-wise weight, layers keep torchao's path. It sums each row the same way whatever else shares the
call, so batched greedy decoding still equals one row at a time, but in another order than ``mm``:
outputs differ from torchao's in the last bits (relative error ~5e-7), so a greedy answer can differ
from torchao's where two tokens were a near tie. ``LocalEngine(..., int8_kernel=False)`` keeps
torchao's path everywhere.

Compiled graphs call the kernel as the op ``torch.ops.quantgate.int8_linear``, whose CPU
implementation is registered from C++ (``kernels/int8_linear_op.cpp``, built against the installed
torch with the system C++ compiler) where that builds, since a call through torch's dispatcher into
Python costs about three times one into C++ (``op_implementation`` has the figures); elsewhere the
Python function below is registered instead, with the same arithmetic.

The compiled libraries are cached as ``quantize.native`` says.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from quantgate.quantize.native import build_torch_op, compile_library, find_compiler, implement_op, library_path
from quantgate.quantize.schemes import cpu_flags

__all__ = ["MAX_ROWS", "build", "build_op", "int8_linear", "kernel_isa",
           "kernel_status", "op_implementation", "use_int8_kernel"]

_SOURCE = Path(__file__).with_name("kernels") / "int8_linear.c"
_OP_SOURCE = _SOURCE.with_name("int8_linear_op.cpp")
# -ffp-contract=off: the scalar tail is summed the same way in every row (int8_linear.c says why)
_FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")
# Per build: its extra flags (which also name the cached file: the build is for the CPU it runs on), and
# the most rows in all that a call other than a decode step (one position per sequence, taken at any
# batch) sends through the kernel, beyond which a matrix multiply wins. Twelve 2816x1024 layers at 32
# rows took 20.5 ms in the AVX-512 build, 35.7 on torchao's path; at 64, 39.5 against 47.8; at 256,
# 123-130 against 107-117 (K=2816). The AVX2 build holds 2 rows to a tile, not 4, and was measured up to 16.
_BUILDS = {"AVX-512": (("-mavx512f",), 64), "AVX2": ((), 16)}


def kernel_isa(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The instruction set the kernel is built for on this CPU: ``"AVX-512"`` or ``"AVX2"``."""
    return "AVX-512" if "avx512f" in cpu_flags(cpuinfo) else "AVX2"


def _build_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    return (*_FLAGS, *_BUILDS[kernel_isa(cpuinfo)][0])


MAX_ROWS = _BUILDS[kernel_isa()][1]


def build(cpuinfo: str = "/proc/cpuinfo", compiler: str | None = None, cache: Path | None = None) -> tuple[Any, str]:
    """Build (or find in ``cache``) and load the kernel: (the callable or None, why not)."""
    if not {"avx2", "fma"} <= cpu_flags(cpuinfo):
        return None, f"this CPU lacks AVX2/FMA (by {cpuinfo})"
    found, why = find_compiler(compiler, "CC", "cc", "C")
    if found is None:
        return None, why
    flags = _build_flags(cpuinfo)
    target = library_path("int8_linear", _SOURCE.read_bytes() + " ".join(flags).encode(), cache)
    why = compile_library([found, *flags, str(_SOURCE)], target)
    if why:
        return None, why
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        return None, f"loading {target} failed: {e}"
    fn = lib.qg_int8_linear
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4
    fn.restype = None
    return fn, ""


def build_op(compiler: str | None = None, cache: Path | None = None) -> tuple[Path | None, str]:
    """Build (or find in ``cache``) the op's C++ CPU implementation against this torch: (the library, or None
    and why not). Load it with ``torch.ops.load_library``; ``op_implementation`` does, once per process."""
    return build_torch_op("int8_linear_op", _OP_SOURCE, _SOURCE, (*_build_flags(), f"-DQG_MAX_ROWS={MAX_ROWS}"),
                          compiler, cache)


@functools.cache
def _library() -> tuple[Any, str]:
    """``build()`` once per process: the kernel is a process-wide resource, like torch's own ops."""
    return build()


def kernel_status() -> str:
    """``"ready"``, or why the kernel cannot run here (builds it on first call)."""
    fn, why = _library()
    return "ready" if fn is not None else why


def int8_linear(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ (qdata * scale).T`` for an int8 ``qdata`` (N x K) and one fp32 scale per output row.

    Through the C kernel for fp32 CPU ``x`` that holds one position per sequence (``batch x 1 x K``: a
    decode step, whatever the batch) or at most ``MAX_ROWS`` rows in all (a short prefill); otherwise
    (a longer prefill) as torchao computes it. Choosing decode steps by positions rather than by rows
    keeps a sequence on the same arithmetic alone or in a batch; a prefill's bits depend on its batch
    either way (``mm``'s do too). Also the op ``torch.ops.quantgate.int8_linear``, which
    ``torch.compile`` calls as it is instead of tracing into it.
    """
    n, k = qdata.shape
    fn = _library()[0]
    if fn is None or x.dtype != torch.float32 or not _takes(x, k) or x.device.type != "cpu":
        rows = x.reshape(-1, k)
        return ((rows @ qdata.t().to(x.dtype)) * scale.reshape(1, n).to(x.dtype)).reshape(*x.shape[:-1], n)
    # called ~140 times a decode step: nothing copied that is already laid out right
    rows = x.reshape(-1, k)
    rows = rows if rows.is_contiguous() else rows.contiguous()
    qdata = qdata if qdata.is_contiguous() else qdata.contiguous()
    scale = scale if scale.is_contiguous() else scale.contiguous()
    y = torch.empty((*x.shape[:-1], n), dtype=torch.float32)
    fn(rows.data_ptr(), qdata.data_ptr(), scale.data_ptr(), y.data_ptr(), rows.shape[0], n, k, torch.get_num_threads())
    return y


# The op compiled graphs call, defined once per process like any torch op (torch.library's low-level
# API: ``custom_op`` would add its own Python wrapper). ``op_implementation`` gives it its CPU code.
_OPS = torch.library.Library("quantgate", "DEF")
_OPS.define("int8_linear(Tensor x, Tensor qdata, Tensor scale) -> Tensor")


@functools.cache
def op_implementation() -> str:
    """Give the op its CPU implementation, once per process: ``"c++"`` where ``build_op`` succeeds and
    the C kernel runs here, else the Python one (``"python: <why>"``).

    Why C++: a compiled decode step of a 291M Llama calls the op ~140 times. One row through a 64x64
    layer cost 9.7 us a call through the dispatcher into the Python implementation, 3.4 us into the
    C++ one, and 7.1 us as a direct ctypes call (2-core AMD EPYC with ``avx512_bf16``; on the AVX2-only
    one 19 us into Python, 5.3 into a C++ prototype, 12 by ctypes). The price: a C++ compiler and
    torch's headers (shipped in its wheel), and ~8 s to build, once per torch version and source.
    """
    return implement_op("int8_linear", _library()[1], build_op, _OPS, int8_linear)


@torch.library.register_fake("quantgate::int8_linear")
def _(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))


def _fits(weight: Any) -> bool:
    """Whether ``weight`` is a symmetric per-row int8 weight-only tensor of an fp32 model on the CPU.

    A bf16 model's layers are left alone, not routed through the op to fall back inside it: there
    inductor rewrites torchao's ``mm(x, w.to(bf16)) * s`` into torch's ``_weight_int8pack_mm``, which
    an opaque op hides from it (a 291M Llama on an ``avx512_bf16`` CPU decoded compiled at 14.1 tok/s
    through the op against 48.9 on torchao's path).
    """
    if type(weight) is torch.Tensor or type(weight) is torch.nn.Parameter:
        return False  # a float model: no torchao import (seconds, the first time) for nothing
    from torchao.quantization import Int8Tensor

    if not isinstance(weight, Int8Tensor) or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if weight.act_quant_kwargs is not None or weight.act_pre_scale is not None:
        return False
    n, k = weight.qdata.shape
    zero = weight.zero_point
    return (weight.qdata.dtype == torch.int8 and list(weight.block_size) == [1, k]
            and weight.scale.dtype == torch.float32 and weight.scale.numel() == n
            and (zero is None or not bool(zero.any())))


def _takes(x: torch.Tensor, k: int) -> bool:
    """Whether ``int8_linear`` runs ``x`` through the kernel: one position per sequence, or few rows in all."""
    return x.dim() >= 3 and x.shape[-2] == 1 or x.numel() <= MAX_ROWS * k


def _forward(module: torch.nn.Linear, eager: Callable[..., torch.Tensor], onednn: bool,
             x: torch.Tensor) -> torch.Tensor:
    w = module.weight
    if torch.compiler.is_compiling():
        y = torch.ops.quantgate.int8_linear(x, w.qdata, w.scale)
    elif onednn and x.dtype == torch.float32 and not _takes(x, w.qdata.shape[1]):
        # a long prefill: the same product as ``int8_linear``'s, on oneDNN rather than MKL where MKL loses
        # (engines.onednn_linear; 2x on 128-512 rows of 1024x2816 on an AMD CPU with AVX-512)
        y = torch.ops.mkldnn._linear_pointwise(x, w.qdata.to(torch.float32), None, "none", [], "")
        y = y * w.scale.reshape(w.qdata.shape[0])
    else:
        y = eager(x, w.qdata, w.scale)
    return y if module.bias is None else y + module.bias


def use_int8_kernel(model: torch.nn.Module, enabled: bool = True, onednn: bool = True) -> int:
    """Route every symmetric per-row int8 weight-only ``nn.Linear`` of ``model`` through ``int8_linear``
    (``enabled=False``: back to torchao's path). With ``onednn``, an eager prefill too long for the kernel
    multiplies on oneDNN where ``engines.onednn_linear.onednn_status`` says it beats MKL.

    Returns how many layers now use it: 0 when the kernel cannot run here (``kernel_status`` says why)
    or the model has no such layer. The weights are not touched; only each layer's ``forward``.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and _fits(m.weight)]
    if not enabled or not layers or _library()[0] is None:
        for m in layers:
            m.__dict__.pop("forward", None)
        return 0
    # eager calls: the C++ op through the dispatcher beats ctypes, which beats the dispatcher into Python
    # (``op_implementation``'s docstring)
    eager = torch.ops.quantgate.int8_linear.default if op_implementation() == "c++" else int8_linear
    from quantgate.engines.onednn_linear import min_weight, onednn_status

    onednn = onednn and onednn_status(torch.float32) == "ready"
    smallest = min_weight()
    for m in layers:
        m.forward = functools.partial(_forward, m, eager, onednn and m.weight.qdata.numel() >= smallest)
    return len(layers)
