"""A CPU kernel for int4 weight-only linears (``int4wo-gN``), built from C on first use.

Why: torchao 0.18 runs an ``int4wo`` layer on the CPU through torch's ``_weight_int4pack_mm_for_cpu``,
which widens every weight to ``(q - 8) * s + z`` before its multiply: bound by that arithmetic, it read
int4 weights at ~4 GB/s on a 2-core AVX2-only AMD EPYC, where bf16 weights stream at ~12.
``kernels/int4_linear.c`` reads the same packed bytes torchao holds (no copy, no format of our own: a
variant saved before still loads, and the weights stay at 0.27x bf16), sums ``x * q`` over each group
and applies scale and zero once per group: on that CPU 32 2816x1024 layers took 5.0 ms at one row
against torch's 11.5 (and bf16's 14.9), 1.7-2.4x faster than torch's at 2-512 rows; on an Intel Xeon
with AVX-512, where torch's kernel is quicker, 3.3 ms against 5.1 at one row and 1.4-1.6x at 2-512
(``bench/int4_kernel.py``; docs/benchmarks.md, *quantgate's int4 kernel*).

The trade-offs: it needs a C compiler (``$CC`` or ``cc``, with OpenMP) and an x86-64 CPU on which
torch packs int4 for AVX2 or AVX-512 (``torch.backends.cpu.get_cpu_capability()``: the bytes' layout
follows it); a layer whose width is not a whole number of torch's blocks (32 or 64 output features),
whose scales are not bf16, or a prefill of more than ``MAX_ROWS`` rows in all keeps torch's kernel.
Its sums run in another order than torch's, so outputs differ from torchao's in the last bits (a
greedy answer can change where two tokens were a near tie), but each row is summed the same way
whatever else shares the call: batched greedy decoding still equals one row at a time.
``LocalEngine(..., int4_kernel=False)`` keeps torch's kernel everywhere. Each process first checks the
kernel against torch's on a small layer (``_self_check``, about a millisecond) and keeps torch's where
they disagree: the layout is torch's and undocumented, and a CI machine of one instruction set never
runs the other build (both have passed the tests on an Intel Xeon with AVX-512, the AVX2 one under
``ATEN_CPU_CAPABILITY=avx2``).

Compiled graphs call it as the op ``torch.ops.quantgate.int4_linear``, implemented in C++
(``kernels/int4_linear_op.cpp``) where that builds, else by the Python function below, as for
``quantize.int8_kernel``, whose docstring has the cost of each way in.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from quantgate.quantize.native import build_torch_op, compile_library, find_compiler, implement_op, library_path
from quantgate.quantize.schemes import cpu_flags

__all__ = ["BF16_FROM_ROWS", "MAX_ROWS", "WIDEN_BYTES", "build", "build_op", "dequantize", "int4_linear",
           "kernel_status", "op_implementation", "packing", "use_int4_kernel"]

_SOURCE = Path(__file__).with_name("kernels") / "int4_linear.c"
_OP_SOURCE = _SOURCE.with_name("int4_linear_op.cpp")
_FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")


class _Build(NamedTuple):
    needs: frozenset[str]  # CPU flags
    flags: tuple[str, ...]  # beside _FLAGS
    block: int  # output features per block of torch's packing
    max_rows: int  # the most rows in all a call other than a decode step sends through the kernel


# Per packing torch uses (by ATen's CPU capability). MAX_ROWS: against torch's kernel, 32 2816x1024
# layers (bench/int4_kernel.py): on the AVX2-only AMD EPYC 2.3x at 1 row, 1.7-2.0x at 4-512 rows (and 5x
# the bf16 layers, which that CPU emulates); on an Intel Xeon with AVX-512 1.56x at 1 row, 1.40-1.63x at
# 2-512 (the AVX2 build there, by ATEN_CPU_CAPABILITY=avx2: 1.6-1.9x at 1-32). An AMD EPYC Zen 5 ran a
# probe of the same arithmetic at 1.07-1.14x at 8-16 rows and was measured no further.
_BUILDS = {"AVX512": _Build(frozenset({"avx512f"}), ("-mavx512f",), 64, 512),
           "AVX2": _Build(frozenset({"avx2", "fma"}), (), 32, 512)}


def packing() -> str | None:
    """Which of torch's int4 CPU packings this process uses (``"AVX512"``, ``"AVX2"``), or None for one
    the kernel does not read."""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _BUILDS else None


MAX_ROWS = _BUILDS[packing() or "AVX2"].max_rows

# From how many rows a call that is not a decode step widens the layer's weights to bf16 (as two bf16
# matrices whose sum is within 2^-17 of them: ``dequantize``) and multiplies them on the CPU's AMX tiles,
# where it has them (0: never). On a 2-core Intel Xeon with AMX, 32 1024x2816 layers (bench/int4_kernel.py
# --prefill against the kernel's decode rows): level with the kernel at 64 rows, 1.4x at 96, 1.75x at
# 128, 2.85x at 512 (docs/benchmarks.md). One bf16 matrix instead of two was 2.5x faster again at 512
# rows, but moved the results by ~1e-3, enough for a prompt's prefill to depend on what shared its call.
BF16_FROM_ROWS = 80 if packing() == "AVX512" and "amx_bf16" in cpu_flags() else 0
# The most bytes of widened weights at a time: a wide layer widens a slice of its output columns at a
# time (a 4096x128256 head would otherwise take 2 GiB for the length of the call).
WIDEN_BYTES = 64 << 20


def build(capability: str | None = None, cpuinfo: str = "/proc/cpuinfo", compiler: str | None = None,
          cache: Path | None = None) -> tuple[Any, str]:
    """Build (or find in ``cache``) and load the kernel for ``capability``'s packing (default: this
    process's): (the callable or None, why not)."""
    capability = capability or packing()
    if capability not in _BUILDS:
        found = torch.backends.cpu.get_cpu_capability()
        return None, f"torch packs int4 for {found!r} here, which the kernel does not read"
    needs, extra, block, _ = _BUILDS[capability]
    if not needs <= cpu_flags(cpuinfo):
        return None, f"this CPU lacks {'/'.join(sorted(needs - cpu_flags(cpuinfo)))} (by {cpuinfo})"
    found, why = find_compiler(compiler, "CC", "cc", "C")
    if found is None:
        return None, why
    flags = (*_FLAGS, *extra)
    target = library_path("int4_linear", _SOURCE.read_bytes() + " ".join(flags).encode(), cache)
    why = compile_library([found, *flags, str(_SOURCE)], target)
    if why:
        return None, why
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        return None, f"loading {target} failed: {e}"
    if lib.qg_int4_block() != block:  # the build and torch's packing must agree on the layout
        return None, f"{target} reads blocks of {lib.qg_int4_block()} columns, torch packs {block}"
    fn = _Kernel(lib)
    if capability == packing():
        why = _self_check(fn, block)
    return (None, why) if why else (fn, "")


