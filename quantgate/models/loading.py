"""Load a local Hugging Face causal-LM directory: config, safetensors weights, tokenizer, template.

Only safetensors are loaded by default. A ``.bin``/``.pt``/``.pth``/``.ckpt`` checkpoint is a pickle,
and unpickling runs arbitrary code from the file, so it is refused with a message naming the file
unless the caller opts in with ``allow_pickle=True`` (``--allow-pickle`` on the CLI). Nothing is
fetched from a hub: the path must be a local directory (``local_files_only``), so a typo cannot
turn into a download.

dtype is chosen at load time (fp32, bf16, fp16). On CPU, bf16 is the useful reduced precision: the
quantized CPU kernels are fast only with bf16 activations; fp16 is allowed but slow on most CPUs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate.errors import ModelLoadError, PickleRefusedError

__all__ = ["DTYPES", "LoadedModel", "check_device", "find_weight_files", "load_model", "resolve_dtype"]

# Names accepted on the command line and in manifests, mapped to torch dtype attribute names.
DTYPES: dict[str, str] = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before anything is loaded onto it.

    torch's own errors for these come late (after the weights are read) and as tracebacks
    ("Torch not compiled with CUDA enabled", "invalid device ordinal").
    """
    if not DEVICE_PATTERN.fullmatch(device):
        raise ModelLoadError(f"device {device!r}: expected cpu, cuda or cuda:N")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r}: no CUDA GPU is available to this process (torch "
                             f"{torch.__version__}, {'a CPU-only build' if torch.version.cuda is None else 'CUDA build'})")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


@dataclass
class LoadedModel:
    """A model ready to run: the torch module, its tokenizer, and where it came from."""

    model: Any  # transformers PreTrainedModel; typed loosely so this module imports without torch
    tokenizer: Any
    path: Path
    dtype: str  # canonical short name: fp32 | bf16 | fp16
    chat_template: str | None
    name: str
    variant: dict[str, Any] | None = None  # the manifest, when this is a quantized variant

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)


def resolve_dtype(name: str) -> Any:
    """Map 'fp32' | 'bf16' | 'fp16' (or the long names) to a torch dtype; reject anything else."""
    import torch

    key = name.lower()
    if key not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}: choose one of fp32, bf16, fp16")
    return getattr(torch, DTYPES[key])


def short_dtype(name: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[DTYPES[name.lower()]]


def find_weight_files(path: Path) -> tuple[list[Path], list[Path]]:
    """Return (safetensors files, pickle checkpoint files) found directly in ``path``."""
    safes = sorted(p for p in path.glob("*.safetensors"))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    return safes, pickles


def check_model_dir(path: str | os.PathLike[str], allow_pickle: bool = False) -> Path:
    """Validate that ``path`` is a loadable model directory; return it resolved.

    Raises ``ModelLoadError`` naming the missing or refused file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: no such directory")
    if not p.is_dir():
        raise ModelLoadError(f"{p}: not a directory (expected a Hugging Face model directory)")
    config = p / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{p}: config.json is missing; not a Hugging Face model directory")
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{config}: not valid JSON ({exc})") from None
    safes, pickles = find_weight_files(p)
    if not safes and pickles and not allow_pickle:
        raise PickleRefusedError(
            f"{pickles[0]}: pickle checkpoints can run arbitrary code when loaded; convert to "
            "safetensors, or pass --allow-pickle if you trust this file"
        )
    if not safes and not pickles:
        raise ModelLoadError(f"{p}: no *.safetensors weights found")
    return p


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot load tokenizer ({exc})") from None


def load_model(
    path: str | os.PathLike[str],
    dtype: str = "fp32",
    device: str = "cpu",
    allow_pickle: bool = False,
    chat_template: str | None = None,
) -> LoadedModel:
    """Load a local HF causal LM in eval mode with its tokenizer.

    ``chat_template`` (a Jinja string) overrides the template shipped with the model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path, allow_pickle=allow_pickle)
    check_device(device)
    torch_dtype = resolve_dtype(dtype)
    safes, _ = find_weight_files(p)
    tokenizer = load_tokenizer(p)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(p),
            dtype=torch_dtype,
            local_files_only=True,
            use_safetensors=bool(safes),
            # transformers >= 5.25 swaps layers for kernels from the Hub by default ("kernelize"):
            # they download at run time and change numerics, and without a matching `kernels`
            # package the load fails. The model runs on torch's own kernels, as it was measured.
            use_kernels=False,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{p}: cannot load model ({exc})") from None
    model.to(device)
    model.eval()
    template = chat_template or getattr(tokenizer, "chat_template", None)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=p,
        dtype=short_dtype(dtype),
        chat_template=template,
        name=p.name,
    )
