"""quantgate's CPU kernel for int4 weight-only linears (quantgate.quantize.int4_kernel).

Its output is held to torch's own int4 CPU kernel on the same packed weights (the thing it replaces),
at every row count around its tiles and limits, for each group size; a decode row must come out the
same alone or in any batch; the build is tried against a missing compiler, a CPU without the
instructions, and a kernel that computes the wrong thing.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.models.loading import load_model
from quantgate.quantize import int4_kernel
from quantgate.quantize.apply import quantize_model
from quantgate.quantize.int4_kernel import (
    BF16_FROM_ROWS,
    MAX_ROWS,
    build,
    build_op,
    dequantize,
    int4_linear,
    kernel_status,
    op_implementation,
    packing,
    use_int4_kernel,
)
from quantgate.quantize.schemes import cpu_flags, get_scheme

ready = pytest.mark.skipif(kernel_status() != "ready", reason=f"int4 kernel unavailable: {kernel_status()}")
BLOCK = 64 if packing() == "AVX512" else 32


def _quantized(in_features: int, out_features: int, group: int = 32, bias: bool = False,
               dtype: torch.dtype = torch.bfloat16) -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(in_features, out_features, bias=bias)).to(dtype)
    quantize_model(model, get_scheme(f"int4wo-g{group}"), device="cpu")
    return model


def _torchs(x: torch.Tensor, w: Any) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, w.qdata, w.block_size[1], w.scale_and_zero)
    return y.reshape(*x.shape[:-1], -1)


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal up to the sums' order and the bf16 rounding of both outputs (8 bits of mantissa)."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    error = float((ours.float() - theirs.float()).abs().max())
    assert error <= float(theirs.float().abs().max()) * 2**-6, error


def _same_but_last_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal but for the last bf16 bit of a few outputs: fp32 sums in another order, rounded once (and an
    output that cancels to near 0 off by as little in absolute terms)."""
    a, b = a.float(), b.float()
    assert bool(((a - b).abs() <= b.abs() * 2**-7 + float(b.abs().max()) * 2**-12).all())  # 2^-7: one bf16 ulp
    assert float((a != b).float().mean()) < 0.01


@ready
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, MAX_ROWS, MAX_ROWS + 1])  # 2-D input: rows
@pytest.mark.parametrize(("group", "in_features", "blocks"), [(32, 256, 3), (64, 384, 2), (128, 256, 1)])
def test_kernel_matches_torchs_int4_kernel(rows: int, group: int, in_features: int, blocks: int) -> None:
    model = _quantized(in_features, blocks * BLOCK, group, bias=True)  # an odd number of blocks: one left over
    x = torch.randn(rows, in_features).bfloat16()
    with torch.no_grad():
        assert use_int4_kernel(model, enabled=False) == 0
        reference = model(x)
        assert use_int4_kernel(model) == 1
        out = model(x)
    _close(out, reference)
    if rows > MAX_ROWS and not BF16_FROM_ROWS:  # a long prefill takes torch's kernel itself (without AMX)
        assert torch.equal(out, reference)


@ready
@pytest.mark.parametrize("group", [32, 128])
def test_a_decode_row_comes_out_the_same_alone_or_in_any_batch(group: int) -> None:
    w = _quantized(256, 3 * BLOCK, group)[0].weight
    x = torch.randn(37, 1, 256).bfloat16()  # 37 sequences, one new position each: odd, tiles of every size
    batched = int4_linear(x, w.qdata, w.scale_and_zero, group)
    _close(batched, _torchs(x, w))
    for size in (1, 2, 3, 4, 5, 6, 7, 9):
        for start in range(0, 37 - size, 7):
            part = int4_linear(x[start:start + size], w.qdata, w.scale_and_zero, group)
            assert torch.equal(part, batched[start:start + size]), (size, start)


