"""Write a quantized variant to a directory and load it back without re-stating the scheme.

Layout of a variant directory (see ``manifest`` for the manifest's fields)::

    manifest.json          scheme, per-layer precision, source + hash, bytes, timings, versions
    config.json            the source model's config (tie_word_embeddings cleared if lm_head was
                           quantized apart from the embedding)
    model.safetensors      every parameter and buffer; quantized weights as their components
    tokenizer files        copied from the source, so the directory stands alone

Why not ``torch.save`` of the quantized module: that is a pickle, and quantgate refuses pickles on
load. Why not re-quantize from the source on load: it needs the source model present and repeats
the work each start. The cost of this layout is that packed formats are device-specific (int4 on
CPU is packed for ``_weight_int4pack_mm_for_cpu``), so a variant records the device it was packed
for and refuses to load elsewhere. Loading builds the model skeleton on the meta device (no random
init, no double memory) and assigns the stored tensors; non-persistent buffers such as rotary
frequencies are stored too, so nothing is left uninitialised. Modules the quantizer turned into
``nn.Linear`` (``compat``: GPT-2's ``Conv1D``) are stored as such, and loading turns the skeleton's
the same way first, as the manifest's ``linearized`` lists them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from quantgate.errors import ManifestError, ModelLoadError, QuantgateError, UnsupportedSchemeError
from quantgate.models.loading import (DTYPES, LoadedModel, check_device, check_model_dir, load_model, load_tokenizer,
                                      resolve_dtype, short_dtype)
from quantgate.quantize.apply import QuantizeResult, quantize_model
from quantgate.quantize.compat import linearize
from quantgate.quantize.manifest import MANIFEST_NAME, Manifest, hash_model_dir, read_manifest
from quantgate.quantize.schemes import SCHEMES, Scheme, get_scheme

__all__ = ["is_variant_dir", "load_any", "load_variant", "quantize_to_dir", "save_variant"]

WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "added_tokens.json", "generation_config.json", "tokenizer.model", "vocab.json",
    "merges.txt",
)
# Named chat templates beside the default one (``tool_use`` for Hermes-style models): without them a
# variant would prompt tool requests differently from its source model.
TOKENIZER_DIRS = ("additional_chat_templates",)


def is_variant_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def _versions() -> dict[str, str]:
    import torch
    import torchao
    import transformers

    from quantgate import __version__

    return {
        "quantgate": __version__,
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "transformers": transformers.__version__,
    }


def _collect_tensors(model: Any) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """All parameters and buffers by name; shared tensors stored once with aliases.

    Returns (tensors, aliases name -> stored name, names of parameters as opposed to buffers).
    """
    tensors: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[int, str] = {}
    params: set[str] = set()
    named = [(n, t, True) for n, t in model.named_parameters(remove_duplicate=False)]
    named += [(n, t, False) for n, t in model.named_buffers(remove_duplicate=False)]
    for name, tensor, is_param in named:
        if is_param:
            params.add(name)
        if id(tensor) in seen:
            aliases[name] = seen[id(tensor)]
            continue
        seen[id(tensor)] = name
        tensors[name] = tensor.data if is_param else tensor
    return tensors, aliases, params


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


def save_variant(
    loaded: LoadedModel,
    result: QuantizeResult,
    scheme: Scheme,
    out_dir: Path,
    device: str,
    overrides: list[tuple[str, str]],
    dtype_loaded: str | None = None,
) -> Manifest:
    """Write the quantized ``loaded.model`` and its manifest into ``out_dir``.

    ``dtype_loaded``: the dtype the source was loaded in, when not the compute dtype ``loaded.dtype``.
    """
    from safetensors.torch import save_file

    from quantgate.quantize.codec import flatten_tensor, is_quantized

    tensors, aliases, params = _collect_tensors(loaded.model)
    flat: dict[str, Any] = {}
    records: dict[str, Any] = {}
    linear_names = {f"{p.name}.weight" for p in result.layers}
    counts = {"total": 0, "linear_quantized": 0, "linear_float": 0, "other": 0,
              "linear_quantized_as_bf16": 0}
    for name, tensor in tensors.items():
        if is_quantized(tensor):
            parts, record = flatten_tensor(name, tensor)
            flat.update(parts)
            records[name] = record
            size = sum(_nbytes(p) for p in parts.values())
            counts["linear_quantized"] += size
            counts["linear_quantized_as_bf16"] += int(tensor.numel()) * 2
        else:
            flat[name] = tensor.detach().contiguous()
            size = _nbytes(tensor)
            counts["linear_float" if name in linear_names else "other"] += size
        counts["total"] += size
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"quantgate": json.dumps({"quantized": records, "aliases": aliases,
                                         "parameters": sorted(params)})}
    save_file(flat, str(out_dir / WEIGHTS_NAME), metadata=metadata)
    loaded.model.config.save_pretrained(str(out_dir))
    for fname in TOKENIZER_FILES:
        if (loaded.path / fname).is_file():
            shutil.copy2(loaded.path / fname, out_dir / fname)
    for dname in TOKENIZER_DIRS:
        if (loaded.path / dname).is_dir():
            shutil.copytree(loaded.path / dname, out_dir / dname, dirs_exist_ok=True)
    layers = {p.name: {**p.to_dict(), "tensor": result.tensor_classes.get(p.name, "Tensor")}
              for p in result.layers}
    manifest = Manifest(
        scheme=scheme.to_dict(),
        compute_dtype=loaded.dtype,
        device=device,
        layers=layers,
        source={"path": str(loaded.path), "name": loaded.name, "sha256": hash_model_dir(loaded.path),
                "dtype_loaded": dtype_loaded or loaded.dtype},
        weight_bytes=counts,
        quantize_seconds=round(result.seconds, 3),
        versions=_versions(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        overrides=[list(o) for o in overrides],
        linearized=result.linearized,
        unquantized=result.unquantized,
        probe_snr_db=result.probe_snr_db,
    )
    manifest.write(out_dir)
    return manifest


def quantize_to_dir(
    model_dir: str | os.PathLike[str],
    scheme_name: str,
    out_dir: str | os.PathLike[str],
    overrides: list[tuple[str, str]] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    allow_pickle: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> Manifest:
    """Load ``model_dir``, quantize it with ``scheme_name``, and write the variant to ``out_dir``.

    ``dtype`` overrides the scheme's compute dtype. By default it is ``Scheme.resolved_compute_dtype``,
    raised to bf16 when a per-layer override uses a scheme that needs bf16 (int4 on CPU): one model
    has one activation dtype.
    """
    scheme = get_scheme(scheme_name)
    scheme.check_device(device)
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not is_variant_dir(out):
        raise QuantgateError(f"{out}: exists and is not empty (and is not a quantgate variant); "
                             "choose another --out")
    if is_variant_dir(model_dir):
        raise QuantgateError(f"{model_dir}: is already a quantized variant; quantize the source model")
    check_model_dir(model_dir, allow_pickle=allow_pickle)
    stage = on_stage or (lambda _s: None)
    stage("loading model")
    if dtype is None:
        named = [SCHEMES[name] for _, name in overrides or [] if name in SCHEMES]  # unknown: quantize_model says
        int4_needs_bf16 = any(s.quantizes and s.compute_dtype == "bf16" for s in named)
        dtype = "bf16" if int4_needs_bf16 else scheme.resolved_compute_dtype(device)
    # A bf16/fp16 checkpoint for fp32 activations loads as it is stored and is widened layer by layer
    # while quantizing (quantize_model): half the peak memory of loading it widened.
    stored = _checkpoint_dtype(Path(model_dir))
    load_as = stored if dtype == "fp32" and stored in ("bf16", "fp16") else dtype
    loaded = load_model(model_dir, dtype=load_as, device=device, allow_pickle=allow_pickle)
    stage(f"quantizing to {scheme.name}")
    result = quantize_model(loaded.model, scheme, overrides or [], device=device, compute_dtype=dtype)
    loaded.dtype = dtype
    stage("writing variant")
    return save_variant(loaded, result, scheme, out, device, overrides or [], dtype_loaded=load_as)


def _checkpoint_dtype(model_dir: Path) -> str | None:
    """The dtype ``config.json`` says the weights are stored in (``torch_dtype``, or ``dtype`` in newer files)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None  # load_model reports a bad config with its own message
    stored = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return short_dtype(stored) if isinstance(stored, str) and stored.lower() in DTYPES else None


