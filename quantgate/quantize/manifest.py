"""``manifest.json``: what a variant directory is, readable by people and by quantgate.

A variant directory holds ``config.json`` and the tokenizer files (copied from the source model, so
the directory is self-contained), ``model.safetensors`` (float tensors as they are, quantized
tensors as their components, see ``codec``), and this manifest. The manifest records the scheme
in full (not only its name), the precision of every linear layer, the source model and a hash of
its files, byte counts, the seconds quantization took, the device the weights were packed for,
and the library versions. Three later fields are optional, so older manifests still load:
``linearized`` (modules stored as ``nn.Linear`` that the model's own code builds otherwise, such as
GPT-2's ``Conv1D``; loading rebuilds them the same way), ``unquantized`` (weights outside linear
layers that stay float, with why) and ``probe_snr_db`` (quantized against float logits on a fixed
probe). Loading reads the scheme from here, so nobody re-states it; a mismatch between manifest
and weights is a ``ManifestError`` naming the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from quantgate.errors import ManifestError

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "hash_model_dir", "read_manifest", "size_warning"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    scheme: dict[str, Any]
    compute_dtype: str
    device: str
    layers: dict[str, dict[str, Any]]
    source: dict[str, Any]
    weight_bytes: dict[str, int]
    quantize_seconds: float
    versions: dict[str, str]
    created_at: str
    overrides: list[list[str]] = field(default_factory=list)
    linearized: dict[str, str] = field(default_factory=dict)
    unquantized: dict[str, Any] = field(default_factory=dict)
    probe_snr_db: float | None = None
    format_version: int = FORMAT_VERSION

    @property
    def scheme_name(self) -> str:
        return str(self.scheme["name"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json())
        return path


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/manifest.json``; errors name the file and the field."""
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing; not a quantgate variant directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: corrupt manifest, not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: corrupt manifest, expected a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {version!r} is not supported (this quantgate reads {FORMAT_VERSION})"
        )
    known = {f.name: f for f in fields(Manifest)}
    optional = ("overrides", "linearized", "unquantized", "probe_snr_db", "format_version")
    required = [n for n in known if n not in optional]
    missing = [n for n in required if n not in data]
    if missing:
        raise ManifestError(f"{path}: corrupt manifest, missing field(s) {', '.join(missing)}")
    for name, expect in (("scheme", dict), ("layers", dict), ("source", dict), ("weight_bytes", dict),
                         ("versions", dict), ("compute_dtype", str), ("linearized", dict), ("unquantized", dict)):
        if name in data and not isinstance(data[name], expect):
            raise ManifestError(f"{path}: field {name!r} must be a JSON {expect.__name__}")
    if "name" not in data["scheme"]:
        raise ManifestError(f"{path}: field 'scheme' has no 'name'")
    unknown = set(data) - set(known)
    if unknown:
        raise ManifestError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return Manifest(**data)


def size_warning(manifest: Manifest) -> str | None:
    """A sentence for the user when the quantized layers take far more bytes than their bit width says.

    Two known causes: 2- and 3-bit weights are stored unpacked in int8, and torch's CUDA int4 kernel
    (tinygemm) pads in_features to a multiple of 1,024, so a small model's int4 layers can outgrow bf16.
    """
    wb, bits = manifest.weight_bytes, int(manifest.scheme.get("weight_bits", 16))
    if bits >= 16 or not wb.get("linear_quantized_as_bf16"):
        return None
    ratio, expected = wb["linear_quantized"] / wb["linear_quantized_as_bf16"], bits / 16
    if ratio < 1.5 * expected + 0.02:  # scales and zero points add a few percent
        return None
    kind = manifest.scheme.get("kind")
    if kind == "intxwo":
        why = "this scheme stores its weights unpacked in int8 (it exists to stress quality)"
    elif kind == "int4wo" and manifest.device.startswith("cuda"):
        widths = [layer.get("shape", [0, 0])[-1] for layer in manifest.layers.values() if layer.get("scheme") != "none"]
        padded = sorted({w for w in widths if isinstance(w, int) and w % 1024})
        why = (f"the CUDA int4 kernel pads in_features to a multiple of 1,024 (here {padded[:4]})"
               if padded else "see `quantgate inspect`")
    else:
        why = "see `quantgate inspect`"
    return (f"the quantized layers take {ratio:.2f}x their bf16 bytes, not the ~{expected:.2f}x of "
            f"{bits}-bit weights: {why}")


def hash_model_dir(directory: Path) -> str:
    """sha256 over config.json and the weight files, in name order: identifies the source model."""
    digest = hashlib.sha256()
    files = [directory / "config.json", *sorted(directory.glob("*.safetensors"))]
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()
