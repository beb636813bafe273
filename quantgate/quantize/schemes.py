"""Named quantization schemes: one versioned, serialisable dataclass each, mapped to a torchao config.

A scheme name is what users type (``int8wo``, ``int4wo-g128``...) and what a manifest records. The
``Scheme`` dataclass carries everything needed to rebuild the torchao config, so a variant
directory never depends on a name meaning the same thing across quantgate releases: ``version``
bumps whenever a scheme's numerics change.

Which torchao path each scheme takes, and why (torchao 0.18, torch 2.13):

- ``int8wo``: ``Int8WeightOnlyConfig``, per-channel (per output row). On the CPU, decode steps
  with fp32 activations run quantgate's own kernel (``quantize.int8_kernel``); with bf16 ones,
  compiled, inductor turns torchao's arithmetic into ``aten._weight_int8pack_mm``.
- ``int4wo-gN``: on CPU, the prototype ``PrototypeInt4WeightOnlyConfig`` (opaque packing for
  ``aten._weight_int4pack_mm_for_cpu``); on CUDA, ``Int4WeightOnlyConfig`` in the tile-packed
  layout of torch's own tinygemm kernel (``aten._weight_int4pack_mm``): torchao's default there, the
  plain layout, runs on kernels of the separate ``mslk`` package, which few installs have. The packed
  layout differs per device, so a variant records the device it was packed for. Needs in_features
  divisible by the group size and out_features by 16.
- ``int8dq``: ``Int8DynamicActivationInt8WeightConfig``: int8 weights and per-token int8
  activations.
- ``int2wo-g32`` / ``int3wo-g32``: ``IntxWeightOnlyConfig`` with 2- or 3-bit weights in groups of
  32, stored unpacked in int8. It saves no memory and runs slowly; it exists to stress quality, so
  the gate has a variant that must fail.
- ``fp8wo`` / ``fp8dq``: ``Float8WeightOnlyConfig`` / ``Float8DynamicActivationFloat8WeightConfig``
  (per-row). The fp8 matmuls need a CUDA GPU of compute capability 8.9+ (Ada, Hopper); elsewhere
  they are refused before any work is done.
- ``fp32`` / ``bf16`` / ``fp16``: no quantization, only the dtype; the float baselines of a ladder.

Compute dtype (the activations' dtype): schemes whose kernels accept either say ``auto``, resolved
when a variant is made (``resolved_compute_dtype``) to bf16 on CUDA or on a CPU with native bf16
(AVX512-BF16 or AMX), else fp32. On an AVX2-only CPU bf16 arithmetic is emulated: measured on the
reference model there, an ``int8wo`` prefill of 16x150 tokens took 1.58 s with bf16 activations and
0.29 s with fp32 (``int2wo-g32``: 1.96 s vs 0.39 s). ``int4wo`` stays bf16 everywhere: its CPU
kernel with fp32 activations was 23x slower still. ``int8wo`` resolves to fp32 on any CPU where
quantgate's own int8 decode kernel runs (``quantize.int8_kernel``: AVX2, FMA, a C compiler): on a
2-core AMD EPYC with ``avx512_bf16`` a 291M Llama decoded at 59.1 tok/s eager and 61.8 compiled at
batch 1 in fp32 through the kernel, against 12.4 and 44.6 with bf16 activations on torchao's path (bf16 eager 19.1-23.4; batch 8 eager 128.9 against 69.1), for a prefill 0.6x as fast
(291 against 498 tok/s at 128 tokens): docs/benchmarks.md, *int8wo's compute dtype on the AMD
avx512_bf16 host*. The same holds with AMX, where bf16 keeps the prefill on its tiles: on a 2-core
Intel Xeon with AMX the 291M Llama decoded at 43.7 tok/s eager and 61.0 compiled in fp32 against 11.9
and 40.5 in bf16 (bf16 eager 21.1; batch 8 eager 169 against 90), for a prefill 0.42x as fast (410
against 970 tok/s): docs/benchmarks.md, *The kernels on an Intel Xeon with AMX*. A variant that must
prefill fast there can ask for bf16 (``quantgate quantize ... --dtype bf16``). The variant records the
dtype it resolved to and always loads in it, so a variant behaves the same on whichever machine it is
served.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from quantgate.errors import UnknownSchemeError, UnsupportedSchemeError

__all__ = ["SCHEMES", "Scheme", "cpu_flags", "cpu_has_native_bf16", "cpu_vendor", "get_scheme", "int8_kernel_ready",
           "scheme_names"]

Kind = Literal["float", "int8wo", "int4wo", "int8dq", "intxwo", "fp8wo", "fp8dq"]


@dataclass(frozen=True)
class Scheme:
    """A quantization recipe. ``kind`` selects the torchao config; the rest parameterise it."""

    name: str
    kind: Kind
    weight_bits: int  # bits per stored weight value (16/32 for float schemes)
    group_size: int | None = None  # None: per output channel (or not quantized)
    activation: Literal["none", "int8", "fp8"] = "none"
    compute_dtype: Literal["fp32", "bf16", "fp16", "auto"] = "auto"
    version: int = 1
    description: str = ""

    @property
    def quantizes(self) -> bool:
        return self.kind != "float"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scheme:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise UnknownSchemeError(f"scheme record has unknown fields: {sorted(unknown)}")
        return cls(**data)

    def resolved_compute_dtype(self, device: str) -> Literal["fp32", "bf16", "fp16"]:
        """The activation dtype a variant made on ``device`` should compute in (``auto`` resolved)."""
        if self.compute_dtype != "auto":
            return self.compute_dtype
        if device.startswith("cuda"):
            return "bf16"
        if self.kind == "int8wo" and int8_kernel_ready():
            return "fp32"  # quantgate's fp32 decode kernel beats torchao's bf16 path (module docstring)
        return "bf16" if cpu_has_native_bf16() else "fp32"

    def check_device(self, device: str) -> None:
        """Refuse schemes the device cannot run, before any model is touched."""
        if self.kind in ("fp8wo", "fp8dq"):
            if device.startswith("cuda"):
                from quantgate.models.loading import check_device

                check_device(device)
            else:
                raise UnsupportedSchemeError(
                    f"scheme {self.name!r} needs fp8 matmul support (a CUDA GPU of compute "
                    f"capability 8.9+, e.g. L4, H100); this device is {device!r}"
                )
            import torch

            if torch.cuda.get_device_capability(device) < (8, 9):
                major, minor = torch.cuda.get_device_capability(device)
                raise UnsupportedSchemeError(
                    f"scheme {self.name!r} needs compute capability 8.9+; {device} has {major}.{minor}"
                )

    def layer_fits(self, in_features: int, out_features: int) -> str | None:
        """Why a linear layer of this shape cannot take the scheme, or None when it can."""
        if self.group_size and in_features % self.group_size:
            return f"in_features {in_features} not divisible by group size {self.group_size}"
        if self.kind == "int4wo" and out_features % 16:
            return f"out_features {out_features} not divisible by 16 (int4 packing)"
        return None

    def torchao_config(self, device: str) -> Any:
        """Build the torchao config object for ``quantize_``."""
        import torch
        import torchao.quantization as tq

        if self.kind == "int8wo":
            return tq.Int8WeightOnlyConfig()
        if self.kind == "int8dq":
            return tq.Int8DynamicActivationInt8WeightConfig()
        if self.kind == "int4wo":
            if device.startswith("cuda"):
                return tq.Int4WeightOnlyConfig(group_size=self.group_size or 128,
                                               int4_packing_format="tile_packed_to_4d")
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=self.group_size or 128)
        if self.kind == "intxwo":
            dtype = {2: torch.int2, 3: torch.int3, 4: torch.int4}[self.weight_bits]
            return tq.IntxWeightOnlyConfig(
                weight_dtype=dtype, granularity=tq.PerGroup(self.group_size or 32)
            )
        if self.kind == "fp8wo":
            return tq.Float8WeightOnlyConfig()
        if self.kind == "fp8dq":
            return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow())
        raise UnknownSchemeError(f"scheme {self.name!r} does not quantize")


def _field(cpuinfo: str, key: str) -> str:
    """The value of the first ``key`` line of ``cpuinfo``; empty where the file is missing or has none."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return ""
    return ""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags from ``cpuinfo`` (x86 Linux); empty where the file is missing or lists none."""
    return set(_field(cpuinfo, "flags").split())


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's ``vendor_id`` from ``cpuinfo`` (``AuthenticAMD``, ``GenuineIntel``); empty where unknown."""
    return _field(cpuinfo, "vendor_id")