class _Kernel:
    """The library's entry points: calling it runs ``qg_int4_linear``; ``dequant`` is ``qg_int4_dequant``,
    ``widen_columns`` ``qg_int4_widen_columns``."""

    def __init__(self, lib: Any) -> None:
        self.linear = lib.qg_int4_linear
        self.linear.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4 + [ctypes.c_int, ctypes.c_int64]
        self.linear.restype = ctypes.c_int
        self.dequant = lib.qg_int4_dequant
        self.dequant.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 6
        self.dequant.restype = ctypes.c_int
        self.widen_columns = lib.qg_int4_widen_columns
        self.widen_columns.argtypes = [ctypes.c_int64, ctypes.c_int64]
        self.widen_columns.restype = ctypes.c_int64

    def __call__(self, *args: Any) -> int:
        return self.linear(*args)


def _self_check(fn: Any, block: int) -> str:
    """Why the kernel disagrees with torch's on a small packed layer, or "".

    The kernel reads bytes in a layout torch does not document, with code a CI machine of one
    instruction set never runs for the other; a wrong kernel would not fail, it would answer wrongly.
    So each process compares it once with torch's kernel (1 and 5 rows of a 2-block, 4-group layer;
    about a millisecond) and keeps torch's kernel where they disagree.
    """
    n, k, group = 2 * block, 256, 64
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
    qdata = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scale_and_zero = (torch.rand(k // group, n, 2, generator=gen) * 0.1).bfloat16()
    for rows in (1, 5):
        x = torch.randn(rows, k, generator=gen).bfloat16()
        expected = torch.ops.aten._weight_int4pack_mm_for_cpu(x, qdata, group, scale_and_zero).float()
        y = torch.empty(rows, n, dtype=torch.bfloat16)
        fn(x.data_ptr(), qdata.data_ptr(), scale_and_zero.data_ptr(), y.data_ptr(), rows, n, k, group, 1, 1)
        error = float((y.float() - expected).abs().max())
        # both round to bf16 (8 bits): allow a few units of the last place of the largest output
        if not error <= float(expected.abs().max()) * 2**-6:
            return f"the kernel disagrees with torch's on a test layer ({rows} rows: off by {error:.3g})"
    return ""


def build_op(compiler: str | None = None, cache: Path | None = None) -> tuple[Path | None, str]:
    """Build (or find in ``cache``) the op's C++ CPU implementation for this process's packing."""
    capability = packing()
    if capability is None:
        return None, f"no kernel for torch's {torch.backends.cpu.get_cpu_capability()!r} packing"
    return build_torch_op("int4_linear_op", _OP_SOURCE, _SOURCE,
                          (*_FLAGS, *_BUILDS[capability].flags, f"-DQG_MAX_ROWS={MAX_ROWS}",
                           f"-DQG_BF16_FROM_ROWS={BF16_FROM_ROWS}", f"-DQG_WIDEN_BYTES={WIDEN_BYTES}"), compiler,
                          cache)


@functools.cache
def _library() -> tuple[Any, str]:
    """``build()`` once per process: the kernel is a process-wide resource, like torch's own ops."""
    return build()


def kernel_status() -> str:
    """``"ready"``, or why the kernel cannot run here (builds it on first call)."""
    fn, why = _library()
    return "ready" if fn is not None else why


def _decode(x: torch.Tensor) -> bool:
    """Whether ``x`` holds one position per sequence (a decode step, whatever the batch)."""
    return x.dim() >= 3 and x.shape[-2] == 1


def _takes(x: torch.Tensor, k: int) -> bool:
    """Whether the kernel runs ``x``: one position per sequence, or few rows in all."""
    return _decode(x) or x.numel() <= MAX_ROWS * k


def dequantize(qdata: torch.Tensor, scale_and_zero: torch.Tensor, group: int, columns: slice = slice(None)
               ) -> torch.Tensor:
    """The weights torch packed as ``qdata``, transposed, as two bf16 matrices stacked, ``[2K, N]``: ``hi``,
    torch's fp32 ``(q - 8) * s + z`` rounded to bf16, then ``lo``, the rest rounded to bf16 (their sum is
    within 2^-17 of the fp32 weights), so that ``[x, x] @ dequantize(...)`` is ``x @ W.T`` on bf16 matrix
    hardware; ``columns``: only those output columns (whole blocks of torch's packing). Needs the AVX-512
    build."""
    fn = _library()[0]
    n, k = qdata.shape[0], qdata.shape[1] * 2
    n0, n1, _ = columns.indices(n)
    qdata, scale_and_zero = qdata.contiguous(), scale_and_zero.contiguous()  # held while C reads them
    wt = torch.empty(2 * k, n1 - n0, dtype=torch.bfloat16)
    if fn is None or fn.dequant(qdata.data_ptr(), scale_and_zero.data_ptr(), wt.data_ptr(), n, k, group, n0, n1,
                                torch.get_num_threads()):
        raise RuntimeError(f"int4 weights to bf16 need the kernel's AVX-512 build ({kernel_status()})")
    return wt


def int4_linear(x: torch.Tensor, qdata: torch.Tensor, scale_and_zero: torch.Tensor, group: int) -> torch.Tensor:
    """``x @ W.T`` for the int4 weight torch packed as ``qdata`` ([N, K / 2] bytes) with ``scale_and_zero``
    ([K / group, N, 2] bf16), in ``x``'s dtype.

    Through the C kernel for fp32 or bf16 CPU ``x`` that holds one position per sequence (a decode
    step, whatever the batch) or at most ``MAX_ROWS`` rows in all, with bf16 scales; bf16 ``x`` of at
    least ``BF16_FROM_ROWS`` rows that is not a decode step (a prefill, where the CPU has AMX) through
    the weights widened to pairs of bf16 matrices (``dequantize``), ``WIDEN_BYTES`` of them at a time;
    otherwise through torch's kernel.
    Also the op ``torch.ops.quantgate.int4_linear``, which ``torch.compile`` calls as it is.
    """
    n, k = qdata.shape[0], qdata.shape[1] * 2
    rows = x.reshape(-1, k)
    fn = _library()[0]
    ours = (fn is not None and x.dtype in (torch.float32, torch.bfloat16) and scale_and_zero.dtype == torch.bfloat16
            and x.device.type == "cpu")
    rows = rows if rows.is_contiguous() else rows.contiguous()
    if (ours and BF16_FROM_ROWS and x.dtype == torch.bfloat16 and not _decode(x)
            and rows.shape[0] >= BF16_FROM_ROWS):
        doubled, step = torch.cat([rows, rows], 1), fn.widen_columns(k, WIDEN_BYTES)
        parts = [torch.mm(doubled, dequantize(qdata, scale_and_zero, group, slice(n0, n0 + step)))
                 for n0 in range(0, n, step)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts, 1)).reshape(*x.shape[:-1], n)
    if not ours or not _takes(x, k):
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, qdata, group, scale_and_zero)
        return y.reshape(*x.shape[:-1], n)
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype)
    if fn(rows.data_ptr(), qdata.data_ptr(), scale_and_zero.data_ptr(), y.data_ptr(), rows.shape[0], n, k, group,
          int(x.dtype == torch.bfloat16), torch.get_num_threads()):
        raise MemoryError(f"int4_linear: no memory for {rows.shape[0]} rows of {k}")
    return y