@ready
def test_fp32_activations_give_the_bf16_results_before_rounding() -> None:
    w = _quantized(256, 2 * BLOCK)[0].weight
    x = torch.randn(5, 1, 256).bfloat16()
    wide = int4_linear(x.float(), w.qdata, w.scale_and_zero, 32)
    assert wide.dtype == torch.float32
    assert torch.equal(wide.bfloat16(), int4_linear(x, w.qdata, w.scale_and_zero, 32))  # rounded as torch rounds


@ready
def test_tensors_off_the_cpu_never_reach_the_c_code() -> None:
    w = _quantized(64, BLOCK)[0].weight
    x = torch.empty(3, 1, 64, device="meta", dtype=torch.bfloat16)
    y = int4_linear(x, w.qdata.to("meta"), w.scale_and_zero.to("meta"), 32)
    assert y.device.type == "meta" and y.shape == (3, 1, BLOCK)


@ready
def test_leading_dimensions_and_non_contiguous_rows_are_kept() -> None:
    w = _quantized(64, 2 * BLOCK)[0].weight
    x = torch.randn(2, 3, 1, 128).bfloat16()[..., ::2]  # (2, 3, 1, 64), strided: one position, two leading dims
    y = int4_linear(x, w.qdata, w.scale_and_zero, 32)
    assert y.shape == (2, 3, 1, 2 * BLOCK)
    _close(y, _torchs(x, w))


@ready
def test_layers_it_cannot_take_keep_torchs_kernel() -> None:
    int8 = torch.nn.Sequential(torch.nn.Linear(64, BLOCK, bias=False))
    quantize_model(int8, get_scheme("int8wo"), device="cpu")
    assert use_int4_kernel(int8) == 0
    fp32 = _quantized(64, BLOCK, dtype=torch.float32)  # an fp32 model: its scales are fp32
    assert use_int4_kernel(fp32) == 0 and "forward" not in fp32[0].__dict__
    partial = _quantized(64, BLOCK + 16)  # out_features past a whole number of torch's blocks
    assert use_int4_kernel(partial) == 0 and "forward" not in partial[0].__dict__
    assert use_int4_kernel(torch.nn.Sequential(torch.nn.Linear(64, BLOCK))) == 0  # nothing quantized


@ready
@pytest.mark.parametrize("shape", [(3, 1, 128), (1, 128), (MAX_ROWS, 128), (MAX_ROWS + 1, 128), (2, 3, 128)])
def test_the_cpp_op_computes_what_the_python_one_does(shape: tuple[int, ...]) -> None:
    if op_implementation() != "c++":
        pytest.skip(f"the op's C++ implementation did not build here: {op_implementation()}")
    w = _quantized(128, 2 * BLOCK)[0].weight
    x = torch.randn(*shape[:-1], 2 * shape[-1]).bfloat16()[..., ::2]  # strided, as a view of activations can be
    ours = torch.ops.quantgate.int4_linear(x, w.qdata, w.scale_and_zero, 32)
    assert ours.dtype == torch.bfloat16 and ours.shape == (*shape[:-1], 2 * BLOCK)
    assert torch.equal(ours, int4_linear(x, w.qdata, w.scale_and_zero, 32))  # same C kernel, same fallback


amx = pytest.mark.skipif(not BF16_FROM_ROWS, reason="prefills widen int4 weights to bf16 only on CPUs with AMX")


