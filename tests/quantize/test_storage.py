from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from quantgate.errors import ManifestError, ModelLoadError, QuantgateError, UnsupportedSchemeError
from quantgate.models import load_model
from quantgate.quantize.apply import parse_override
from quantgate.quantize.manifest import hash_model_dir, size_warning
from quantgate.quantize.schemes import get_scheme
from quantgate.quantize.storage import load_any, load_variant, quantize_to_dir

IDS = torch.tensor([[3, 14, 15, 92, 65, 35]])


def _logits_after_quantizing(model_dir: Path, scheme: str, overrides: list[str] | None = None) -> torch.Tensor:
    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.schemes import get_scheme

    loaded = load_model(model_dir, dtype=get_scheme(scheme).resolved_compute_dtype("cpu"))
    quantize_model(loaded.model, get_scheme(scheme), [parse_override(o) for o in overrides or []])
    with torch.no_grad():
        return loaded.model(IDS).logits


@pytest.mark.parametrize("scheme", ["bf16", "int8wo", "int8dq", "int4wo-g32", "int4wo-g128", "int2wo-g32"])
def test_round_trip_gives_identical_logits(tiny_model_dir: Path, tmp_path: Path, scheme: str) -> None:
    manifest = quantize_to_dir(tiny_model_dir, scheme, tmp_path / "v")
    loaded = load_variant(tmp_path / "v")  # no scheme given: the manifest says
    assert loaded.variant is not None and loaded.variant["scheme"]["name"] == scheme
    with torch.no_grad():
        restored = loaded.model(IDS).logits
    assert torch.equal(restored, _logits_after_quantizing(tiny_model_dir, scheme))
    assert manifest.weight_bytes["total"] == sum(
        manifest.weight_bytes[k] for k in ("linear_quantized", "linear_float", "other"))