def int8_kernel_ready() -> bool:
    """Whether quantgate's int8 decode kernel runs on this machine (``quantize.int8_kernel``; builds it once)."""
    from quantgate.quantize.int8_kernel import kernel_status  # imports torch: only when asked

    return kernel_status() == "ready"


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX-BF16, from ``cpuinfo``).

    Where the file does not exist (not Linux) the answer is no, and ``auto`` schemes run in fp32:
    correct everywhere, at worst slower than bf16 would have been.
    """
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def _build() -> dict[str, Scheme]:
    schemes = [
        Scheme("fp32", "float", 32, compute_dtype="fp32", description="float32, no quantization"),
        Scheme("bf16", "float", 16, compute_dtype="bf16", description="bfloat16, no quantization"),
        Scheme("fp16", "float", 16, compute_dtype="fp16", description="float16, no quantization"),
        Scheme("int8wo", "int8wo", 8, description="int8 weights, per channel"),
        Scheme("int8dq", "int8dq", 8, activation="int8",
               description="int8 weights and dynamic per-token int8 activations"),
        Scheme("int2wo-g32", "intxwo", 2, 32,
               description="2-bit weights, groups of 32: aggressive, stresses quality"),
        Scheme("int3wo-g32", "intxwo", 3, 32,
               description="3-bit weights, groups of 32: aggressive, stresses quality"),
        Scheme("fp8wo", "fp8wo", 8, description="fp8 e4m3 weights (CUDA, capability 8.9+)"),
        Scheme("fp8dq", "fp8dq", 8, activation="fp8",
               description="fp8 e4m3 weights and activations, per row (CUDA, capability 8.9+)"),
    ]
    for g in (32, 64, 128):
        schemes.append(Scheme(f"int4wo-g{g}", "int4wo", 4, g, compute_dtype="bf16",
                              description=f"int4 weights, groups of {g}; bf16 activations"))
    return {s.name: s for s in schemes}


SCHEMES: dict[str, Scheme] = _build()


def scheme_names() -> list[str]:
    return list(SCHEMES)


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name; the error lists the names that exist."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnknownSchemeError(
            f"unknown scheme {name!r}: choose one of {', '.join(SCHEMES)}"
        ) from None
