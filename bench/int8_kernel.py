"""One stack of int8 weight-only layers three ways: fp32, torchao's path, quantgate's CPU kernel.

Twelve 2816x1024 layers (a 291M Llama's MLP widths, 33 MiB of int8, more than the caches hold), each
quantized with the ``int8wo`` scheme; per row count (1 to 64, as decode batches: ``rows x 1 x K``, one
new position per sequence, which the kernel takes at any batch size) the median time of one pass
through all twelve, for

* ``fp32``: the same layers unquantized (what the bytes would cost as floats);
* ``torchao``: the quantized layers as torchao 0.18 runs them (``mm(x, w.to(fp32)) * s``);
* ``kernel``: the same quantized layers through ``quantgate.quantize.int8_kernel``.

All three in one process, alternating, so a noisy machine shifts them together; the ratios are
the figures to read. Results as JSON under ``bench/results/``.

    python bench/int8_kernel.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    common.quiet_torchao()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out-features", type=int, default=2816)
    ap.add_argument("--in-features", type=int, default=1024)
    ap.add_argument("--rows", default="1,2,4,8,16,32,64")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    common.setup_torch(args.threads)
    import torch

    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.int8_kernel import kernel_status, use_int8_kernel
    from quantgate.quantize.schemes import get_scheme

    status = kernel_status()
    if status != "ready":
        print(f"the kernel cannot run here: {status}")
        return 1
    torch.manual_seed(0)
    shape = (args.in_features, args.out_features)
    floats = torch.nn.Sequential(*[torch.nn.Linear(*shape, bias=False) for _ in range(args.layers)])
    quantized = torch.nn.Sequential(*[torch.nn.Linear(*shape, bias=False) for _ in range(args.layers)])
    quantized.load_state_dict(floats.state_dict())
    quantize_model(quantized, get_scheme("int8wo"), device="cpu")

    def run(model: Any, x: Any) -> None:
        for layer in model:
            layer(x)

    def timed(model: Any, x: Any) -> float:
        t = time.perf_counter()
        run(model, x)
        return time.perf_counter() - t

    rows: list[dict[str, Any]] = []
    print(f"{args.layers} layers {args.in_features}->{args.out_features}, median of {args.repeats}; "
          f"ms per pass (x fp32)")
    with torch.no_grad():
        for m in [int(r) for r in args.rows.split(",")]:
            x = torch.randn(m, 1, args.in_features)  # a decode step's shape: 2-D input past MAX_ROWS is a prefill
            times: dict[str, list[float]] = {"fp32": [], "torchao": [], "kernel": []}
            for i in range(args.repeats + 2):
                use_int8_kernel(quantized, enabled=False)
                t_ao = timed(quantized, x)
                use_int8_kernel(quantized)
                t_k = timed(quantized, x)
                t_f = timed(floats, x)
                if i >= 2:  # two warm-up passes
                    times["fp32"].append(t_f)
                    times["torchao"].append(t_ao)
                    times["kernel"].append(t_k)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append({"rows": m, **{f"{k}_ms": v for k, v in med.items()}})
            print(f"  rows {m:3d}: fp32 {med['fp32']:7.2f}  torchao {med['torchao']:7.2f} "
                  f"({med['torchao'] / med['fp32']:.2f}x)  kernel {med['kernel']:7.2f} "
                  f"({med['kernel'] / med['fp32']:.2f}x; {med['torchao'] / med['kernel']:.1f}x faster than torchao)")
    out = common.write_json(args.json or common.default_json("int8-kernel"),
                            {"benchmark": "int8_kernel", "machine": common.machine_info(),
                             "settings": vars(args) | {"json": str(args.json)}, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
