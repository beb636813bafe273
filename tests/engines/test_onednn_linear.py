"""Float linears on oneDNN with their weights laid out once (quantgate.engines.onednn_linear).

Routing is decided from ``/proc/cpuinfo``, so each rule is tried on a written cpuinfo (an AMD CPU with
and without AVX-512 and native bf16, Intel ones: large fp32 layers from four rows); fp32 arithmetic is held to ``F.linear``
on the same weights at sizes on both sides of the work threshold, bf16 to the same bits; a weight
changed after routing is followed, and the memory limit on the copies is kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantgate.engines.local import LocalEngine
from quantgate.engines.onednn_linear import (
    MIN_ROWS_INTEL,
    MIN_WEIGHT_AVX2,
    MIN_WEIGHT_INTEL,
    MIN_WORK,
    min_rows,
    min_weight,
    onednn_status,
    use_onednn,
)
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.models.loading import load_model
from quantgate.quantize.apply import quantize_model
from quantgate.quantize.schemes import cpu_flags, get_scheme

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")

# oneDNN lays out bf16 weights only on a CPU with these (torch's message says so): the tests that fake an
# AMD CPU with native bf16 cannot reorder bf16 weights on one without
LAYS_OUT_BF16 = {"avx512bw", "avx512vl", "avx512dq"} <= cpu_flags() or "avx_ne_convert" in cpu_flags()


def _cpuinfo(tmp_path: Path, vendor: str, flags: str) -> str:
    path = tmp_path / f"cpuinfo-{vendor}-{len(flags)}"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 26\nflags\t\t: {flags}\n\n")
    return str(path)


@pytest.fixture
def amd512(tmp_path: Path) -> str:
    return _cpuinfo(tmp_path, "AuthenticAMD", "fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16")


def _layers(bias: bool = True) -> torch.nn.Sequential:
    torch.manual_seed(0)
    # 256x2048 at one row is 2**19 multiply-adds: oneDNN; 64x64 stays on F.linear below 128 rows
    return torch.nn.Sequential(torch.nn.Linear(256, 2048, bias=bias), torch.nn.Linear(2048, 64, bias=False),
                               torch.nn.Linear(64, 64, bias=bias))


def _given(model: torch.nn.Module) -> list[torch.Tensor]:
    """What each routed layer hands oneDNN (the partial's held weight)."""
    return [m.forward.args[1][0].weight for m in model.modules() if "forward" in m.__dict__]


@needs_onednn
def test_status_names_why_not(tmp_path: Path, amd512: str) -> None:
    assert onednn_status(torch.float32, amd512) == "ready"
    assert onednn_status(torch.bfloat16, amd512) == "ready"
    intel = _cpuinfo(tmp_path, "GenuineIntel", "avx2 fma avx512f amx_bf16")
    assert onednn_status(torch.float32, intel) == "ready"  # large layers, 4+ rows: test_intel_routes_...
    assert "not measured" in onednn_status(torch.bfloat16, intel) and "GenuineIntel" in onednn_status(
        torch.bfloat16, intel)
    assert "not measured" in onednn_status(torch.float32, _cpuinfo(tmp_path, "HygonGenuine", "avx2 fma"))
    plain = _cpuinfo(tmp_path, "AuthenticAMD", "avx2 fma")
    assert onednn_status(torch.float32, plain) == "ready"  # large layers only: test_avx2_routes_large_layers_only
    assert "no native bf16" in onednn_status(torch.bfloat16, plain)
    assert "vendor unknown" in onednn_status(torch.float32, str(tmp_path / "missing"))
    assert "not measured" in onednn_status(torch.float16, amd512)


@needs_onednn
def test_routing_follows_the_cpu(tmp_path: Path, amd512: str) -> None:
    model = _layers()
    intel = _cpuinfo(tmp_path, "GenuineIntel", "avx2 fma avx512f")
    assert use_onednn(model, cpuinfo=intel) == 0  # every layer under MIN_WEIGHT_INTEL
    assert not any("forward" in m.__dict__ for m in model)
    assert use_onednn(model, cpuinfo=amd512) == 3
    assert use_onednn(model, enabled=False, cpuinfo=amd512) == 0
    assert not any("forward" in m.__dict__ for m in model)
    model.to(torch.bfloat16)
    assert use_onednn(model, cpuinfo=intel) == 0  # no native bf16 there (and not measured on Intel)
    if LAYS_OUT_BF16:
        assert use_onednn(model, cpuinfo=amd512) == 3


@needs_onednn
def test_intel_routes_large_layers_from_four_rows(tmp_path: Path, amd512: str) -> None:
    intel = _cpuinfo(tmp_path, "GenuineIntel", "avx2 fma avx512f")
    assert (min_weight(intel), min_rows(intel)) == (MIN_WEIGHT_INTEL, MIN_ROWS_INTEL) and min_rows(amd512) == 1
    torch.manual_seed(0)
    wide = MIN_WEIGHT_INTEL // 512
    model = torch.nn.Sequential(torch.nn.Linear(512, wide), torch.nn.Linear(wide, 511))
    with torch.inference_mode():
        assert use_onednn(model, cpuinfo=intel) == 1  # 512 x 4096: just large enough; 4096 x 511 is not
        assert "forward" in model[0].__dict__ and "forward" not in model[1].__dict__
        layer = model[0]
        for rows in (1, MIN_ROWS_INTEL - 1):  # fewer rows: MKL's own call, bit for bit
            x = torch.randn(rows, 512)
            assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        x = torch.randn(2, MIN_ROWS_INTEL, 512)
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias),
                                   rtol=1e-5, atol=1e-5)


