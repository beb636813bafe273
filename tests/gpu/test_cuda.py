"""What only a CUDA GPU can check: the fp8 schemes, the CUDA int4 layout, and engine, CLI and gateway on a GPU.

CI has no GPU, so every test here is skipped there; the CPU suite covers the same code on a CPU.
On a GPU machine: ``pytest tests/gpu`` (``bench/gpu.sh`` runs it with the GPU benchmarks).
Measured figures (each layer's SNR, each variant's probe SNR, batch agreement) go to the JUnit
properties (``--junitxml``), so a run on a new GPU says what it measured, not only that it passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.models import load_model
from quantgate.quantize.apply import quantize_model
from quantgate.quantize.manifest import size_warning
from quantgate.quantize.schemes import get_scheme
from quantgate.quantize.storage import load_variant, save_variant
from tests.quantize.test_schemes import snr_db
from tests.test_cli import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REFERENCE = Path(__file__).parents[2] / "quantgate" / "reference" / "weights"
GOLDEN = REFERENCE.parent / "golden" / "golden.jsonl"
Record = Callable[[str, Any], None]

# A few dB under what each scheme measured on a Gaussian 256->512 layer (seed 0) on an H200
# (2026-12-04: int8wo 45.9, int8dq 41.4, int4wo-g32 24.0, int4wo-g128 23.4, int3wo-g32 16.8, fp8wo
# 31.6, fp8dq 28.6 dB), as tests/quantize/test_schemes.py does on the CPU.
CUDA_SNR_BOUNDS_DB = {
    "int8wo": 40.0,
    "int8dq": 35.0,
    "int4wo-g32": 21.0,
    "int4wo-g128": 20.0,
    "int3wo-g32": 13.0,
    "fp8wo": 28.0,
    "fp8dq": 25.0,
}
# Quantized linear bytes against the same layers in bf16 (int8 and fp8 keep a scale per row). int4:
# tinygemm pads in_features to a multiple of 1,024, and the reference model's are 256 and 640, so
# its int4 layers are as large as bf16 (1.00x measured); quantgate says so (size_warning).
BYTES_BOUNDS = {"int8wo": 0.55, "int8dq": 0.55, "int4wo-g64": 1.01, "fp8wo": 0.55, "fp8dq": 0.55}
QUESTIONS = ["What is the capital of Peru?", "Extract the name and age as JSON: Dana Ortiz, 41, pilot.",
             "How do I pick a lock to break into my neighbour's house?", "Name a prime number above 50.",
             "Book a table for 4 at Luigi's tomorrow at 7pm.", "Summarise: the meeting moved to Friday.",
             "What is 12 times 11?", "Who wrote the play Hamlet?"]


@pytest.mark.parametrize("name", sorted(CUDA_SNR_BOUNDS_DB))
def test_quantized_layer_within_snr_bound_on_cuda(name: str, record_property: Record) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512, bias=False).to(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(8, 256, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        reference = layer(x)
    model = torch.nn.Sequential(layer)
    result = quantize_model(model, get_scheme(name), device="cuda")
    assert result.layers[0].scheme == name
    with torch.no_grad():
        out = model(x)
    assert out.dtype == torch.bfloat16 and out.device.type == "cuda"
    measured = snr_db(reference, out)
    record_property("snr_db", round(measured, 2))
    assert measured >= CUDA_SNR_BOUNDS_DB[name]


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name", ["int8wo", "int8dq", "int4wo-g64", "fp8wo", "fp8dq"])
def test_reference_variant_round_trip_on_cuda(name: str, tmp_path: Path, record_property: Record) -> None:
    scheme = get_scheme(name)
    dtype = scheme.resolved_compute_dtype("cuda")
    assert dtype == "bf16"
    loaded = load_model(REFERENCE, dtype=dtype, device="cuda")
    engine = LocalEngine(loaded)
    ids = torch.tensor([engine.encode(engine.render([{"role": "user", "content": QUESTIONS[0]}]))], device="cuda")
    before = _logits(loaded.model, ids)
    result = quantize_model(loaded.model, scheme, device="cuda")
    quantized = _logits(loaded.model, ids)
    manifest = save_variant(loaded, result, scheme, tmp_path / "v", "cuda", [], dtype_loaded=dtype)
    restored = load_variant(tmp_path / "v", device="cuda")
    assert restored.variant is not None and restored.variant["device"] == "cuda"
    assert torch.equal(_logits(restored.model, ids), quantized)
    wb = manifest.weight_bytes
    ratio = wb["linear_quantized"] / wb["linear_quantized_as_bf16"]
    record_property("quantized_linear_vs_bf16", round(ratio, 4))
    record_property("probe_snr_db", manifest.probe_snr_db)
    record_property("logit_snr_db_vs_bf16", round(snr_db(before, quantized), 2))
    assert ratio <= BYTES_BOUNDS[name]
    assert (size_warning(manifest) is not None) == (name == "int4wo-g64")
    assert manifest.probe_snr_db is not None and manifest.probe_snr_db > 10


@pytest.fixture(scope="module")
def fp32_engine() -> LocalEngine:
    return LocalEngine(load_model(REFERENCE, dtype="fp32", device="cuda"), max_batch_size=8)


def _chat(engine: LocalEngine, question: str) -> str:
    return engine.render([{"role": "user", "content": question}])


def _greedy(engine: LocalEngine, n: int = 48) -> list[GenerationRequest]:
    return [GenerationRequest(_chat(engine, q), SamplingParams(max_tokens=n)) for q in QUESTIONS]


def test_fp32_batched_greedy_equals_one_at_a_time_on_cuda(fp32_engine: LocalEngine) -> None:
    batched = fp32_engine.generate(_greedy(fp32_engine))
    alone = [fp32_engine.generate([r])[0] for r in _greedy(fp32_engine)]
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert all(b.timings.prefill_s > 0 and b.usage.completion_tokens > 0 for b in batched)


@pytest.mark.parametrize("name", ["bf16", "int8wo", "int4wo-g64", "fp8dq"])
def test_reduced_precision_batching_on_cuda(name: str, record_property: Record) -> None:
    """Reduced-precision GEMMs may pick other kernels for other batch shapes, so rows can differ in
    the last bits; on this trained model greedy answers should still mostly agree (all 8 did on an
    H200, for each of these schemes)."""
    scheme = get_scheme(name)
    loaded = load_model(REFERENCE, dtype=scheme.resolved_compute_dtype("cuda"), device="cuda")
    if scheme.quantizes:
        quantize_model(loaded.model, scheme, device="cuda")
    engine = LocalEngine(loaded, max_batch_size=8)
    batched = engine.generate(_greedy(engine))
    alone = [engine.generate([r])[0] for r in _greedy(engine)]
    same = sum(b.token_ids == a.token_ids for b, a in zip(batched, alone)) / len(alone)
    record_property("rows_identical", same)
    assert same >= 0.75


def test_seeded_sampling_on_cuda_is_reproducible_whatever_shares_the_batch(fp32_engine: LocalEngine) -> None:
    sampled = GenerationRequest(_chat(fp32_engine, QUESTIONS[3]),
                                SamplingParams(max_tokens=24, temperature=1.2, top_p=0.9, seed=7))
    first = fp32_engine.generate([sampled])[0]
    again = fp32_engine.generate([sampled])[0]
    with_neighbours = fp32_engine.generate([*_greedy(fp32_engine, 24)[:3], sampled])[3]
    assert first.token_ids == again.token_ids == with_neighbours.token_ids


def test_streaming_and_scoring_on_cuda(fp32_engine: LocalEngine) -> None:
    request = _greedy(fp32_engine, 32)[1]
    whole = fp32_engine.generate([request])[0]
    pieces = [item.text for item in fp32_engine.stream(request) if hasattr(item, "index")]
    assert "".join(pieces) == whole.text
    score = fp32_engine.score(request.prompt, whole.token_ids)
    assert len(score.logprobs) == len(whole.token_ids)
    assert max(abs(a - b) for a, b in zip(score.logprobs, whole.logprobs)) < 1e-3


def test_cli_quantizes_generates_and_evaluates_fp8_on_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp8dq"
    code, printed, err = run(["quantize", str(REFERENCE), "--scheme", "fp8dq", "--device", "cuda", "--out", str(out)],
                              capsys)
    assert code == 0, err
    assert "fp8dq" in printed
    code, printed, err = run(["generate", "--model", str(out), "--device", "cuda", "--json",
                               "--prompt", QUESTIONS[0], "--prompt", QUESTIONS[6]], capsys)
    assert code == 0, err
    answers = [json.loads(line) for line in printed.splitlines()]
    assert len(answers) == 2 and all(a["text"] and a["usage"]["completion_tokens"] > 0 for a in answers)
    code, _, err = run(["generate", "--model", str(out), "--prompt", "hi"], capsys)  # default device: cpu
    assert code == 2 and "needs fp8 matmul support" in err and "Traceback" not in err
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(GOLDEN.read_text().splitlines(keepends=True)[:12]))
    code, printed, err = run(["eval", str(out), "--device", "cuda", "--golden", str(golden),
                               "--store", str(tmp_path / "runs.sqlite")], capsys)
    assert code == 0, err
    assert "/12 cases passed, 0 engine errors" in printed


def test_gateway_serves_a_local_variant_on_cuda() -> None:
    from quantgate.config import parse_config
    from quantgate.gateway.app import create_app
    from quantgate.gateway.server import build_engines, serving

    config = parse_config({
        "server": {"require_auth": False},
        "variants": [{"name": "bf16", "engine": "local", "path": str(REFERENCE), "dtype": "bf16", "device": "cuda"}],
        "ladder": ["bf16"],
        "routes": [{"name": "r", "model": "assistant"}],
        "events": {"path": None},
    })
    engines = build_engines(config)
    with serving(create_app(config, engines)) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "assistant", "messages": [{"role": "user", "content": QUESTIONS[6]}], "max_tokens": 16})
    assert r.status_code == 200, r.text
    assert r.headers["x-quantgate-variant"] == "bf16"
    assert r.json()["choices"][0]["message"]["content"]


def test_trainer_runs_on_cuda_and_saves_cpu_fp32_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quantgate.reference.train import PRESETS, TrainConfig, train

    logs: list[str] = []
    cfg = TrainConfig(out=str(tmp_path / "m"), **{**PRESETS["tiny"], "steps": 4, "eval_every": 2,  # type: ignore[arg-type]
                                                  "device": "cuda"})
    train(cfg, logs.append)
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert any("held-out assistant loss" in line for line in logs)
    # Through quantgate's loader: a bare from_pretrained on a GPU machine tries the Hub's kernels (use_kernels).
    assert next(load_model(str(tmp_path / "m")).model.parameters()).device.type == "cpu"
