"""Models whose linear weights are not plain ``nn.Linear``: GPT-2's Conv1D, Falcon's FalconLinear, fused MoE experts.

Each is a tiny random model of the real transformers class in a real HF directory (the tiny
Llama's tokenizer beside it), quantized, saved, loaded back and run through the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.errors import ManifestError, QuantgateError
from quantgate.models import load_model
from quantgate.quantize.apply import plan_layers, quantize_model
from quantgate.quantize.compat import float_warning, linearize
from quantgate.quantize.experts import eligibility, swap_experts
from quantgate.quantize.schemes import get_scheme
from quantgate.quantize.storage import load_variant, quantize_to_dir
from tests.conftest import build_tiny_arch_model

IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 8, 97]])


@pytest.fixture(scope="module", params=["gpt2", "falcon", "mixtral"])
def arch_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, build_tiny_arch_model(tmp_path_factory.mktemp(request.param), request.param)


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def test_linearize_keeps_the_function(arch_dir: tuple[str, Path]) -> None:
    arch, path = arch_dir
    model = load_model(path).model
    before = _logits(model)
    experts = [m for m in model.modules() if type(m).__name__ == "MixtralExperts"]
    fused = [(m.gate_up_proj.detach().clone(), m.down_proj.detach().clone()) for m in experts]
    swapped = linearize(model)
    expected = {"gpt2": "Conv1D", "falcon": "FalconLinear", "mixtral": "MixtralExperts"}[arch]
    assert set(swapped.values()) == {expected}
    if arch != "mixtral":
        assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in swapped)
    if arch == "mixtral":
        assert sorted(swapped) == [f"model.layers.{i}.mlp.experts" for i in range(2)]
    for module, (gate_up, down) in zip(experts, fused, strict=True):  # one nn.Linear per expert, W[e] as it was
        assert [torch.equal(lin.weight, w) for lin, w in zip(module.gate_up_proj, gate_up, strict=True)] == [True] * 4
        assert [torch.equal(lin.weight, w) for lin, w in zip(module.down_proj, down, strict=True)] == [True] * 4
        assert not any(p.dim() == 3 for p in module.parameters())
    # transformers runs Mixtral's experts as grouped matmuls by default; the per-expert loop is its eager
    # implementation, which sums in another order (last bits)
    torch.testing.assert_close(_logits(model), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", ["int8wo", "int4wo-g32"])
def test_every_linear_weight_is_quantized_and_the_variant_round_trips(arch_dir: tuple[str, Path], tmp_path: Path,
                                                                      scheme: str) -> None:
    arch, path = arch_dir
    manifest = quantize_to_dir(path, scheme, tmp_path / "v")
    kept = {n: layer["reason"] for n, layer in manifest.layers.items() if layer["scheme"] == "none"}
    assert not kept
    if arch == "gpt2":  # 4 Conv1D per block (c_attn, c_proj, c_fc, mlp.c_proj) plus lm_head
        assert len(manifest.layers) == 9 and set(manifest.linearized.values()) == {"Conv1D"}
    assert manifest.probe_snr_db is not None and manifest.probe_snr_db > (30 if scheme == "int8wo" else 12)
    if arch == "mixtral":  # 2 layers of 4 experts, two linear layers each, beside attention and lm_head
        assert sum(".experts." in n for n in manifest.layers) == 16 and len(manifest.layers) == 25
        assert manifest.layers["model.layers.1.mlp.experts.down_proj.3"]["scheme"] == scheme
    loaded = load_variant(tmp_path / "v")
    reference = load_model(path, dtype=get_scheme(scheme).resolved_compute_dtype("cpu")).model
    quantize_model(reference, get_scheme(scheme))
    assert torch.equal(_logits(loaded.model), _logits(reference))
    engine = LocalEngine(loaded, max_batch_size=4)
    prompts = ["<|user|>hello there<|end|><|assistant|>", "<|user|>x<|end|><|assistant|>",
               "<|user|>a longer prompt, with more words in it<|end|><|assistant|>"]
    requests = [GenerationRequest(p, SamplingParams(max_tokens=10)) for p in prompts]
    batched = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    if arch != "mixtral" or loaded.model.dtype == torch.float32:  # fp32 experts: per-expert loops, row by row
        assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
        return
    # Under bf16 the router's and attention's products over a padded batch move the last bits (seen on an
    # AMX host: up to 0.004 on a log-probability), and where a token's two best experts are near-tied in
    # the router (this random model has 4), that can pick another expert: 0.033 on an AVX2 host with the
    # experts in int4. Greedy tokens may flip where two were near-tied (all within ~0.2 of each other here).
    for b, a in zip(batched, alone):
        same = next((i for i, (x, y) in enumerate(zip(b.token_ids, a.token_ids)) if x != y), len(a.token_ids))
        torch.testing.assert_close(b.logprobs[:same], a.logprobs[:same], rtol=0, atol=5e-2)
        if same < len(a.token_ids):
            assert abs(b.logprobs[same] - a.logprobs[same]) < 5e-2


def test_fused_experts_are_quantized_and_the_rest_reported(arch_dir: tuple[str, Path], tmp_path: Path) -> None:
    arch, path = arch_dir
    manifest = quantize_to_dir(path, "int8wo", tmp_path / "v", overrides=[("model.layers.1.mlp.experts.*", "none")])
    groups = manifest.unquantized["tensors"]
    assert {g["kind"] for g in groups.values()} == {"embedding"}  # GPT-2's position table too: float by design
    assert float_warning(manifest.unquantized) is None
    if arch == "mixtral":
        assert manifest.linearized == {f"model.layers.{i}.mlp.experts": "MixtralExperts" for i in range(2)}
        assert manifest.layers["model.layers.0.mlp.experts.gate_up_proj.0"] == {
            "scheme": "int8wo", "shape": [512, 128], "reason": "default scheme", "tensor": "Int8Tensor"}
        assert manifest.layers["model.layers.1.mlp.experts.gate_up_proj.0"]["scheme"] == "none"
        loaded = load_variant(tmp_path / "v").model  # the float experts of layer 1 load back as they were
        float_expert = loaded.model.layers[1].mlp.experts.down_proj[2].weight
        assert type(float_expert) is torch.nn.Parameter and float_expert.shape == (128, 256)


def test_fused_experts_in_another_layout_stay_float_and_are_reported(tmp_path: Path) -> None:
    manifest = quantize_to_dir(build_tiny_arch_model(tmp_path / "gpt-oss", "gpt_oss"), "int8wo", tmp_path / "v")
    assert manifest.linearized == {}
    reason = manifest.unquantized["tensors"]["model.layers.*.mlp.experts.gate_up_proj"]["reason"]
    assert "kept in float: a layout quantgate does not split into linear layers (is_transposed=True, has_bias=True)" in reason
    warning = float_warning(manifest.unquantized)
    assert warning is not None and "experts.down_proj" in warning


def test_fused_experts_whose_forward_is_not_the_eager_loop_stay_float() -> None:
    from transformers import MixtralConfig
    from transformers.integrations.moe import use_experts_implementation
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    @use_experts_implementation
    class ScaledExperts(torch.nn.Module):  # remote code: Mixtral's experts with a scale of their own
        def __init__(self, config: MixtralConfig) -> None:
            super().__init__()
            self.num_experts = config.num_local_experts
            self.gate_up_proj = torch.nn.Parameter(torch.randn(4, 2 * config.intermediate_size, config.hidden_size))
            self.down_proj = torch.nn.Parameter(torch.randn(4, config.hidden_size, config.intermediate_size))
            self.act_fn = torch.nn.functional.silu

        def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
            return 0.5 * MixtralExperts.forward.__wrapped__(self, hidden_states, top_k_index, top_k_weights)

    config = MixtralConfig(hidden_size=32, intermediate_size=64, num_local_experts=4)
    config._experts_implementation = "eager"
    experts = ScaledExperts(config)
    assert eligibility(experts) is None
    assert swap_experts(experts) == "its forward is not transformers' eager loop (a probe's outputs differ)"
    assert experts.gate_up_proj.shape == (4, 128, 32) and "forward" not in experts.__dict__  # as it was
    assert eligibility(torch.nn.Linear(4, 4)) == "no 3-D gate_up_proj and down_proj parameters"


def test_a_linear_subclass_with_its_own_forward_stays_float(tiny_model_dir: Path) -> None:
    class Gated(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * torch.sigmoid(self.weight.sum())

    model = load_model(tiny_model_dir).model
    old = model.model.layers[0].mlp.down_proj
    gated = Gated(old.in_features, old.out_features, bias=False)
    gated.weight = old.weight
    model.model.layers[0].mlp.down_proj = gated
    plans = {p.name: p for p in plan_layers(model, get_scheme("int8wo"))}
    assert plans["model.layers.0.mlp.down_proj"].scheme == "none"
    assert "Gated has its own forward" in plans["model.layers.0.mlp.down_proj"].reason
    assert plans["model.layers.1.mlp.down_proj"].scheme == "int8wo"
    result = quantize_model(model, get_scheme("int8wo"))  # runs: the subclass kept its plain weight
    assert result.probe_snr_db is not None


def test_a_model_that_cannot_run_quantized_fails_at_quantize_time(tiny_model_dir: Path) -> None:
    class Transposing(torch.nn.Module):  # remote code that multiplies by a linear layer's weight itself
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.inner.weight.T

    model = load_model(tiny_model_dir).model
    model.model.layers[0].mlp.down_proj = Transposing(model.model.layers[0].mlp.down_proj)
    with pytest.raises(QuantgateError, match="int8wo: the quantized model cannot run a forward pass .*--override"):
        quantize_model(model, get_scheme("int8wo"))


def test_manifest_without_the_newer_fields_still_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v")
    data = json.loads((tmp_path / "v" / "manifest.json").read_text())
    for key in ("linearized", "unquantized", "probe_snr_db"):
        del data[key]
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(data))
    assert load_variant(tmp_path / "v").variant["probe_snr_db"] is None  # type: ignore[index]


def test_manifest_linearized_must_name_real_modules(tmp_path: Path) -> None:
    path = build_tiny_arch_model(tmp_path / "gpt2", "gpt2")
    quantize_to_dir(path, "int8wo", tmp_path / "v")
    data = json.loads((tmp_path / "v" / "manifest.json").read_text())
    (tmp_path / "v" / "manifest.json").write_text(json.dumps({**data, "linearized": ["transformer.h.0.attn.c_attn"]}))
    with pytest.raises(ManifestError, match="field 'linearized' must be a JSON dict"):
        load_variant(tmp_path / "v")
    data["linearized"]["transformer.h.9.attn.c_attn"] = "Conv1D"
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="field 'linearized': no linear-equivalent module named transformer.h.9"):
        load_variant(tmp_path / "v")
