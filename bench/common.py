"""Shared helpers for the benchmarks: models to measure, weight accounting, machine info, output.

Everything goes through quantgate's own code path (``quantize_model``, ``LoadedModel``,
``LocalEngine``); this module only builds inputs and reads results.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
REFERENCE_DIR = REPO / "quantgate" / "reference" / "weights"

# The random model: Llama architecture, ~290M parameters, untied head (as in Llama 2/3).
RANDOM_CONFIG = dict(
    vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=20,
    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
    tie_word_embeddings=False,
)
# --model random-moe: a Mixtral-shaped mixture of experts, ~360M parameters, 2 of 8 experts a token
# (~110M active), for what quantizing the experts (quantize/experts.py) buys.
MOE_CONFIG = dict(
    vocab_size=32000, hidden_size=1024, intermediate_size=1408, num_hidden_layers=8,
    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
    num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False,
)
QUICK_MOE_CONFIG = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
)
# --quick: same shapes family, small enough for a smoke run.
QUICK_CONFIG = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    tie_word_embeddings=False,
)


def quiet_torchao() -> None:
    """torchao warns at import about CUDA extensions a CPU box cannot load; keep output readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def setup_torch(threads: int = 2) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)


# -- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import torch
    import torchao
    import transformers

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: leave both unknown
        lines = []
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k.strip()}
    cpu = fields.get("model name", "unknown")
    have = set(fields.get("flags", "").split())
    flags = ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
                     if f in have)
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "argv": " ".join(sys.argv),
    }


def training_running() -> bool:
    """Whether the reference-model trainer is using the CPU (it would distort every number)."""
    import subprocess

    try:
        out = subprocess.run(["pgrep", "-f", "quantgate.reference.train"], capture_output=True, text=True)
    except OSError:
        return False
    return bool(out.stdout.strip())


def others_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by each process except this one and its descendants, by pid.

    Two readings around a measurement give how many cores other work took meanwhile (another
    benchmark, a training run): the numbers are only trustworthy when that is near zero.
    A process that exits between the readings is missed; it is a guard, not an audit.
    """
    me = os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick

    def mine(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            if pid == me:
                return True
            pid = parent.get(pid, 1)
            seen += 1
        return False

    return {pid: t for pid, t in used.items() if not mine(pid)}


class OtherLoad:
    """Context manager: average cores used by other processes while the block ran."""

    def __enter__(self) -> OtherLoad:
        import time

        self.t0, self.c0 = time.perf_counter(), others_cpu_seconds()
        self.cores = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        import time

        wall = time.perf_counter() - self.t0
        now = others_cpu_seconds()
        used = sum(max(0.0, t - self.c0.get(pid, 0.0)) for pid, t in now.items())
        self.cores = used / wall if wall > 0 else 0.0


# -- models ---------------------------------------------------------------------------------


def build_random_tokenizer(vocab_size: int, seed: int = 0) -> Any:
    """A byte-level BPE trained on generated pseudo-words to exactly ``vocab_size`` tokens.

    The model's ids then all decode to real text, so the engine's per-token detokenisation costs
    what it would with a real tokenizer. There is no EOS token: every row runs its full length.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + list("aeiou")
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(60000)]

    def texts() -> Any:
        r = random.Random(seed + 1)
        for _ in range(20000):
            yield " ".join(r.choice(words) for _ in range(30))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>")


@dataclass
class ModelSource:
    """Something that can hand out a fresh model in a given dtype, plus its tokenizer."""

    name: str
    kind: str  # "random" | "reference"
    path: Path | None
    tokenizer: Any
    chat_template: str | None
    _fp32: Any = None  # random model: one fp32 master, copied per scheme

    def fresh(self, dtype: str) -> Any:
        """A new LoadedModel in ``dtype`` (fp32 | bf16), not shared with any earlier one."""
        import torch

        from quantgate.models.loading import LoadedModel, load_model

        if self.kind == "reference":
            assert self.path is not None
            return load_model(self.path, dtype=dtype)
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        model = copy.deepcopy(self._fp32).to(torch_dtype).eval()
        return LoadedModel(model=model, tokenizer=self.tokenizer, path=Path("<in-memory>"),
                           dtype=dtype, chat_template=self.chat_template, name=self.name)

    def param_count(self) -> int:
        if self._fp32 is not None:
            return sum(p.numel() for p in self._fp32.parameters())
        loaded = self.fresh("fp32")
        return sum(p.numel() for p in loaded.model.parameters())