def test_manifest_records_what_was_done(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int4wo-g32", tmp_path / "v", overrides=[("lm_head", "none")])
    data = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert data["format_version"] == 1
    assert data["scheme"]["name"] == "int4wo-g32" and data["scheme"]["group_size"] == 32
    assert data["source"]["sha256"] == hash_model_dir(tiny_model_dir)
    assert data["compute_dtype"] == "bf16" and data["device"] == "cpu"
    assert data["layers"]["lm_head"]["scheme"] == "none"
    assert data["layers"]["model.layers.0.mlp.up_proj"] == {
        "scheme": "int4wo-g32", "shape": [256, 128], "reason": "default scheme", "tensor": "Int4OpaqueTensor"}
    assert set(data["versions"]) == {"quantgate", "torch", "torchao", "transformers"}
    assert data["quantize_seconds"] >= 0
    wb = data["weight_bytes"]
    assert wb["linear_quantized"] <= 0.32 * wb["linear_quantized_as_bf16"]
    assert data["overrides"] == [["lm_head", "none"]]


def test_int8_weight_bytes_about_half_of_bf16(tiny_model_dir: Path, tmp_path: Path) -> None:
    wb = quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v").weight_bytes
    assert wb["linear_quantized"] <= 0.55 * wb["linear_quantized_as_bf16"]


def test_quantized_tied_head_is_untied_and_stays_correct(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v")
    loaded = load_variant(tmp_path / "v")
    embed = loaded.model.get_input_embeddings().weight
    assert type(loaded.model.lm_head.weight).__name__ == "Int8Tensor"
    assert type(embed.data) is torch.Tensor
    source = load_model(tiny_model_dir, dtype=loaded.dtype).model.get_input_embeddings().weight
    assert torch.equal(embed, source)


def test_an_int4_override_raises_the_compute_dtype_to_bf16(tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest = quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v", overrides=[("mlp", "int4wo-g32")])
    assert manifest.compute_dtype == "bf16"  # one activation dtype per model, the one int4 needs


def test_float_variant_keeps_tying(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "bf16", tmp_path / "v")
    model = load_variant(tmp_path / "v").model
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_load_any_picks_variant_or_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v")
    assert load_any(tmp_path / "v").variant is not None
    assert load_any(tiny_model_dir).variant is None
    with pytest.raises(ModelLoadError, match="runs in the dtype it was made for"):
        load_any(tmp_path / "v", dtype="fp32")


@pytest.fixture()
def variant(tiny_model_dir: Path, tmp_path: Path) -> Path:
    quantize_to_dir(tiny_model_dir, "int4wo-g32", tmp_path / "v")
    return tmp_path / "v"


def test_corrupt_manifest(variant: Path) -> None:
    (variant / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="manifest.json: corrupt manifest, not valid JSON"):
        load_variant(variant)


def test_manifest_missing_field(variant: Path) -> None:
    data = json.loads((variant / "manifest.json").read_text())
    del data["layers"]
    (variant / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="missing field\\(s\\) layers"):
        load_variant(variant)


def test_manifest_wrong_type_and_unknown_field(variant: Path) -> None:
    data = json.loads((variant / "manifest.json").read_text())
    (variant / "manifest.json").write_text(json.dumps({**data, "scheme": "int4"}))
    with pytest.raises(ManifestError, match="field 'scheme' must be a JSON dict"):
        load_variant(variant)
    (variant / "manifest.json").write_text(json.dumps({**data, "colour": "blue"}))
    with pytest.raises(ManifestError, match="unknown field\\(s\\) colour"):
        load_variant(variant)


def test_manifest_future_version(variant: Path) -> None:
    data = json.loads((variant / "manifest.json").read_text())
    (variant / "manifest.json").write_text(json.dumps({**data, "format_version": 9}))
    with pytest.raises(ManifestError, match="format_version 9 is not supported"):
        load_variant(variant)


def test_manifest_unknown_scheme(variant: Path) -> None:
    data = json.loads((variant / "manifest.json").read_text())
    data["scheme"]["name"] = "int5"
    (variant / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(QuantgateError, match="unknown scheme 'int5'"):
        load_variant(variant)


def test_missing_or_foreign_weights(variant: Path, tiny_model_dir: Path) -> None:
    shutil.copy(tiny_model_dir / "model.safetensors", variant / "model.safetensors")
    with pytest.raises(ManifestError, match="no quantgate metadata"):
        load_variant(variant)
    (variant / "model.safetensors").unlink()
    with pytest.raises(ManifestError, match="model.safetensors is missing"):
        load_variant(variant)


def test_int4_packed_for_cpu_refuses_other_device(variant: Path) -> None:
    with pytest.raises(ManifestError, match="packed for cpu; cannot load on cuda"):
        load_variant(variant, device="cuda")


def _rewrite_manifest(variant: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((variant / "manifest.json").read_text())
    edit(data)
    (variant / "manifest.json").write_text(json.dumps(data))


def test_an_fp8_variant_is_refused_on_a_cpu_before_its_weights_are_read(variant: Path) -> None:
    def as_fp8(data: dict[str, Any]) -> None:
        data["scheme"] = dataclasses.asdict(get_scheme("fp8dq"))
        data["layers"] = {k: {**v, "scheme": "fp8dq"} for k, v in data["layers"].items()}

    _rewrite_manifest(variant, as_fp8)
    (variant / "model.safetensors").unlink()  # refused first: a missing file would say otherwise
    with pytest.raises(UnsupportedSchemeError, match="v: scheme 'fp8dq' needs fp8 matmul support .* this device is 'cpu'"):
        load_variant(variant)


def test_one_fp8_layer_is_enough_to_refuse_a_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v")
    _rewrite_manifest(tmp_path / "v", lambda d: d["layers"]["lm_head"].update(scheme="fp8wo"))
    with pytest.raises(UnsupportedSchemeError, match="scheme 'fp8wo' needs fp8 matmul support"):
        load_variant(tmp_path / "v")


def test_an_int4_override_packed_for_cpu_refuses_cuda(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "v", overrides=[("lm_head", "int4wo-g32")])
    with pytest.raises(ManifestError, match="packed for cpu; cannot load on cuda"):
        load_variant(tmp_path / "v", device="cuda")


def test_refuses_non_empty_foreign_out_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(QuantgateError, match="exists and is not empty"):
        quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "out")


def test_refuses_to_quantize_a_variant(variant: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match="already a quantized variant"):
        quantize_to_dir(variant, "int8wo", tmp_path / "again")


def test_codec_refuses_classes_outside_allowlist() -> None:
    from quantgate.quantize.codec import decode_attr, rebuild_tensor

    with pytest.raises(ManifestError, match="'os.system'.*not allowed"):
        rebuild_tensor("w", {"class": "os.system", "data": [], "attrs": {}}, {})
    with pytest.raises(ManifestError, match="'Popen'.*not allowed"):
        decode_attr({"object": "Popen", "fields": {}})


def test_a_variant_keeps_named_chat_templates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from quantgate.models import render_chat

    source = tmp_path / "hermes"
    shutil.copytree(tiny_model_dir, source)
    tok = AutoTokenizer.from_pretrained(source)
    tok.chat_template = {"default": "{% for m in messages %}D:{{ m['content'] }}{% endfor %}",
                         "tool_use": "{% for m in messages %}T:{{ m['content'] }}{% endfor %}"}
    tok.save_pretrained(source)
    quantize_to_dir(source, "int8wo", tmp_path / "v")
    loaded = load_variant(tmp_path / "v")
    tool = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert render_chat(loaded.tokenizer, [{"role": "user", "content": "hi"}], tool, loaded.chat_template) == "T:hi"


@pytest.mark.parametrize("scheme", ["int8wo", "int8dq", "int2wo-g32"])
def test_a_bf16_checkpoint_is_widened_layer_by_layer_with_the_same_result(tiny_model_dir: Path, tmp_path: Path,
                                                                         scheme: str) -> None:
    from transformers import AutoModelForCausalLM

    source = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir, source)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(source)
    manifest = quantize_to_dir(source, scheme, tmp_path / "v", dtype="fp32")
    assert manifest.compute_dtype == "fp32" and manifest.source["dtype_loaded"] == "bf16"
    loaded = load_variant(tmp_path / "v")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.schemes import get_scheme

    widened = load_model(source, dtype="fp32")  # the whole model widened at load, then quantized
    quantize_model(widened.model, get_scheme(scheme))
    with torch.no_grad():
        assert torch.equal(loaded.model(IDS).logits, widened.model(IDS).logits)


def test_size_warning_names_why_quantized_layers_are_not_smaller(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert size_warning(quantize_to_dir(tiny_model_dir, "int8wo", tmp_path / "int8")) is None
    int4 = quantize_to_dir(tiny_model_dir, "int4wo-g32", tmp_path / "int4")
    assert size_warning(int4) is None
    int2 = size_warning(quantize_to_dir(tiny_model_dir, "int2wo-g32", tmp_path / "int2"))
    assert int2 is not None and "not the ~0.12x of 2-bit weights" in int2 and "unpacked in int8" in int2
    # As measured on an H200 (docs/variants.md): tinygemm pads in_features 256 to 1,024, and the
    # reference model's int4 layers took 1.0x their bf16 bytes.
    wb = dict(int4.weight_bytes, linear_quantized=int4.weight_bytes["linear_quantized_as_bf16"])
    on_cuda = dataclasses.replace(int4, device="cuda:0", weight_bytes=wb)
    assert size_warning(on_cuda) == ("the quantized layers take 1.00x their bf16 bytes, not the ~0.25x of 4-bit "
                                     "weights: the CUDA int4 kernel pads in_features to a multiple of 1,024 "
                                     "(here [128, 256])")