@needs_onednn
def test_avx2_routes_large_layers_only(tmp_path: Path, amd512: str) -> None:
    avx2 = _cpuinfo(tmp_path, "AuthenticAMD", "fpu sse2 avx avx2 fma")
    assert min_weight(avx2) == MIN_WEIGHT_AVX2 and min_weight(amd512) == 0
    torch.manual_seed(0)
    wide = MIN_WEIGHT_AVX2 // 256
    model = torch.nn.Sequential(torch.nn.Linear(256, wide), torch.nn.Linear(wide, 255))
    x = torch.randn(3, 256)
    with torch.inference_mode():
        reference = model(x)
        assert use_onednn(model, cpuinfo=avx2) == 1  # 256 x 2048: just large enough; 2048 x 255: one row short
        assert "forward" in model[0].__dict__ and "forward" not in model[1].__dict__
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
        assert use_onednn(model, cpuinfo=amd512) == 2
        model.to(torch.bfloat16)
        assert use_onednn(model, cpuinfo=avx2) == 0  # no native bf16


@needs_onednn
@pytest.mark.parametrize("shape", [(1,), (3,), (2, 5), (4, 1), (200,)])
def test_fp32_outputs_match_f_linear(shape: tuple[int, ...], amd512: str) -> None:
    model = _layers()
    x = torch.randn(*shape, 256)
    with torch.inference_mode():
        reference = model(x)
        assert use_onednn(model, cpuinfo=amd512) == 3
        routed = model(x)
    torch.testing.assert_close(routed, reference, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.skipif(onednn_status(torch.bfloat16) != "ready", reason="no native bf16 here: oneDNN would emulate it")
@pytest.mark.parametrize("shape", [(1,), (4,), (2, 5), (200,)])
def test_bf16_outputs_are_the_same_bits(shape: tuple[int, ...]) -> None:
    model = _layers().to(torch.bfloat16)
    x = torch.randn(*shape, 256).to(torch.bfloat16)
    with torch.inference_mode():
        reference = model(x)
        assert use_onednn(model) == 3
        assert all(g.is_mkldnn for g in _given(model))
        assert torch.equal(model(x), reference)


@needs_onednn
def test_past_the_reorder_limit_fp32_uses_the_weights_as_they_are_and_bf16_stays(amd512: str) -> None:
    model = _layers()
    x = torch.randn(4, 256)
    weights = sum(m.weight.numel() * 4 for m in model)
    with torch.inference_mode():
        reference = model(x)
        assert use_onednn(model, cpuinfo=amd512, reorder_limit=weights - 1) == 3
        given = _given(model)
        assert all(g.data_ptr() == m.weight.data_ptr() and not g.is_mkldnn for g, m in zip(given, model))
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
        assert use_onednn(model, cpuinfo=amd512, reorder_limit=weights) == 3
        assert all(g.is_mkldnn for g in _given(model))
    model.to(torch.bfloat16)
    assert use_onednn(model, cpuinfo=amd512, reorder_limit=weights // 2 - 1) == 0  # bf16 needs the copies
    if LAYS_OUT_BF16:
        assert use_onednn(model, cpuinfo=amd512, reorder_limit=weights // 2) == 3


@needs_onednn
def test_small_calls_and_gradients_keep_f_linear(amd512: str) -> None:
    layer = torch.nn.Linear(64, 64)
    use_onednn(layer, cpuinfo=amd512)
    rows = MIN_WORK // (64 * 64) - 1  # just under the threshold
    x = torch.randn(rows, 64)
    with torch.inference_mode():
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    big = torch.nn.Linear(1024, 1024)
    use_onednn(big, cpuinfo=amd512)
    y = big(torch.randn(4, 1024, requires_grad=True)).sum()
    y.backward()  # the oneDNN op has no backward: with gradients on, F.linear runs
    assert big.weight.grad is not None and big.weight.grad.abs().sum() > 0


@needs_onednn
def test_a_changed_weight_is_followed(amd512: str) -> None:
    model = _layers()
    use_onednn(model, cpuinfo=amd512)
    x = torch.randn(8, 256)
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # in place: the version moves
        torch.testing.assert_close(model[0](x), torch.nn.functional.linear(x, model[0].weight, model[0].bias),
                                   rtol=1e-5, atol=1e-5)
        model[0].weight = torch.nn.Parameter(torch.randn(2048, 256) / 16)  # replaced
        torch.testing.assert_close(model[0](x), torch.nn.functional.linear(x, model[0].weight, model[0].bias),
                                   rtol=1e-5, atol=1e-5)
    quantize_model(model, get_scheme("int8wo"), device="cpu")  # quantized in place: torchao's own path
    with torch.no_grad():
        assert torch.equal(model[0](x), torch.nn.functional.linear(x, model[0].weight, model[0].bias))


@pytest.mark.skipif(onednn_status() != "ready" or min_weight() > 320 * 128,
                    reason=f"the tiny model's fp32 linears stay on MKL here: {onednn_status()}, "
                           f"routed from {min_weight()} weights")
def test_an_eager_engine_routes_and_answers_the_same(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="fp32")
    plain = LocalEngine(loaded, onednn=False)
    assert plain.onednn_layers == 0
    prompts = [GenerationRequest(p, SamplingParams(max_tokens=8)) for p in ("Hello there", "A longer prompt, so that rows differ")]
    before = [g.token_ids for g in plain.generate(prompts)]
    engine = LocalEngine(loaded)
    assert engine.onednn_layers > 0
    assert [g.token_ids for g in engine.generate(prompts)] == before
    assert [g.token_ids for g in engine.generate(prompts[:1])] == before[:1]
    assert LocalEngine(loaded, compile=True).onednn_layers == 0  # inductor lays out its own weights
