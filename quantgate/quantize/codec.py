"""Flatten torchao quantized tensors into plain tensors plus JSON, and rebuild them, without pickle.

A quantized weight in torchao is a tensor subclass (``Int8Tensor``, ``Int4OpaqueTensor``...) made of
plain tensors (``tensor_data_names``: qdata, scale...) and small attributes (block size, dtype,
enums, config dataclasses). safetensors stores only plain tensors, so each subclass is written as
its component tensors under ``<name>::<component>`` with a JSON record of its class and attributes.

Loading rebuilds only classes in ``TENSOR_CLASSES`` and attribute types in ``ATTRIBUTE_CLASSES``:
a variant file is data, never code. torchao ships a similar helper
(``torchao.prototype.safetensors``), but its allowlist omits ``Int4OpaqueTensor``, the CPU int4
layout, and it is a prototype whose shape changes between releases; this module is ~150 lines we
control.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch

from quantgate.errors import ManifestError

__all__ = ["decode_attr", "encode_attr", "flatten_tensor", "is_quantized", "rebuild_tensor"]

SEP = "::"


def _tensor_classes() -> dict[str, type]:
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor
    from torchao.quantization import Float8Tensor, Int8Tensor, IntxUnpackedToInt8Tensor

    classes: list[type] = [Int8Tensor, Int4OpaqueTensor, IntxUnpackedToInt8Tensor, Float8Tensor]
    try:  # the CUDA int4 layout; present in the wheel even where no GPU is
        from torchao.quantization import Int4TilePackedTo4dTensor

        classes.append(Int4TilePackedTo4dTensor)
    except ImportError:
        pass
    return {c.__name__: c for c in classes}


def _attribute_classes() -> dict[str, type]:
    import torchao.quantization as tq
    from torchao.quantization.quantize_.common import KernelPreference
    from torchao.quantization.quantize_.workflows import (
        QuantizeTensorToFloat8Kwargs,
        QuantizeTensorToInt8Kwargs,
    )

    classes: list[type] = [
        tq.MappingType, KernelPreference, QuantizeTensorToInt8Kwargs, QuantizeTensorToFloat8Kwargs,
        tq.PerRow, tq.PerTensor, tq.PerGroup, tq.PerAxis, tq.PerToken,
    ]
    from torchao.float8.inference import Float8MMConfig

    classes.append(Float8MMConfig)
    return {c.__name__: c for c in classes}


def is_quantized(tensor: torch.Tensor) -> bool:
    return type(tensor) is not torch.Tensor and hasattr(type(tensor), "tensor_data_names")


def encode_attr(value: Any) -> Any:
    """Encode a tensor-subclass attribute as JSON-compatible data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "name": value.name}
    if isinstance(value, torch.Size):
        return {"size": list(value)}
    if hasattr(value, "_asdict"):  # NamedTuple
        return {"object": type(value).__name__, "fields": {k: encode_attr(v) for k, v in value._asdict().items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode_attr(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"object": type(value).__name__, "fields": fields}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [encode_attr(v) for v in value]}
    raise TypeError(f"cannot encode attribute of type {type(value).__name__}")


def decode_attr(data: Any, classes: dict[str, type] | None = None) -> Any:
    """Inverse of ``encode_attr``; only allowlisted classes are constructed."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, dict):
        raise ManifestError(f"bad tensor attribute record: {data!r}")
    classes = classes if classes is not None else _attribute_classes()
    if "dtype" in data:
        dtype = getattr(torch, data["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise ManifestError(f"unknown dtype {data['dtype']!r} in tensor record")
        return dtype
    if "size" in data:
        return torch.Size(data["size"])
    if "list" in data:
        return [decode_attr(v, classes) for v in data["list"]]
    if "tuple" in data:
        return tuple(decode_attr(v, classes) for v in data["tuple"])
    name = data.get("enum") or data.get("object")
    cls = classes.get(str(name))
    if cls is None:
        raise ManifestError(f"tensor record names class {name!r}, which is not allowed")
    if "enum" in data:
        return cls[data["name"]]
    return cls(**{k: decode_attr(v, classes) for k, v in data["fields"].items()})


def flatten_tensor(name: str, tensor: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a quantized tensor into component tensors (keyed ``name::component``) and a record."""
    cls = type(tensor)
    if cls.__name__ not in _tensor_classes():
        raise TypeError(f"{name}: cannot store tensor class {cls.__name__}")
    data_names = list(cls.tensor_data_names) + list(getattr(cls, "optional_tensor_data_names", []))
    attr_names = list(cls.tensor_attribute_names) + list(getattr(cls, "optional_tensor_attribute_names", []))
    parts: dict[str, torch.Tensor] = {}
    present: list[str] = []
    for comp in data_names:
        value = getattr(tensor, comp)
        if value is not None:
            parts[f"{name}{SEP}{comp}"] = value.detach().contiguous()
            present.append(comp)
    record = {
        "class": cls.__name__,
        "data": present,
        "attrs": {a: encode_attr(getattr(tensor, a)) for a in attr_names},
    }
    return parts, record


def rebuild_tensor(name: str, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild a quantized tensor from its record and the stored component tensors."""
    classes = _tensor_classes()
    cls = classes.get(str(record.get("class")))
    if cls is None:
        raise ManifestError(f"{name}: tensor class {record.get('class')!r} is not allowed")
    try:
        data = {comp: tensors[f"{name}{SEP}{comp}"] for comp in record["data"]}
        attrs = {k: decode_attr(v) for k, v in record["attrs"].items()}
    except KeyError as exc:
        raise ManifestError(f"{name}: stored weights lack component {exc}") from None
    required = [data.pop(c) for c in cls.tensor_data_names]
    required_attrs = [attrs.pop(a) for a in cls.tensor_attribute_names]
    return cls(*required, *required_attrs, **data, **attrs)