def load_variant(path: str | os.PathLike[str], device: str = "cpu") -> LoadedModel:
    """Load a variant directory written by ``save_variant``; the manifest says how."""
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from quantgate.quantize.codec import rebuild_tensor

    p = Path(path).expanduser()
    manifest = read_manifest(p)
    scheme = get_scheme(manifest.scheme_name)
    layer_schemes = {str(layer.get("scheme", "none")) for layer in manifest.layers.values() if isinstance(layer, dict)}
    used = [get_scheme(name) for name in sorted(({scheme.name} | layer_schemes) - {"none"})]
    packed_for = manifest.device.split(":")[0]
    if any(s.kind == "int4wo" for s in used) and packed_for != device.split(":")[0]:
        raise ManifestError(f"{p}: int4 weights were packed for {manifest.device}; cannot load on {device}")
    check_device(device)
    for used_scheme in used:  # fp8 needs a GPU that has fp8 matmuls
        try:
            used_scheme.check_device(device)
        except UnsupportedSchemeError as exc:
            raise UnsupportedSchemeError(f"{p}: {exc}") from None
    weights = p / WEIGHTS_NAME
    if not weights.is_file():
        raise ManifestError(f"{p}: {WEIGHTS_NAME} is missing")
    try:
        with safe_open(str(weights), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("quantgate", "null"))
        tensors = load_file(str(weights), device=device)
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{weights}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise ManifestError(f"{weights}: no quantgate metadata; not written by quantgate")
    config = AutoConfig.from_pretrained(str(p), local_files_only=True)
    compute = resolve_dtype(manifest.compute_dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute)
    if manifest.linearized:
        try:
            linearize(model, only=manifest.linearized)
        except ValueError as exc:
            raise ManifestError(f"{p / MANIFEST_NAME}: field 'linearized': {exc}") from None
    params = set(meta["parameters"])
    cache: dict[str, Any] = {}
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    for name in names:
        stored = meta["aliases"].get(name, name)
        if stored not in cache:
            if stored in meta["quantized"]:
                cache[stored] = rebuild_tensor(stored, meta["quantized"][stored], tensors)
            elif stored in tensors:
                cache[stored] = tensors[stored]
            else:
                raise ManifestError(f"{weights}: tensor {stored!r} is missing")
            if stored in params:
                cache[stored] = torch.nn.Parameter(cache[stored], requires_grad=False)
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if name in params:
            setattr(module, attr, cache[stored])
        else:
            module._buffers[attr] = cache[stored]
    model.eval()
    tokenizer = load_tokenizer(p)
    return LoadedModel(model=model, tokenizer=tokenizer, path=p, dtype=manifest.compute_dtype,
                       chat_template=getattr(tokenizer, "chat_template", None), name=p.name,
                       variant=json.loads(manifest.to_json()))


def load_any(
    path: str | os.PathLike[str],
    dtype: str | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    chat_template: str | None = None,
) -> LoadedModel:
    """Load a quantgate variant directory or a plain HF model directory, whichever ``path`` is."""
    if is_variant_dir(path):
        if dtype is not None:
            raise ModelLoadError(f"{path}: a variant runs in the dtype it was made for; drop --dtype")
        loaded = load_variant(path, device=device)
        if chat_template:
            loaded.chat_template = chat_template
        return loaded
    return load_model(path, dtype=dtype or "fp32", device=device, allow_pickle=allow_pickle,
                      chat_template=chat_template)
