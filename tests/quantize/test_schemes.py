"""Each scheme's numerics: a quantized layer's output stays within a stated SNR of the float one.

SNR = 20 log10(|y| / |y - y_q|) in dB, the measure torchao's own tests use (``compute_error``).
Bounds sit a few dB under what each scheme measures on a Gaussian layer (seed 0), so they catch a
broken kernel or a wrong config without flaking: int8 keeps ~46 dB, int4 ~19-25 dB by group size,
3-bit ~16 dB, 2-bit ~9 dB.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantgate.errors import QuantgateError, UnknownSchemeError, UnsupportedSchemeError
from quantgate.quantize.apply import parse_override, plan_layers, quantize_model
from quantgate.quantize import schemes
from quantgate.quantize.schemes import SCHEMES, cpu_has_native_bf16, get_scheme

SNR_BOUNDS_DB = {
    "int8wo": 40.0,
    "int8dq": 35.0,
    "int4wo-g32": 22.0,
    "int4wo-g64": 20.0,
    "int4wo-g128": 18.0,
    "int3wo-g32": 13.0,
    "int2wo-g32": 6.0,
}


def snr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    reference, approx = reference.float(), approx.float()
    return float(20 * torch.log10(reference.norm() / (reference - approx).norm()))


class TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(256, 512, bias=False)
        self.lm_head = torch.nn.Linear(512, 256, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.up(x))


@pytest.mark.parametrize("name", sorted(SNR_BOUNDS_DB))
def test_quantized_layer_within_snr_bound(name: str) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512, bias=False).to(torch.bfloat16)
    x = torch.randn(8, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        reference = layer(x)
    model = torch.nn.Sequential(layer)
    result = quantize_model(model, get_scheme(name))
    assert result.layers[0].scheme == name
    assert type(model[0].weight) is not torch.nn.Parameter or type(model[0].weight.data) is not torch.Tensor
    with torch.no_grad():
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert snr_db(reference, out) >= SNR_BOUNDS_DB[name]


def test_every_cpu_quantizing_scheme_has_a_bound() -> None:
    cpu = {n for n, s in SCHEMES.items() if s.quantizes and s.kind not in ("fp8wo", "fp8dq")}
    assert cpu == set(SNR_BOUNDS_DB)


@pytest.mark.parametrize("name", ["fp8wo", "fp8dq"])
def test_fp8_refused_on_cpu(name: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(UnsupportedSchemeError, match="needs fp8 matmul support .* this device is 'cpu'"):
        quantize_model(model, get_scheme(name), device="cpu")
    assert type(model[0].weight.data) is torch.Tensor  # refused before touching the model


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSchemeError, match="unknown scheme 'int5'.*int8wo"):
        get_scheme("int5")


def test_overrides_first_match_wins_and_none_keeps_float() -> None:
    model = TwoLayers().to(torch.bfloat16)
    overrides = [parse_override("lm_head=none"), parse_override("*=int8wo")]
    plans = {p.name: p for p in plan_layers(model, get_scheme("int4wo-g32"), overrides)}
    assert plans["lm_head"].scheme == "none" and "lm_head=none" in plans["lm_head"].reason
    assert plans["up"].scheme == "int8wo"
    quantize_model(model, get_scheme("int4wo-g32"), overrides)
    assert type(model.lm_head.weight.data) is torch.Tensor
    assert type(model.up.weight).__name__ == "Int8Tensor"


def test_layer_that_does_not_fit_stays_float_with_reason() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(96, 64, bias=False)).to(torch.bfloat16)
    result = quantize_model(model, get_scheme("int4wo-g64"))
    assert result.layers[0].scheme == "none"
    assert "in_features 96 not divisible by group size 64" in result.layers[0].reason
    assert type(model[0].weight.data) is torch.Tensor


def test_int4_needs_out_features_multiple_of_16() -> None:
    assert get_scheme("int4wo-g32").layer_fits(64, 40) == "out_features 40 not divisible by 16 (int4 packing)"
    assert get_scheme("int8wo").layer_fits(64, 40) is None


@pytest.mark.parametrize("text", ["lm_head", "=int8wo", "lm_head=", "x=int9"])
def test_bad_override(text: str) -> None:
    with pytest.raises(QuantgateError):
        parse_override(text)


def test_scheme_record_round_trips() -> None:
    for scheme in SCHEMES.values():
        assert type(scheme).from_dict(scheme.to_dict()) == scheme
    with pytest.raises(UnknownSchemeError, match="unknown fields"):
        type(scheme).from_dict({**scheme.to_dict(), "bits": 3})


@pytest.mark.parametrize("name", [n for n in sorted(SNR_BOUNDS_DB) if SCHEMES[n].compute_dtype == "auto"])
def test_auto_schemes_hold_their_bound_with_fp32_activations(name: str) -> None:
    # what `auto` resolves to on a CPU without native bf16
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512, bias=False)
    x = torch.randn(8, 256)
    with torch.no_grad():
        reference = layer(x)
    model = torch.nn.Sequential(layer)
    quantize_model(model, get_scheme(name))
    with torch.no_grad():
        out = model(x)
    assert out.dtype == torch.float32
    assert snr_db(reference, out) >= SNR_BOUNDS_DB[name]


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 fma", "fp32"), ("fpu avx2 avx512f avx512_bf16", "bf16"), ("fpu amx_bf16 amx_tile", "bf16")])
def test_auto_compute_dtype_follows_the_cpu(tmp_path: Path, flags: str, expected: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is (expected == "bf16")
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))  # not Linux: fp32, always correct
    monkeypatch.setattr(schemes, "cpu_has_native_bf16", lambda: expected == "bf16")
    monkeypatch.setattr(schemes, "cpu_flags", lambda: set(flags.split()))
    monkeypatch.setattr(schemes, "int8_kernel_ready", lambda: False)  # a machine without a C compiler
    assert get_scheme("int8wo").resolved_compute_dtype("cpu") == expected
    assert get_scheme("int8dq").resolved_compute_dtype("cpu") == expected
    assert get_scheme("int8wo").resolved_compute_dtype("cuda:0") == "bf16"
    assert get_scheme("int4wo-g32").resolved_compute_dtype("cpu") == "bf16"  # its CPU kernel needs bf16
    assert get_scheme("fp32").resolved_compute_dtype("cpu") == "fp32"
    monkeypatch.setattr(schemes, "int8_kernel_ready", lambda: True)
    # quantgate's fp32 int8 kernel wins decode wherever it runs, AMX included (docstring)
    assert get_scheme("int8wo").resolved_compute_dtype("cpu") == "fp32"
    assert get_scheme("int8dq").resolved_compute_dtype("cpu") == expected
    assert get_scheme("int8wo").resolved_compute_dtype("cuda:0") == "bf16"
