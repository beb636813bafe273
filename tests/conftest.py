"""Shared fixtures: a tiny random Llama in a real HF directory, built once per session.

Random weights are enough for everything but behaviour: loading, quantization numerics, storage,
batching equivalence and scoring only need a real model of the real architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY_TEMPLATE = (
    "{%- for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(path: Path, seed: int = 0, hidden: int = 128, layers: int = 2) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.add_tokens(sorted(alphabet))
    tok.add_special_tokens(["<|end|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>")
    fast.chat_template = TINY_TEMPLATE
    fast.save_pretrained(str(path))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=320, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    return path


def _arch_config(arch: str, eos: int, pad: int) -> Any:
    import transformers as t

    common: dict[str, Any] = {"vocab_size": 320, "eos_token_id": eos, "pad_token_id": pad}
    if arch == "gpt2":
        return t.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=512, bos_token_id=eos, **common)
    if arch == "falcon":
        return t.FalconConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, bos_token_id=None, **common)
    if arch == "mistral":  # a 64-token sliding window, so a longer prompt crosses it
        return t.MistralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=512, sliding_window=64,
                               bos_token_id=None, **common)
    if arch == "bloom":  # ALiBi biases built from the 2D mask, no position embeddings
        return t.BloomConfig(hidden_size=128, n_layer=2, n_head=4, bos_token_id=None, **common)
    if arch == "gemma2":  # sliding and full layers in turn, logit soft-capping
        return t.Gemma2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=32, max_position_embeddings=512, sliding_window=64,
                              bos_token_id=None, **common)
    if arch == "gpt_oss":  # fused experts stored transposed, with biases
        return t.GptOssConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                              max_position_embeddings=512, sliding_window=64, bos_token_id=None, **common)
    if arch == "mamba":  # a recurrent state instead of keys and values
        return t.MambaConfig(hidden_size=64, num_hidden_layers=2, bos_token_id=None, **common)
    return t.MixtralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=512, bos_token_id=None, **common)


def build_tiny_arch_model(path: Path, arch: str) -> Path:
    """A tiny random model of a transformers architecture (``_arch_config``'s names) with the tiny Llama's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_model(path)  # the tokenizer; the Llama weights are replaced below
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_arch_config(arch, tok.eos_token_id, tok.pad_token_id))
    for f in path.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _with_template(source: Path, path: Path, template: str) -> Path:
    """A copy of the model directory ``source`` at ``path`` whose chat template is ``template``."""
    import json
    import shutil

    shutil.copytree(source, path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "chat_template.jinja").write_text(template)
    return path


# Gemma's template refuses a system turn this way (transformers' raise_exception inside the template).
SYSTEM_REFUSING_TEMPLATE = (
    "{%- for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)
# DeepSeek-R1's template opens the reasoning block in the prompt: whatever the model writes is
# reasoning until it closes the block.
REASONING_TEMPLATE = (
    "{%- for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)


@pytest.fixture(scope="session")
def system_refusing_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template that raises on a system message, as Gemma's does."""
    return _with_template(tiny_model_dir, tmp_path_factory.mktemp("system-refusing") / "m", SYSTEM_REFUSING_TEMPLATE)


@pytest.fixture(scope="session")
def reasoning_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template that opens a ``<think>`` block for the answer, as DeepSeek-R1's does."""
    return _with_template(tiny_model_dir, tmp_path_factory.mktemp("reasoning") / "m", REASONING_TEMPLATE)
