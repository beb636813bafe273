from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from quantgate.errors import ModelLoadError, PickleRefusedError
from quantgate.models import DEFAULT_CHAT_TEMPLATE, load_model, render_chat


@pytest.mark.parametrize("dtype,expected", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                            ("fp16", torch.float16)])
def test_loads_in_requested_dtype(tiny_model_dir: Path, dtype: str, expected: torch.dtype) -> None:
    loaded = load_model(tiny_model_dir, dtype=dtype)
    assert next(loaded.model.parameters()).dtype == expected
    assert loaded.dtype == dtype
    assert not loaded.model.training
    logits = loaded.model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, loaded.model.config.vocab_size)
    assert torch.isfinite(logits.float()).all()


def test_model_template_is_used(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir)
    text = render_chat(loaded.tokenizer, [{"role": "user", "content": "hi"}], chat_template=loaded.chat_template)
    assert text == "<|user|>hi<|end|><|assistant|>"


def test_default_template_when_model_has_none(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "m"
    shutil.copytree(tiny_model_dir, target)
    (target / "chat_template.jinja").unlink()
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(cfg))
    loaded = load_model(target)
    assert loaded.chat_template is None
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    text = render_chat(loaded.tokenizer, [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "hi"}], tools=tools)
    assert text.startswith("<|im_start|>system\nbe brief\n")
    assert '"name": "f"' in text
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert "im_start" in DEFAULT_CHAT_TEMPLATE


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(tmp_path / "absent")


def test_file_instead_of_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model(f)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        load_model(tmp_path)


def test_corrupt_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "m"
    shutil.copytree(tiny_model_dir, target)
    (target / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json: not valid JSON"):
        load_model(target)


def test_no_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "m"
    shutil.copytree(tiny_model_dir, target)
    (target / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weights"):
        load_model(target)


def _pickle_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, target)
    from safetensors.torch import load_file

    state = load_file(str(target / "model.safetensors"))
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    return target


def test_pickle_refused_by_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = _pickle_copy(tiny_model_dir, tmp_path)
    with pytest.raises(PickleRefusedError, match="pytorch_model.bin: pickle checkpoints can run arbitrary code"):
        load_model(target)


def test_pickle_loads_with_opt_in(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = _pickle_copy(tiny_model_dir, tmp_path)
    loaded = load_model(target, allow_pickle=True)
    reference = load_model(tiny_model_dir)
    ids = torch.tensor([[4, 5, 6]])
    assert torch.equal(loaded.model(ids).logits, reference.model(ids).logits)


def test_unknown_dtype(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown dtype 'int7'"):
        load_model(tiny_model_dir, dtype="int7")


def test_a_template_that_refuses_the_messages_is_a_clear_error(system_refusing_model_dir: Path) -> None:
    from quantgate.errors import ChatTemplateError

    loaded = load_model(system_refusing_model_dir)
    assert "<|user|>hi" in render_chat(loaded.tokenizer, [{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="chat template refused these messages: System role not supported"):
        render_chat(loaded.tokenizer, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])


def test_named_chat_templates_pick_tool_use_with_tools(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Hermes- and Command-R-style tokenizers ship {"default": ..., "tool_use": ...}
    from quantgate.errors import ChatTemplateError

    loaded = load_model(tiny_model_dir)
    tok = loaded.tokenizer
    tool = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    named = {"default": "{% for m in messages %}D:{{ m['content'] }}{% endfor %}",
             "tool_use": "{% for m in messages %}T:{{ m['content'] }}{% endfor %}/{{ tools | length }}"}
    assert render_chat(tok, [{"role": "user", "content": "hi"}], chat_template=named) == "D:hi"  # type: ignore[arg-type]
    assert render_chat(tok, [{"role": "user", "content": "hi"}], tool, chat_template=named) == "T:hi/1"  # type: ignore[arg-type]
    with pytest.raises(ChatTemplateError, match="chat templates tool_use and none named 'default'"):
        render_chat(tok, [{"role": "user", "content": "hi"}], chat_template={"tool_use": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "CPU", "cuda:"])
def test_a_malformed_device_is_named(tiny_model_dir: Path, device: str) -> None:
    with pytest.raises(ModelLoadError, match=f"device '{device}': expected cpu, cuda or cuda:N"):
        load_model(tiny_model_dir, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_before_loading(tiny_model_dir: Path, device: str) -> None:
    with pytest.raises(ModelLoadError, match=f"device '{device}': no CUDA GPU is available to this process"):
        load_model(tiny_model_dir, device=device)


def test_a_gpu_index_past_the_last_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="device 'cuda:64': (this machine has|no CUDA GPU)"):
        load_model(tiny_model_dir, device="cuda:64")