def random_source(quick: bool = False, seed: int = 0, moe: bool = False) -> ModelSource:
    """The random Llama, or with ``moe`` the random Mixtral (``MOE_CONFIG``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    if moe:
        cfg, config_class, model_class = dict(QUICK_MOE_CONFIG if quick else MOE_CONFIG), MixtralConfig, MixtralForCausalLM
    else:
        cfg, config_class, model_class = dict(QUICK_CONFIG if quick else RANDOM_CONFIG), LlamaConfig, LlamaForCausalLM
    tokenizer = build_random_tokenizer(cfg["vocab_size"], seed)
    config = config_class(**cfg, pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = model_class(config).eval()
    model.generation_config.eos_token_id = None
    params = sum(p.numel() for p in model.parameters())
    name = f"random-{'mixtral' if moe else 'llama'}-{params / 1e6:.0f}M"
    return ModelSource(name=name, kind="random", path=None, tokenizer=tokenizer,
                       chat_template=None, _fp32=model)


def reference_source(path: Path | None = None) -> ModelSource | str:
    """The bundled reference model, or a message saying why it cannot be used."""
    from quantgate.errors import QuantgateError
    from quantgate.models.loading import check_model_dir, load_tokenizer

    p = Path(path) if path else REFERENCE_DIR
    try:
        check_model_dir(p)
    except QuantgateError as exc:
        return f"reference model not available: {exc}"
    tokenizer = load_tokenizer(p)
    return ModelSource(name=f"reference ({p.name})", kind="reference", path=p, tokenizer=tokenizer,
                       chat_template=getattr(tokenizer, "chat_template", None))


def free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- weight accounting ----------------------------------------------------------------------


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


def tensor_bytes(name: str, tensor: Any) -> int:
    """Bytes a tensor holds as stored: a quantized subclass counts its component tensors."""
    from quantgate.quantize.codec import flatten_tensor, is_quantized

    if is_quantized(tensor):
        parts, _ = flatten_tensor(name, tensor)
        return sum(_nbytes(p) for p in parts.values())
    return _nbytes(tensor)


def weight_bytes(model: Any) -> dict[str, int]:
    """Resident bytes of a model's parameters and buffers, each shared tensor counted once.

    ``linear`` is every ``nn.Linear``'s weight and bias, and the 3-D weights of fused MoE experts that
    quantizing turns into linear layers (``quantize.experts``: so a float MoE model's column compares
    with its quantized variants'); ``linear_quantized`` the weights stored as a quantized subclass, and
    ``linear_quantized_as_bf16`` what those same weights take in bf16.
    """
    import torch

    from quantgate.quantize.codec import is_quantized
    from quantgate.quantize.experts import EXPERT_PARAMS, eligibility

    linear_names: set[str] = set()
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, torch.nn.Linear):
            linear_names.add(prefix + "weight")
            if module.bias is not None:
                linear_names.add(prefix + "bias")
        elif eligibility(module) is None:
            linear_names.update(prefix + name for name in EXPERT_PARAMS)
    counts = {"total": 0, "linear": 0, "linear_as_bf16": 0, "linear_quantized": 0,
              "linear_quantized_as_bf16": 0, "other": 0}
    seen: set[int] = set()
    named = list(model.named_parameters(remove_duplicate=False))
    named += list(model.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        key = id(tensor)
        if key in seen:
            continue
        seen.add(key)
        data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
        size = tensor_bytes(name, data)
        counts["total"] += size
        if name in linear_names:
            counts["linear"] += size
            counts["linear_as_bf16"] += int(data.numel()) * 2
            if is_quantized(data):
                counts["linear_quantized"] += size
                counts["linear_quantized_as_bf16"] += int(data.numel()) * 2
        else:
            counts["other"] += size
    return counts


# -- output ---------------------------------------------------------------------------------


def default_json(prefix: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS / f"{prefix}-{stamp}.json"


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# -- servers for the benchmarks that measure over HTTP (gateway.py, capacity.py) -----------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers (any 2xx) or ``timeout`` seconds pass."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_process(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A background server process; its stderr is kept for a failure message."""
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
