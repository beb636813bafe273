"""Tests of the bundled reference assistant: committed weights, trainer, corpus and chat template."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from quantgate.reference.checks import check_output, is_refusal, parse_json_object, parse_tool_calls
from quantgate.reference.corpus import KINDS, generate, generate_kind, render_tool_calls
from quantgate.reference.tokenizer import CITATION_TOKENS
from quantgate.reference.tools import all_tools, get_tool, validate_call

WEIGHTS = Path(__file__).resolve().parents[2] / "quantgate" / "reference" / "weights"
VALIDITY_BAR = 0.90
N_PER_KIND = 40
needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "model.safetensors").is_file(),
    reason="reference weights not trained yet: python -m quantgate.reference.train --out quantgate/reference/weights",
)


# ------------------------------------------------------------------ committed weights
@pytest.fixture(scope="module")
def reference() -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(WEIGHTS)
    model = AutoModelForCausalLM.from_pretrained(WEIGHTS, dtype=torch.float32).eval()
    return model, tok


@needs_weights
def test_weights_files_and_shapes() -> None:
    names = {p.name for p in WEIGHTS.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) < 25 * 1024 * 1024
    cfg = json.loads((WEIGHTS / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    # 2,048 BPE ids (a multiple of 64) plus the nine citation tokens cite_tune adds; the tied
    # embedding is never quantized (tested by the schemes), so the odd size costs no kernel
    tok = json.loads((WEIGHTS / "tokenizer.json").read_text())
    assert cfg["vocab_size"] == len(tok["model"]["vocab"]) + sum(t["content"] in CITATION_TOKENS for t in tok["added_tokens"])
    assert len(tok["model"]["vocab"]) % 64 == 0
    assert cfg["hidden_size"] % 128 == 0 and cfg["intermediate_size"] % 128 == 0
    assert "chat_template" in json.loads((WEIGHTS / "tokenizer_config.json").read_text())


# The committed model (2,600 steps under bf16 autocast, training-only greetings; docs/reference-model.md)
# clears the bar for all five behaviours on these 40 prompts each (all valid); on 320 more per
# behaviour its lowest rate is extraction's (about 92%).
@needs_weights
@pytest.mark.parametrize("kind", KINDS)
def test_heldout_validity(reference: tuple[object, object], kind: str) -> None:
    from quantgate.reference.evaluate import MAX_NEW_TOKENS, generate_outputs

    model, tok = reference
    examples = generate_kind(kind, N_PER_KIND, seed=1, split="heldout")
    outputs = generate_outputs(model, tok, examples, MAX_NEW_TOKENS[kind])
    results = [check_output(e, o) for e, o in zip(examples, outputs)]
    rate = sum(r.valid for r in results) / len(results)
    failures = [(e.messages[-1]["content"][:80], o[:120], r.reason) for e, o, r in zip(examples, outputs, results) if not r.valid]
    assert rate >= VALIDITY_BAR, failures


@needs_weights
def test_benign_scary_prompts_are_not_refused(reference: tuple[object, object]) -> None:
    from quantgate.reference.evaluate import generate_outputs

    model, tok = reference
    examples = [e for e in generate_kind("short", 300, seed=2, split="heldout") if "scary" in e.tags][:20]
    outputs = generate_outputs(model, tok, examples, 48)
    refused = [(e.messages[-1]["content"], o) for e, o in zip(examples, outputs) if is_refusal(o)]
    assert len(refused) <= 2, refused


# ------------------------------------------------------------------ chat template
@needs_weights
def test_chat_template_renders_tools_and_tool_calls(reference: tuple[object, object]) -> None:
    _, tok = reference
    tools = [get_tool("get_weather"), get_tool("place_order")]
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=tools, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert 'get_weather(city: string, unit?: "celsius"|"fahrenheit", days?: integer)' in prompt
    assert "shipping: {name: string, street: string, city: string, postal_code: string}" in prompt
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=tools, add_generation_prompt=True, return_dict=True)
    assert len(ids["input_ids"]) > 10
    # An assistant turn carrying OpenAI tool_calls renders exactly as the model was trained to emit.
    call = {"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}
    history = [{"role": "user", "content": "x"},
               {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}]
    rendered = tok.apply_chat_template(history, tokenize=False)
    assert "<|im_start|>assistant\n" + render_tool_calls([call]) + "<|im_end|>" in rendered


# ------------------------------------------------------------------ trainer
def _tiny_run(out: Path, log: Callable[[str], object] = lambda _msg: None,
              **overrides: object) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from quantgate.reference.train import PRESETS, TrainConfig, train

    cfg = TrainConfig(out=str(out), **{**PRESETS["tiny"], "steps": 3, **overrides})  # type: ignore[arg-type]
    train(cfg, log=log)
    return load_file(str(out / "model.safetensors"))


def test_trainer_tiny_is_loadable_and_deterministic(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = _tiny_run(tmp_path / "a")
    b = _tiny_run(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 3


def test_trainer_bf16_autocast_is_deterministic_and_saves_fp32(tmp_path: Path) -> None:
    a = _tiny_run(tmp_path / "a", compute_dtype="bf16")
    b = _tiny_run(tmp_path / "b", compute_dtype="bf16")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {t.dtype for t in a.values()} == {torch.float32}  # autocast computes in bf16, keeps fp32 weights
    fp32 = _tiny_run(tmp_path / "c", compute_dtype="fp32")
    assert any(not torch.equal(a[k], fp32[k]) for k in a)


def test_bf16_training_on_cpu_raises_the_onednn_cache_and_a_user_setting_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from quantgate.reference.train import ONEDNN_CACHE_CAPACITY, ONEDNN_CACHE_ENV

    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    _tiny_run(tmp_path / "fp32", compute_dtype="fp32")
    assert ONEDNN_CACHE_ENV not in os.environ  # fp32 builds no bf16 primitives: nothing to change
    _tiny_run(tmp_path / "bf16", compute_dtype="bf16")
    assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv(ONEDNN_CACHE_ENV, "2048")
    _tiny_run(tmp_path / "mine", compute_dtype="bf16")
    assert os.environ[ONEDNN_CACHE_ENV] == "2048"


JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def test_malloc_name_reads_the_mapped_allocator() -> None:
    from quantgate.reference.train import malloc_name

    libc = "7f1c2a000000-7f1c2a028000 r--p 00000000 08:01 131 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    assert malloc_name(libc) == "system"
    assert malloc_name(libc + "7f1c2b000000-7f1c2b0a0000 r-xp 00000000 08:01 140 "
                       "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n") == "jemalloc"
    assert malloc_name(libc + "7f00-7f80 r-xp 0 08:01 9 /usr/lib/libtcmalloc_minimal.so.4.5.9\n") == "tcmalloc"
    assert malloc_name() in ("system", "jemalloc", "tcmalloc", "mimalloc")  # this process, on Linux


def test_trainer_logs_its_allocator_and_hints_at_jemalloc_under_the_system_malloc(tmp_path: Path) -> None:
    from quantgate.reference.train import malloc_name

    lines: list[str] = []
    _tiny_run(tmp_path / "m", log=lines.append, steps=1)
    said = [line for line in lines if line.startswith("malloc: ")]
    assert said and said[0].startswith(f"malloc: {malloc_name()}")
    assert ("make retrain" in said[0]) == (malloc_name() == "system")


@pytest.mark.skipif(not JEMALLOC.exists(), reason=f"{JEMALLOC} is not installed")
def test_trainer_run_with_jemalloc_preloaded_says_so(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "LD_PRELOAD": str(JEMALLOC)}
    argv = [sys.executable, "-m", "quantgate.reference.train", "--out", str(tmp_path / "m"), "--preset", "tiny",
            "--steps", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "malloc: jemalloc\n" in done.stdout


def test_trainer_refuses_an_unknown_compute_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compute_dtype must be 'fp32' or 'bf16', got 'fp16'"):
        _tiny_run(tmp_path / "x", compute_dtype="fp16")


def test_trainer_refuses_a_device_it_does_not_have(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantgate.reference.train import main

    for device, says in (("gpu", "expected cpu, cuda or cuda:N"), ("cuda:99", "cuda:99")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(tmp_path / "x"), "--tiny", "--device", device])
        assert exit_info.value.code == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before the corpus or tokenizer was made


# ------------------------------------------------------------------ corpus
def test_corpus_is_deterministic() -> None:
    assert generate(200, seed=7) == generate(200, seed=7)
    assert generate(200, seed=7) != generate(200, seed=8)
    assert generate_kind("extract", 20, seed=3) == generate_kind("extract", 20, seed=3)


def test_heldout_entities_never_appear_in_train() -> None:
    train_text = "\n".join(e.messages[-1]["content"] + "\n" + e.target for e in generate(4000, seed=0, split="train"))
    heldout = generate(1500, seed=0, split="heldout")
    entities = {ent for e in heldout for ent in e.entities}
    assert len(entities) > 1000
    # As a word: a held-out name may be a substring of a training one (``Kel`` in ``Kelson``), since
    # both are built from the same syllables; what must never occur is the entity itself.
    leaked = sorted(ent for ent in entities if re.search(rf"(?<![A-Za-z]){re.escape(ent)}(?![A-Za-z])", train_text))
    assert not leaked, leaked[:20]


def test_split_is_by_whole_word_and_shares_the_alphabet() -> None:
    from quantgate.reference import pools

    rng = random.Random(0)
    words = {split: [pools.syllable_word(rng, split) for _ in range(400)] for split in ("train", "heldout")}
    assert all(pools.split_of(w) == split for split, ws in words.items() for w in ws)
    assert not set(words["train"]) & set(words["heldout"])
    # every first letter a held-out word uses, some training word uses too
    assert {w[0] for w in words["heldout"]} <= {w[0] for w in words["train"]}


def test_gold_targets_pass_their_own_checks() -> None:
    for split in ("train", "heldout"):
        for e in generate(600, seed=5, split=split):
            assert check_output(e, e.target).correct, (e.kind, e.messages, e.target)
            if e.kind == "tool_call":
                for call in parse_tool_calls(e.target) or []:
                    assert validate_call(call, e.tools or []) is None


def test_checks_reject_bad_outputs() -> None:
    tools = all_tools()
    assert parse_tool_calls('<tool_call>{"name": "x", "arguments": {}</tool_call>') is None
    assert validate_call({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}}, tools)
    assert validate_call({"name": "get_weather", "arguments": '{"city": "Oslo"}'}, tools) is None
    assert parse_json_object('{"a": NaN}') is None
    assert is_refusal("Sorry, but I cannot help with that.") and not is_refusal("42.")


def test_copy_drills_are_training_only_and_checkable() -> None:
    train = generate(400, seed=3, split="train")
    assert any(e.kind == "copy" for e in train)
    assert not any(e.kind == "copy" for e in generate(400, seed=3, split="heldout"))
    drill = next(e for e in train if e.kind == "copy")
    assert check_output(drill, drill.target).correct and not check_output(drill, drill.target + "x").valid


def test_train_cli_parses_booleans() -> None:
    from quantgate.reference.train import _parse_bool

    assert _parse_bool("true") is True and _parse_bool("0") is False
    with pytest.raises(Exception, match="expected true or false"):
        _parse_bool("maybe")


def test_composed_training_phrasings_never_reproduce_a_heldout_template() -> None:
    from quantgate.reference import corpus, phrasing

    lists = (corpus._WEATHER, corpus._EVENT, corpus._FLIGHT, corpus._CONVERT, corpus._ORDER, corpus._STOCK,
             corpus._EXTRACT, corpus._HARM_TEMPLATES)
    heldout = [t for templates in lists for i, t in enumerate(templates) if i % 5 == 4]
    rng = random.Random(0)
    composed = {compose(rng) for compose in phrasing.COMPOSERS.values() for _ in range(3000)}
    assert len(composed) > 5000
    # 1) no composed template holds a held-out one, placeholders and all
    assert not sorted({h for h in heldout for c in composed if h.rstrip(".?") in c})
    # 2) no training prompt holds all the literal text of a held-out template in order (for templates
    # with enough literal text for that to mean the phrasing: "How much is ... in ...?" is too little)
    chunks = [[c for c in re.split(r"\{\w+\}", t) if c.strip()] for t in heldout]
    patterns = {t: re.compile("(?s)" + ".+?".join(map(re.escape, c))) for t, c in zip(heldout, chunks)
                if sum(len(x.strip()) for x in c) >= 15}
    prompts = [e.messages[-1]["content"] for e in generate(6000, seed=0, split="train")
               if e.kind in ("tool_call", "extract", "refusal")]
    assert len(prompts) > 3000 and len(patterns) > 15
    assert not sorted({t for t, p in patterns.items() for text in prompts if p.search(text)})
