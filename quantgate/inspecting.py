"""``quantgate inspect``: describe a variant or model directory without loading the model.

Reads only JSON and safetensors headers, so it answers in milliseconds even for large models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from quantgate.errors import ModelLoadError
from quantgate.models.loading import check_model_dir, find_weight_files
from quantgate.quantize.compat import linearized_summary
from quantgate.quantize.manifest import MANIFEST_NAME, read_manifest

__all__ = ["describe", "render"]


def describe(path: Path) -> dict[str, Any]:
    """Summarise ``path``: the manifest for a variant, config and tensor sizes for a model."""
    if (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        data = json.loads(manifest.to_json())
        return {"kind": "variant", "path": str(path), **data}
    check_model_dir(path, allow_pickle=True)
    config = json.loads((path / "config.json").read_text())
    safes, pickles = find_weight_files(path)
    tensors = _safetensors_sizes(safes)
    return {
        "kind": "model",
        "path": str(path),
        "architecture": (config.get("architectures") or ["?"])[0],
        "config": {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "vocab_size", "max_position_embeddings", "torch_dtype",
                                              "dtype", "tie_word_embeddings") if k in config},
        "parameters": sum(n for n, _ in tensors.values()),
        "weight_bytes": sum(b for _, b in tensors.values()),
        "weight_files": [p.name for p in safes] + [f"{p.name} (pickle)" for p in pickles],
    }


def _safetensors_sizes(files: list[Path]) -> dict[str, tuple[int, int]]:
    """name -> (elements, bytes), from the JSON header alone."""
    sizes: dict[str, tuple[int, int]] = {}
    for f in files:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ModelLoadError(f"{f}: corrupt safetensors header") from None
        for name, info in header.items():
            if name == "__metadata__":
                continue
            elements = 1
            for d in info["shape"]:
                elements *= d
            start, end = info["data_offsets"]
            sizes[name] = (elements, end - start)
    return sizes


def render(info: dict[str, Any], console: Console) -> None:
    if info["kind"] == "model":
        console.print(f"[bold]{info['path']}[/bold]: {info['architecture']}, "
                      f"{info['parameters'] / 1e6:.2f}M parameters, {info['weight_bytes'] / 1e6:.2f} MB")
        for k, v in info["config"].items():
            console.print(f"  {k}: {v}")
        console.print(f"  weights: {', '.join(info['weight_files'])}")
        return
    scheme = info["scheme"]
    wb = info["weight_bytes"]
    console.print(f"[bold]{info['path']}[/bold]: variant [bold]{scheme['name']}[/bold] "
                  f"(scheme v{scheme['version']}, compute {info['compute_dtype']}, packed for {info['device']})")
    console.print(f"  source: {info['source']['path']} (sha256 {info['source']['sha256'][:16]}...)")
    ratio = (f", {wb['linear_quantized'] / wb['linear_quantized_as_bf16']:.3f}x of bf16"
             if wb.get("linear_quantized_as_bf16") else "")
    console.print(f"  weights: {wb['total'] / 1e6:.2f} MB total; quantized linear "
                  f"{wb['linear_quantized'] / 1e6:.2f} MB{ratio}; float linear {wb['linear_float'] / 1e6:.2f} MB; "
                  f"other {wb['other'] / 1e6:.2f} MB")
    console.print(f"  quantized in {info['quantize_seconds']:.2f}s on {info['created_at']}; "
                  + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if info.get("probe_snr_db") is not None:
        console.print(f"  probe logits SNR against float: {info['probe_snr_db']:.1f} dB")
    if info.get("linearized"):
        console.print(f"  linearized: {linearized_summary(info['linearized'])}")
    for name, group in info.get("unquantized", {}).get("tensors", {}).items():
        console.print(f"  float outside linear layers: {name}, {group['bytes'] / 1e6:.2f} MB ({group['reason']})")
    if info.get("overrides"):
        console.print("  overrides: " + ", ".join("=".join(o) for o in info["overrides"]))
    table = Table()
    table.add_column("layer", no_wrap=True)
    for column in ("scheme", "shape", "tensor", "reason"):
        table.add_column(column)
    for name, layer in info["layers"].items():
        table.add_row(name, layer["scheme"], "x".join(map(str, layer["shape"])), layer.get("tensor", ""),
                      layer["reason"])
    console.print(table)