# The op compiled graphs call; the namespace is int8_kernel's, so this library only adds to it.
_OPS = torch.library.Library("quantgate", "FRAGMENT")
_OPS.define("int4_linear(Tensor x, Tensor qdata, Tensor scale_and_zero, int group) -> Tensor")


@functools.cache
def op_implementation() -> str:
    """Give the op its CPU implementation, once per process: ``"c++"`` where ``build_op`` succeeds and
    the C kernel runs here, else the Python one (``"python: <why>"``)."""
    return implement_op("int4_linear", _library()[1], build_op, _OPS, int4_linear)


@torch.library.register_fake("quantgate::int4_linear")
def _(x: torch.Tensor, qdata: torch.Tensor, scale_and_zero: torch.Tensor, group: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))


def _fits(weight: Any, block: int) -> bool:
    """Whether ``weight`` is an int4 weight-only tensor the kernel reads: torchao's CPU packing, bf16
    scales, no activation scaling or quantization, whole blocks of output features."""
    if type(weight) is torch.Tensor or type(weight) is torch.nn.Parameter:
        return False  # a float model: no torchao import (seconds, the first time) for nothing
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor

    if not isinstance(weight, Int4OpaqueTensor) or weight.device.type != "cpu":
        return False
    if weight.act_pre_scale is not None or getattr(weight, "act_mapping_type", None) is not None:
        return False
    n, k = weight.shape
    group = weight.block_size[1]
    return (weight.block_size[0] == 1 and group % 2 == 0 and k % group == 0 and n % block == 0
            and tuple(weight.qdata.shape) == (n, k // 2) and weight.qdata.dtype == torch.uint8
            and weight.scale_and_zero.dtype == torch.bfloat16
            and tuple(weight.scale_and_zero.shape) == (k // group, n, 2) and weight.scale_and_zero.is_contiguous()
            and weight.qdata.is_contiguous())


def _forward(module: torch.nn.Linear, eager: Callable[..., torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w = module.weight
    group = w.block_size[1]
    if torch.compiler.is_compiling():
        y = torch.ops.quantgate.int4_linear(x, w.qdata, w.scale_and_zero, group)
    else:
        y = eager(x, w.qdata, w.scale_and_zero, group)
    return y if module.bias is None else y + module.bias


def use_int4_kernel(model: torch.nn.Module, enabled: bool = True) -> int:
    """Route every int4 weight-only ``nn.Linear`` of ``model`` that the kernel reads through ``int4_linear``
    (``enabled=False``: back to torchao's path). Returns how many layers now use it: 0 when the kernel
    cannot run here (``kernel_status`` says why) or the model has no such layer. The weights are not
    touched; only each layer's ``forward``."""
    capability = packing()
    block = _BUILDS[capability].block if capability else 0
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and block and _fits(m.weight, block)]
    if not enabled or not layers or _library()[0] is None:
        for m in layers:
            m.__dict__.pop("forward", None)
        return 0
    eager = torch.ops.quantgate.int4_linear.default if op_implementation() == "c++" else int4_linear
    for m in layers:
        m.forward = functools.partial(_forward, m, eager)
    return len(layers)
