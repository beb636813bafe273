"""quantgate's CPU kernel for int8 weight-only linears (quantgate.quantize.int8_kernel).

Its output is held to torchao's own int8 weight-only path on the same quantized weights (the thing
it replaces), at every row count around its limits and at widths that are not a multiple of its
16-wide step; the build is tried against a missing compiler and a CPU without AVX2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantgate.engines.onednn_linear import onednn_status
from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.models.loading import load_model
from quantgate.quantize.apply import quantize_model
from quantgate.quantize.int8_kernel import (
    MAX_ROWS,
    build,
    build_op,
    int8_linear,
    kernel_isa,
    kernel_status,
    op_implementation,
    use_int8_kernel,
)
from quantgate.quantize.schemes import cpu_flags, get_scheme

ready = pytest.mark.skipif(kernel_status() != "ready", reason=f"int8 kernel unavailable: {kernel_status()}")


def _quantized(in_features: int, out_features: int, scheme: str = "int8wo", bias: bool = False) -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(in_features, out_features, bias=bias))
    quantize_model(model, get_scheme(scheme), device="cpu")
    return model


@ready
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 15, 16, 40, MAX_ROWS, MAX_ROWS + 1])  # 2-D input: rows
@pytest.mark.parametrize("in_features", [256, 100])  # 100: a tail after the 16-wide steps
def test_kernel_matches_torchaos_int8_path(rows: int, in_features: int) -> None:
    model = _quantized(in_features, 96, bias=True)
    x = torch.randn(rows, in_features)
    with torch.no_grad():
        assert use_int8_kernel(model, enabled=False) == 0
        reference = model(x)
        assert use_int8_kernel(model) == 1
        out = model(x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    if rows > MAX_ROWS and onednn_status() != "ready":  # a prefill takes torchao's arithmetic itself (MKL's)
        assert torch.equal(out, reference)


@ready
@pytest.mark.parametrize("in_features", [256, 100])
def test_a_decode_row_comes_out_the_same_alone_or_in_any_batch(in_features: int) -> None:
    w = _quantized(in_features, 64)[0].weight
    x = torch.randn(37, 1, in_features)  # 37 sequences, one new position each: past MAX_ROWS, odd
    batched = int8_linear(x, w.qdata, w.scale)
    for size in (1, 2, 3, 4, 5, 9):  # tiles of 1-4 rows, one or two columns (past 8 rows) on AVX-512
        for start in range(0, 37 - size, 7):
            part = int8_linear(x[start:start + size], w.qdata, w.scale)
            assert torch.equal(part, batched[start:start + size]), (size, start)


@ready
def test_a_long_prefill_takes_torchaos_arithmetic_and_a_short_one_the_kernel() -> None:
    w = _quantized(64, 32)[0].weight

    def torchaos(x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(-1, 64) @ w.qdata.t().float()) * w.scale.reshape(1, -1)

    long = torch.randn(2, MAX_ROWS // 2 + 1, 64)  # several positions per sequence, MAX_ROWS + 2 rows
    assert torch.equal(int8_linear(long, w.qdata, w.scale), torchaos(long).reshape(*long.shape[:-1], 32))
    short = torch.randn(2, MAX_ROWS // 2, 64)  # MAX_ROWS rows: each summed as the kernel sums a decode row
    rows = int8_linear(short.reshape(-1, 1, 64), w.qdata, w.scale)
    assert torch.equal(int8_linear(short, w.qdata, w.scale), rows.reshape(*short.shape[:-1], 32))
    torch.testing.assert_close(rows.reshape(-1, 32), torchaos(short), rtol=1e-5, atol=1e-5)


@ready
def test_a_long_eager_prefill_multiplies_on_onednn_only_where_that_pays() -> None:
    model = _quantized(256, 96, bias=True)
    w = model[0].weight
    long = torch.randn(2, MAX_ROWS, 256)  # 2 x MAX_ROWS rows: past the kernel
    with torch.no_grad():
        use_int8_kernel(model, enabled=False)
        torchaos = model(long)
        assert use_int8_kernel(model, onednn=False) == 1
        assert torch.equal(model(long), torchaos)  # MKL: torchao's product, bit for bit
        assert use_int8_kernel(model) == 1
        routed = model(long)
        decode = model(long[:, :1])  # one position per sequence: the kernel either way
    torch.testing.assert_close(routed, torchaos, rtol=1e-5, atol=1e-5)
    assert torch.equal(decode, int8_linear(long[:, :1], w.qdata, w.scale) + model[0].bias)
    if onednn_status() != "ready":
        assert torch.equal(routed, torchaos)


@ready
def test_tensors_off_the_cpu_never_reach_the_c_code() -> None:
    w = _quantized(64, 32)[0].weight
    x = torch.empty(3, 1, 64, device="meta")  # a model moved off the CPU after the engine set it up
    y = int8_linear(x, w.qdata.to("meta"), w.scale.to("meta"))
    assert y.device.type == "meta" and y.shape == (3, 1, 32)


@ready
def test_leading_dimensions_and_non_contiguous_rows_are_kept() -> None:
    model = _quantized(64, 48)
    w = model[0].weight
    x = torch.randn(2, 3, 1, 128)[..., ::2]  # (2, 3, 1, 64), strided: one position, two leading dims
    y = int8_linear(x, w.qdata, w.scale)
    assert y.shape == (2, 3, 1, 48)
    expected = (x.reshape(-1, 64) @ w.qdata.t().float()) * w.scale.reshape(1, -1)
    torch.testing.assert_close(y.reshape(-1, 48), expected, rtol=1e-5, atol=1e-5)


@ready
def test_layers_it_cannot_take_keep_torchaos_path() -> None:
    dynamic = _quantized(64, 32, scheme="int8dq")  # activations quantized too: not weight-only
    assert use_int8_kernel(dynamic) == 0 and "forward" not in dynamic[0].__dict__
    grouped = _quantized(64, 32, scheme="int4wo-g32")
    assert use_int8_kernel(grouped) == 0
    bf16 = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False)).to(torch.bfloat16)
    quantize_model(bf16, get_scheme("int8wo"), device="cpu")  # a model loaded in bf16, then quantized
    assert use_int8_kernel(bf16) == 0 and "forward" not in bf16[0].__dict__
    moved = _quantized(64, 32)
    assert use_int8_kernel(moved) == 1
    moved.to(torch.bfloat16)  # moved to bf16 after its layers were routed: the op falls back inside
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        routed = moved(x)
        use_int8_kernel(moved, enabled=False)
        assert torch.equal(routed, moved(x))


@ready
@pytest.mark.parametrize("shape", [(3, 1, 100), (1, 100), (MAX_ROWS, 100), (MAX_ROWS + 1, 100), (2, 3, 100),
                                   (2, MAX_ROWS, 100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cpp_op_computes_what_the_python_one_does(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if op_implementation() != "c++":
        pytest.skip(f"the op's C++ implementation did not build here: {op_implementation()}")
    w = _quantized(100, 48)[0].weight
    x = torch.randn(*shape[:-1], 2 * shape[-1]).to(dtype)[..., ::2]  # strided, as a view of activations can be
    ours = torch.ops.quantgate.int8_linear(x, w.qdata, w.scale)
    assert ours.dtype == dtype and ours.shape == (*shape[:-1], 48)
    assert torch.equal(ours, int8_linear(x, w.qdata, w.scale))  # same C kernel, same fallback arithmetic


def test_build_op_says_why_not_without_a_compiler(tmp_path: Path) -> None:
    path, why = build_op(compiler="no-such-cxx-quantgate", cache=tmp_path)
    assert path is None and "no-such-cxx-quantgate" in why and not list(tmp_path.iterdir())


@ready
@pytest.mark.slow
def test_build_op_compiles_into_the_cache_once(tmp_path: Path) -> None:
    path, why = build_op(cache=tmp_path)  # ~8 s: the default suite builds it once, in the user's cache
    assert path is not None and why == "" and path.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    assert build_op(cache=tmp_path)[0] == path and path.stat().st_mtime_ns == mtime


def test_build_says_why_not_without_a_compiler_or_avx2(tmp_path: Path) -> None:
    fn, why = build(compiler="no-such-cc-quantgate", cache=tmp_path)
    assert fn is None and "no-such-cc-quantgate" in why
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 neon\n")
    fn, why = build(cpuinfo=str(cpuinfo), cache=tmp_path)
    assert fn is None and "AVX2" in why


def test_kernel_isa_follows_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 fma avx512f\n")
    assert kernel_isa(str(cpuinfo)) == "AVX-512"
    cpuinfo.write_text("flags\t\t: fpu avx2 fma\n")
    assert kernel_isa(str(cpuinfo)) == "AVX2"


@ready
@pytest.mark.skipif("avx512f" not in cpu_flags(), reason="the CPU has no AVX-512")
def test_the_avx512_build_computes_what_the_avx2_one_does(tmp_path: Path) -> None:
    avx512, why = build(cache=tmp_path)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: " + " ".join(sorted(cpu_flags() - {"avx512f"})) + "\n")
    avx2, why2 = build(cpuinfo=str(cpuinfo), cache=tmp_path)
    assert avx512 is not None and avx2 is not None, (why, why2)
    assert len(list(tmp_path.glob("int8_linear-*.so"))) == 2  # the flags name the file
    for rows, n, k in [(1, 96, 100), (3, 97, 256), (9, 50, 1000), (16, 64, 37), (4, 2816, 1024)]:
        x, w, s = torch.randn(rows, k), torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n)
        out = [torch.empty(rows, n), torch.empty(rows, n)]
        for fn, y in zip((avx512, avx2), out, strict=True):
            fn(x.data_ptr(), w.data_ptr(), s.data_ptr(), y.data_ptr(), rows, n, k, 2)
        assert torch.equal(out[0], out[1]), (rows, n, k)  # same sums in the same order, wider registers


@ready
def test_build_compiles_into_the_cache_once(tmp_path: Path) -> None:
    fn, why = build(cache=tmp_path)
    assert fn is not None and why == ""
    built = list(tmp_path.glob("int8_linear-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    assert build(cache=tmp_path)[0] is not None
    assert built[0].stat().st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1


def _greedy(engine: LocalEngine) -> list[list[float]]:
    requests = [GenerationRequest(prompt=[5 + i, 9, 17, 33 + i], params=SamplingParams(max_tokens=8))
                for i in range(3)]
    return [g.logprobs for g in engine.generate(requests)]


@ready
def test_the_cpu_engine_decodes_int8wo_through_the_kernel(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="fp32")
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    torchao = LocalEngine(loaded, int8_kernel=False)
    assert torchao.int8_kernel_layers == 0
    reference = _greedy(torchao)
    engine = LocalEngine(loaded)
    assert engine.int8_kernel_layers == sum(isinstance(m, torch.nn.Linear) for m in loaded.model.modules())
    for ours, theirs in zip(_greedy(engine), reference, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-4)


@ready
@pytest.mark.slow
def test_frozen_compiled_step_runs_the_kernel(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="fp32")
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    eager = _greedy(LocalEngine(loaded))
    compiled = LocalEngine(loaded, compile=True)
    assert compiled.freeze and compiled.int8_kernel_layers > 0
    for ours, theirs in zip(_greedy(compiled), eager, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-4)


def test_a_bf16_engine_keeps_torchaos_path(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    assert LocalEngine(loaded).int8_kernel_layers == 0  # inductor's own int8 kernel takes bf16 (_fits)
