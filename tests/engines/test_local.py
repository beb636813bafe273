from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantgate.engines import local
from quantgate.engines.local import LocalEngine
from quantgate.engines.onednn_linear import float_linear_bytes
from quantgate.engines.types import Generation, GenerationRequest, SamplingParams, TokenDelta
from quantgate.errors import QuantgateError
from quantgate.models import load_model
from quantgate.quantize.apply import quantize_model
from quantgate.quantize.schemes import get_scheme
from tests.conftest import build_tiny_arch_model

PROMPTS = ["hello there", "a", "the quick brown fox jumps over", "xyz 123", "what is love?", "Zebra!"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalEngine:
    return LocalEngine(load_model(tiny_model_dir), max_batch_size=4)


def _requests(n_tokens: int = 12, **kw: object) -> list[GenerationRequest]:
    return [GenerationRequest(p, SamplingParams(max_tokens=n_tokens, **kw)) for p in PROMPTS]  # type: ignore[arg-type]


def test_batched_greedy_equals_one_at_a_time(engine: LocalEngine) -> None:
    batched = engine.generate(_requests())
    alone = [engine.generate([r])[0] for r in _requests()]
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert [b.text for b in batched] == [a.text for a in alone]
    for b in batched:  # incremental detokenisation agrees with decoding the whole answer
        if b.finish_reason == "length" and "\ufffd" not in b.text:
            assert b.text == engine.tokenizer.decode(b.token_ids, skip_special_tokens=True)


def test_generation_logprobs_match_teacher_forced_scores(engine: LocalEngine) -> None:
    for request, result in zip(_requests(), engine.generate(_requests())):
        assert len(result.logprobs) == len(result.token_ids)
        score = engine.score(request.prompt, result.token_ids)
        assert result.logprobs == pytest.approx(score.logprobs, abs=1e-4)


def test_results_carry_usage_finish_and_timings(engine: LocalEngine) -> None:
    results = engine.generate(_requests(n_tokens=7))
    for prompt, r in zip(PROMPTS, results):
        assert r.usage.prompt_tokens == len(engine.encode(prompt))
        assert r.finish_reason in ("stop", "length")
        if r.finish_reason == "length":
            assert r.usage.completion_tokens == 7 == len(r.token_ids)
        t = r.timings
        assert 0 <= t.queue_s <= t.ttft_s <= t.total_s
        assert t.prefill_s > 0 and t.decode_s >= 0


def test_eos_ends_with_stop_and_is_not_in_the_text(engine: LocalEngine) -> None:
    free = engine.generate([GenerationRequest("hi", SamplingParams(max_tokens=5))])[0]
    saved = engine.eos_ids
    engine.eos_ids = {free.token_ids[2]}  # the token greedy emits third now ends the answer
    try:
        result = engine.generate([GenerationRequest("hi", SamplingParams(max_tokens=5))])[0]
    finally:
        engine.eos_ids = saved
    first = free.token_ids.index(free.token_ids[2])
    assert result.finish_reason == "stop"
    assert result.token_ids == free.token_ids[:first]
    assert result.usage.completion_tokens == first + 1


def test_stream_pieces_add_up_to_the_text(engine: LocalEngine) -> None:
    items = list(engine.stream(GenerationRequest("the quick brown", SamplingParams(max_tokens=16))))
    *pieces, final = items
    assert isinstance(final, Generation)
    assert all(isinstance(p, TokenDelta) for p in pieces)
    assert "".join(p.text for p in pieces) == final.text
    assert final.text == engine.generate([GenerationRequest("the quick brown", SamplingParams(max_tokens=16))])[0].text


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stop_sequence_cuts_text_and_is_never_streamed(engine: LocalEngine, prompt: str) -> None:
    free = engine.generate([GenerationRequest(prompt, SamplingParams(max_tokens=24))])[0]
    if len(free.text) < 4:
        pytest.skip("the random model gave too little text to pick a stop sequence from")
    stop = free.text[2:4]
    params = SamplingParams(max_tokens=24, stop=(stop,))
    items = list(engine.stream(GenerationRequest(prompt, params)))
    *pieces, final = items
    assert final.finish_reason == "stop"
    assert final.text == free.text[: free.text.index(stop)]
    assert stop not in "".join(p.text for p in pieces)
    assert "".join(p.text for p in pieces) == final.text


def test_seeded_sampling_repeats_whatever_shares_the_batch(engine: LocalEngine) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    alone = engine.generate([GenerationRequest("hello", params)])[0]
    shared = engine.generate([GenerationRequest("zzz", SamplingParams(max_tokens=10, temperature=0.8, seed=1)),
                              GenerationRequest("hello", params)])[1]
    assert alone.token_ids == shared.token_ids
    other = engine.generate([GenerationRequest("hello", SamplingParams(max_tokens=10, temperature=1.0, seed=8))])[0]
    assert other.token_ids != alone.token_ids


def test_tiny_top_p_is_greedy(engine: LocalEngine) -> None:
    greedy = engine.generate([GenerationRequest("hello", SamplingParams(max_tokens=8))])[0]
    nucleus = engine.generate([GenerationRequest("hello", SamplingParams(max_tokens=8, temperature=1.0, top_p=1e-6, seed=3))])[0]
    assert nucleus.token_ids == greedy.token_ids


def test_score_matches_a_plain_forward_pass(engine: LocalEngine) -> None:
    prompt, cont = engine.encode("hello"), engine.encode(" there friend")
    score = engine.score(prompt, cont, top_k=3)
    with torch.no_grad():
        logits = engine.model(torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
    expected = [logits[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont)]
    assert score.token_ids == cont
    assert score.logprobs == pytest.approx(expected, abs=1e-5)
    assert len(score.top_ids) == len(cont) and all(len(t) == 3 for t in score.top_ids)
    for lps in score.top_logprobs:
        assert lps == sorted(lps, reverse=True)
    assert score.total_logprob == pytest.approx(sum(expected), abs=1e-4)


def test_score_batch_equals_single_and_returns_full_matrices(engine: LocalEngine) -> None:
    pairs = [("hello", " there"), ("a", " longer continuation here"), ("xyz", "!")]
    scores, matrices = engine.score_batch(pairs, return_logprobs=True)  # type: ignore[misc]
    for (p, c), s, m in zip(pairs, scores, matrices):
        single = engine.score(p, c)
        assert s.logprobs == pytest.approx(single.logprobs, abs=1e-5)
        assert m.shape == (len(s.token_ids), engine.model.config.vocab_size)
        assert m.dtype == torch.float32
        assert torch.allclose(m.exp().sum(-1), torch.ones(len(s.token_ids)), atol=1e-4)


def test_prompt_longer_than_context_is_refused(engine: LocalEngine) -> None:
    ids = [5] * (engine.max_context + 1)
    with pytest.raises(QuantgateError, match="the model's context is 512"):
        engine.generate([GenerationRequest(ids, SamplingParams(max_tokens=1))])


def test_max_tokens_clamped_to_context(engine: LocalEngine) -> None:
    ids = [5] * (engine.max_context - 3)
    result = engine.generate([GenerationRequest(ids, SamplingParams(max_tokens=50))])[0]
    assert result.usage.completion_tokens <= 3


@pytest.mark.parametrize("kw,match", [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"),
                                      ({"top_p": 0}, "top_p"), ({"stop": ("",)}, "stop")])
def test_bad_sampling_params(kw: dict[str, object], match: str) -> None:
    with pytest.raises(QuantgateError, match=match):
        SamplingParams(**kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_compiled_static_cache_matches_eager(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    eager = LocalEngine(loaded).generate(_requests(n_tokens=10))
    engine = LocalEngine(loaded, compile=True)
    compiled = engine.generate(_requests(n_tokens=10))
    assert [c.token_ids for c in compiled] == [e.token_ids for e in eager]
    assert engine.step_graphs == "one"  # the step that skips the module guards


def test_a_step_dynamo_cannot_capture_as_one_graph_runs_uncompiled(tmp_path: Path) -> None:
    # A mixture-of-experts loop over the experts a batch hits breaks the graph on data. Compiled anyway,
    # the step was wrong: with the module guards skipped a graph made for one set of experts served
    # another (greedy tokens changed), and with them log-probabilities were off by 0.01-0.03.
    loaded = load_model(build_tiny_arch_model(tmp_path / "mixtral", "mixtral"), dtype="fp32")
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")  # experts as per-expert linear layers
    requests = _requests(n_tokens=10)[:3]
    want = LocalEngine(loaded, max_batch_size=4).generate(requests)
    engine = LocalEngine(loaded, max_batch_size=4, compile=True)
    got = engine.generate(requests)
    assert engine.step_graphs == "uncompiled" and "data-dependent" in engine.step_uncompiled_because
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.logprobs, w.logprobs, rtol=0, atol=1e-5)


def test_a_compiled_step_whose_compiler_fails_is_an_error_not_a_silent_fallback(tiny_model_dir: Path) -> None:
    engine = LocalEngine(load_model(tiny_model_dir, dtype="fp32"), compile=True)
    with (torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}),
          pytest.raises(torch._inductor.exc.InductorError, match="No working C\\+\\+ compiler")):
        engine.generate(_requests(n_tokens=4)[:1])
    assert engine.step_graphs is None


def test_freezing_by_default_only_where_the_weight_copy_is_small(tiny_model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    assert LocalEngine(loaded, compile=True).freeze is True  # a small float model: its prepacked copy is cheap
    assert LocalEngine(loaded, compile=True, freeze=False).freeze is False
    monkeypatch.setattr(local, "REORDER_LIMIT", float_linear_bytes(loaded.model) - 1)  # as if it were large
    assert LocalEngine(loaded, compile=True).freeze is False
    assert LocalEngine(loaded, compile=True, freeze=True).freeze is True
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    assert LocalEngine(loaded, compile=True).freeze is True
    assert LocalEngine(loaded, compile=True, freeze=False).freeze is False


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["bf16", "int8wo"])
def test_frozen_compiled_step_matches_eager(tiny_model_dir: Path, scheme: str) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16")
    if scheme != "bf16":
        quantize_model(loaded.model, get_scheme(scheme), device="cpu")
    eager = LocalEngine(loaded).generate(_requests(n_tokens=10))
    attention = loaded.model.config._attn_implementation
    compiled = LocalEngine(loaded, compile=True, freeze=True).generate(_requests(n_tokens=10))
    assert [c.token_ids for c in compiled] == [e.token_ids for e in eager]
    # the decode step's eager attention is scoped to the step: prefill and scoring keep SDPA
    assert loaded.model.config._attn_implementation == attention


@pytest.mark.slow
def test_frozen_compiled_engine_answers_each_call_from_its_own_cache(tiny_model_dir: Path) -> None:
    # A frozen step folds the static cache it was compiled with into its graph as constants (its
    # tensors have fixed addresses): with a new cache per call, later calls attended over the first
    # call's keys and wrote at a position that kept counting, until it ran past the cache (an
    # IndexError from inside the graph, here on the 5th call: 5 x 59 steps > 256 columns).
    loaded = load_model(tiny_model_dir, dtype="fp32")  # bf16 answers tip on near ties between eager and compiled
    quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    eager = LocalEngine(loaded, max_batch_size=2)
    compiled = LocalEngine(loaded, max_batch_size=2, compile=True)
    assert compiled.freeze
    for engine in (eager, compiled):
        engine.eos_ids = set()  # every call runs all its steps
    for batch in (PROMPTS[:2], PROMPTS[2:4], PROMPTS[4:], PROMPTS[:1], PROMPTS[1:3], PROMPTS[3:5]):
        requests = [GenerationRequest(p, SamplingParams(max_tokens=60)) for p in batch]
        want = [g.token_ids for g in eager.generate(requests)]
        assert [g.token_ids for g in compiled.generate(requests)] == want, batch


@pytest.mark.slow
def test_compiled_engines_of_two_models_keep_their_own_graphs(tiny_model_dir: Path) -> None:
    # The step skips guards on the model's modules, so two engines must not share compiled graphs:
    # the second model (same shapes, other weights, frozen into the graph as constants since both
    # are quantized) would otherwise decode with the first's
    first = load_model(tiny_model_dir, dtype="fp32")
    second = load_model(tiny_model_dir, dtype="fp32")
    with torch.no_grad():
        for p in second.model.parameters():
            p.mul_(-1.5)
    for loaded in (first, second):
        quantize_model(loaded.model, get_scheme("int8wo"), device="cpu")
    requests = _requests(n_tokens=10)[:2]
    for loaded in (first, second, first):
        want = [g.token_ids for g in LocalEngine(loaded).generate(requests)]
        got = [g.token_ids for g in LocalEngine(loaded, compile=True).generate(requests)]
        assert got == want
    assert want != [g.token_ids for g in LocalEngine(second).generate(requests)]  # the models do differ


@pytest.mark.parametrize("arch", ["gpt2", "mistral", "gemma2", "bloom"])
def test_greedy_matches_transformers_generate_on_other_architectures(arch: str, tmp_path: Path) -> None:
    # GPT-2: learned absolute positions (position ids from the mask must match its own); Mistral:
    # a 64-token sliding window that the 200-token prompt crosses, over quantgate's growable cache;
    # Gemma 2: sliding and full layers in turn; BLOOM: ALiBi built from the 2D mask, which a
    # prepared 4D decode mask broke (batched generation failed with a ValueError)
    from tests.conftest import build_tiny_arch_model

    loaded = load_model(build_tiny_arch_model(tmp_path / arch, arch))
    engine = LocalEngine(loaded, max_batch_size=4)
    prompts = ["<|user|>hi<|end|><|assistant|>",
               "<|user|>" + " ".join(f"word{i}" for i in range(30)) + "<|end|><|assistant|>"]
    assert engine.count_tokens(prompts[1]) > 64
    ours = [g.token_ids for g in engine.generate([GenerationRequest(p, SamplingParams(max_tokens=16)) for p in prompts])]
    for prompt, got in zip(prompts, ours):
        ids = loaded.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = loaded.model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None,
                                    pad_token_id=loaded.tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        assert got == ref[: len(got)] and got


def test_a_model_with_a_recurrent_state_is_refused_with_a_clear_error(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Mamba keeps convolution and SSM states, which quantgate's key/value cache cannot hold; it used
    # to load and then fail at the first decode step with an IndexError from inside transformers
    from tests.conftest import build_tiny_arch_model
    from tests.test_cli import assert_one_line_error, run

    path = build_tiny_arch_model(tmp_path / "mamba", "mamba")
    with pytest.raises(QuantgateError, match="linear_attention keep a recurrent state.*serves attention models"):
        LocalEngine(load_model(path))
    capsys.readouterr()  # building the model printed progress bars
    code, _, err = run(["generate", "--model", str(path), "--prompt", "hi"], capsys)
    assert_one_line_error(code, err, "recurrent state")


def test_gpt_oss_harmony_markers_survive_decoding(tiny_model_dir: Path, tmp_path: Path) -> None:
    # gpt-oss's channel markers are special tokens: skipped, "analysis" and "assistantfinal" run
    # into the text and the channels can no longer be told apart
    import shutil

    from transformers import AutoTokenizer

    from quantgate.engines.sampling import StopMatcher, writes_harmony

    path = tmp_path / "harmony"
    shutil.copytree(tiny_model_dir, path)
    tok = AutoTokenizer.from_pretrained(path)
    assert not writes_harmony(tok) and not LocalEngine(load_model(path)).keeps_markers
    tok.add_special_tokens({"additional_special_tokens": ["<|channel|>", "<|message|>", "<|start|>"]})
    tok.save_pretrained(path)
    engine = LocalEngine(load_model(path))
    assert engine.keeps_markers
    text = "<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>hi"
    ids = engine.tokenizer.encode(text, add_special_tokens=False)
    kept, skipped = StopMatcher(engine.tokenizer, (), keep_special=True), StopMatcher(engine.tokenizer, ())
    assert "".join(kept.push(i) for i in ids) + kept.flush() == text
    assert "".join(skipped.push(i) for i in ids) + skipped.flush() == "analysisthinkingassistantfinalhi"