@ready
@pytest.mark.skipif(packing() != "AVX512", reason="the AVX-512 build widens int4 weights to bf16")
@pytest.mark.parametrize("group", [32, 128])
def test_weights_widen_to_bf16_as_torch_computes_them(group: int) -> None:
    torch.manual_seed(0)
    q = torch.randint(0, 16, (3 * BLOCK, 256), dtype=torch.int32)
    qdata = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    sz = (torch.randn(256 // group, 3 * BLOCK, 2) * 0.05).bfloat16()
    s, z = (sz[..., i].float().repeat_interleave(group, 0) for i in (0, 1))  # [K, N]
    w = (q.T.float() - 8) * s + z
    hi, lo = dequantize(qdata, sz, group).split(256)
    assert torch.equal(hi, w.bfloat16()) and torch.equal(lo, (w - hi.float()).bfloat16())
    assert float((hi.float() + lo.float() - w).abs().max()) <= float(w.abs().max()) * 2**-17


@amx
@pytest.mark.parametrize("shape", [(BF16_FROM_ROWS, 256), (2, BF16_FROM_ROWS + 3, 256)])
def test_a_long_prefill_multiplies_the_weights_widened_to_bf16(shape: tuple[int, ...]) -> None:
    w = _quantized(256, 2 * BLOCK, 32)[0].weight
    x = torch.randn(*shape).bfloat16()
    ours = int4_linear(x, w.qdata, w.scale_and_zero, 32)
    rows = x.reshape(-1, 256)
    widened = torch.mm(torch.cat([rows, rows], 1), dequantize(w.qdata, w.scale_and_zero, 32)).reshape(ours.shape)
    assert torch.equal(ours, widened)
    op_implementation()  # the op's CPU implementation, C++ where it builds: the same choice, the same result
    assert torch.equal(torch.ops.quantgate.int4_linear(x, w.qdata, w.scale_and_zero, 32), ours)
    # as precise as the kernel: the same outputs as decode rows through it, but for one last bit at most
    _same_but_last_bits(ours, int4_linear(x.reshape(-1, 1, 256), w.qdata, w.scale_and_zero, 32).reshape(ours.shape))
    step = torch.randn(BF16_FROM_ROWS + 5, 1, 256).bfloat16()  # a decode step of a large batch keeps the kernel
    assert torch.equal(int4_linear(step, w.qdata, w.scale_and_zero, 32)[3:4],
                       int4_linear(step[3:4], w.qdata, w.scale_and_zero, 32))


@amx
def test_a_wide_layer_widens_a_slice_of_columns_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = int4_kernel.WIDEN_BYTES // (4 * 1024)  # columns a slice: 2 x 1024 rows of 2 bytes, whole blocks
    assert int4_kernel._library()[0].widen_columns(1024, int4_kernel.WIDEN_BYTES) == slices
    w = _quantized(1024, slices + BLOCK, 128)[0].weight  # one slice and one block more: two slices
    x = torch.randn(BF16_FROM_ROWS, 1024).bfloat16()
    op_implementation()
    ours = torch.ops.quantgate.int4_linear(x, w.qdata, w.scale_and_zero, 128)
    assert torch.equal(int4_linear(x, w.qdata, w.scale_and_zero, 128), ours)  # the Python path cuts the same
    monkeypatch.setattr(int4_kernel, "WIDEN_BYTES", 1 << 40)  # in one piece
    _same_but_last_bits(int4_linear(x, w.qdata, w.scale_and_zero, 128), ours)
    monkeypatch.setattr(int4_kernel, "WIDEN_BYTES", 4 * 1024 * BLOCK)  # a block at a time
    _same_but_last_bits(int4_linear(x, w.qdata, w.scale_and_zero, 128), ours)
    kernel = int4_linear(x[:, None], w.qdata, w.scale_and_zero, 128)[:, 0]  # decode rows: the C kernel
    _same_but_last_bits(ours, kernel)


_OTHER_BUILD = """
import torch
from quantgate.quantize.int4_kernel import int4_linear, kernel_status, packing
assert packing() == "AVX2" and kernel_status() == "ready", (packing(), kernel_status())
torch.manual_seed(0)
q = torch.randint(0, 16, (96, 256), dtype=torch.int32)
qdata = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
sz = (torch.rand(8, 96, 2) * 0.1).bfloat16()
x = torch.randn(11, 1, 256).bfloat16()
ours = int4_linear(x, qdata, sz, 32).float()
theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(11, 256), qdata, 32, sz).float().reshape(11, 1, 96)
assert float((ours - theirs).abs().max()) <= float(theirs.abs().max()) * 2**-6
assert all(torch.equal(int4_linear(x[i:i + 3], qdata, sz, 32).float(), ours[i:i + 3]) for i in range(8))
print("ok")
"""


@ready
def test_the_avx2_build_also_runs_where_torch_packs_for_avx512() -> None:
    """On an AVX-512 machine, the AVX2 build gets run too: torch packs for AVX2 when told to
    (``ATEN_CPU_CAPABILITY=avx2``), so CI on either kind of host checks both builds where it can."""
    if packing() != "AVX512" or not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("only where torch packs for AVX-512 on a CPU that has AVX2 too")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run([sys.executable, "-c", _OTHER_BUILD], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_build_says_why_not_without_a_compiler_the_instructions_or_a_known_packing(tmp_path: Path) -> None:
    fn, why = build(compiler="no-such-cc-quantgate", cache=tmp_path)
    assert fn is None and ("no-such-cc-quantgate" in why or "packs int4" in why)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx\n")
    fn, why = build("AVX2", cpuinfo=str(cpuinfo), cache=tmp_path)
    assert fn is None and "avx2/fma" in why
    fn, why = build("AVX512", cpuinfo=str(cpuinfo), cache=tmp_path)
    assert fn is None and "avx512f" in why
    fn, why = build("DEFAULT", cache=tmp_path)
    assert fn is None and "does not read" in why
    assert not list(tmp_path.glob("*.so"))
    path, why = build_op(compiler="no-such-cxx-quantgate", cache=tmp_path)
    assert path is None and ("no-such-cxx-quantgate" in why or "packing" in why)


@ready
def test_build_compiles_into_the_cache_once(tmp_path: Path) -> None:
    fn, why = build(cache=tmp_path)
    assert fn is not None and why == ""
    built = list(tmp_path.glob("int4_linear-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    assert build(cache=tmp_path)[0] is not None
    assert built[0].stat().st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1


@ready
def test_a_kernel_that_computes_the_wrong_thing_is_refused() -> None:
    fn = int4_kernel._library()[0]
    assert int4_kernel._self_check(fn, BLOCK) == ""

    def swapped_halves(x: int, qdata: int, sz: int, y: int, rows: int, n: int, k: int, group: int, bf16: int,
                       threads: int) -> int:
        # as if the kernel read the nibbles the other way round: the same kernel on bytes with them swapped
        packed = torch.frombuffer(bytearray((ctypes.c_uint8 * (n * k // 2)).from_address(qdata)), dtype=torch.uint8)
        swapped = (packed << 4) | (packed >> 4)
        return fn(x, swapped.data_ptr(), sz, y, rows, n, k, group, bf16, threads)

    assert "disagrees" in int4_kernel._self_check(swapped_halves, BLOCK)


def _greedy(engine: LocalEngine, count: int = 3) -> list[list[int]]:
    requests = [GenerationRequest(prompt=[5 + i, 9, 17, 33 + i], params=SamplingParams(max_tokens=8))
                for i in range(count)]
    return [g.token_ids for g in engine.generate(requests)]


@ready
def test_the_cpu_engine_decodes_int4wo_through_the_kernel(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    quantize_model(loaded.model, get_scheme("int4wo-g32"), device="cpu")
    assert LocalEngine(loaded, int4_kernel=False).int4_kernel_layers == 0
    engine = LocalEngine(loaded)
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    assert engine.int4_kernel_layers == sum(m.out_features % BLOCK == 0 for m in linears) > 0
    batched = _greedy(engine, 4)
    alone = [_greedy(LocalEngine(loaded, max_batch_size=1), 4)[i] for i in range(4)]
    assert batched == alone  # each decode row summed the same way in any batch
    scored = engine.score([5, 9, 17, 33], batched[0])
    assert len(scored.logprobs) == len(batched[0]) and all(p <= 0 for p in scored.logprobs)


@ready
@pytest.mark.slow
def test_frozen_compiled_step_runs_the_kernel(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    quantize_model(loaded.model, get_scheme("int4wo-g32"), device="cpu")
    eager = _greedy(LocalEngine(loaded))
    compiled = LocalEngine(loaded, compile=True)
    assert compiled.freeze and compiled.int4_kernel_layers > 0
    assert _greedy(compiled) == eager
