"""One stack of int4 weight-only layers three ways: bf16, torch's int4 kernel, quantgate's CPU kernel.

Thirty-two 2816x1024 layers (a 291M Llama's MLP widths: 44 MiB of int4, more than the caches hold),
each quantized with ``int4wo-g128`` in bf16; per row count (1 to 64, as decode batches: ``rows x 1 x
K``, one new position per sequence, which the kernel takes at any batch size; ``--prefill``: as one
prompt of that many positions, ``rows x K``, which takes whatever ``int4_linear`` picks for a prefill:
the kernel up to ``MAX_ROWS``, on a CPU with AMX the weights widened to bf16 from ``BF16_FROM_ROWS``)
the median time of one pass through all of them, for

* ``bf16``: the same layers unquantized (what the bytes would cost as bf16);
* ``torch``: the quantized layers as torchao 0.18 runs them (``aten._weight_int4pack_mm_for_cpu``);
* ``kernel``: the same quantized layers through ``quantgate.quantize.int4_kernel`` (as the engine
  calls it: the op ``torch.ops.quantgate.int4_linear``).

All three in one process, alternating, so a noisy machine shifts them together; the ratios are the
figures to read. Results as JSON under ``bench/results/``.

    python bench/int4_kernel.py
    python bench/int4_kernel.py --prefill --rows 16,32,128,512
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
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--out-features", type=int, default=2816)
    ap.add_argument("--in-features", type=int, default=1024)
    ap.add_argument("--group", type=int, default=128, choices=[32, 64, 128])
    ap.add_argument("--rows", default="1,2,4,8,16,32,64")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", action="store_true", help="rows as one prompt's positions (rows x K), not a decode batch")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    common.setup_torch(args.threads)
    import torch

    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.int4_kernel import kernel_status, packing, use_int4_kernel
    from quantgate.quantize.schemes import get_scheme

    status = kernel_status()
    if status != "ready":
        print(f"the kernel cannot run here: {status}")
        return 1
    torch.manual_seed(0)
    shape = (args.in_features, args.out_features)
    floats = torch.nn.Sequential(*[torch.nn.Linear(*shape, bias=False) for _ in range(args.layers)]).bfloat16()
    quantized = torch.nn.Sequential(*[torch.nn.Linear(*shape, bias=False) for _ in range(args.layers)]).bfloat16()
    quantized.load_state_dict(floats.state_dict())
    quantize_model(quantized, get_scheme(f"int4wo-g{args.group}"), device="cpu")

    def timed(model: Any, x: Any) -> float:
        t = time.perf_counter()
        for layer in model:
            layer(x)
        return time.perf_counter() - t

    rows: list[dict[str, Any]] = []
    print(f"{args.layers} layers {args.in_features}->{args.out_features}, group {args.group}, torch's "
          f"{packing()} packing, median of {args.repeats}; ms per pass (x bf16); rows as "
          + ("one prompt (a prefill)" if args.prefill else "a decode batch"))
    with torch.no_grad():
        for m in [int(r) for r in args.rows.split(",")]:
            shape = (m, args.in_features) if args.prefill else (m, 1, args.in_features)
            x = torch.randn(*shape).bfloat16()
            times: dict[str, list[float]] = {"bf16": [], "torch": [], "kernel": []}
            for i in range(args.repeats + 2):
                use_int4_kernel(quantized, enabled=False)
                t_torch = timed(quantized, x)
                use_int4_kernel(quantized)
                t_kernel = timed(quantized, x)
                t_float = timed(floats, x)
                if i >= 2:  # two warm-up passes
                    times["bf16"].append(t_float)
                    times["torch"].append(t_torch)
                    times["kernel"].append(t_kernel)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            int4_bytes = args.layers * args.in_features * args.out_features / 2
            rows.append({"rows": m, **{f"{k}_ms": v for k, v in med.items()},
                         "kernel_gb_per_s": int4_bytes / med["kernel"] / 1e6})
            print(f"  rows {m:3d}: bf16 {med['bf16']:7.2f}  torch {med['torch']:7.2f} "
                  f"({med['torch'] / med['bf16']:.2f}x)  kernel {med['kernel']:7.2f} "
                  f"({med['kernel'] / med['bf16']:.2f}x; {med['torch'] / med['kernel']:.2f}x faster than torch's; "
                  f"{int4_bytes / med['kernel'] / 1e6:.1f} GB/s of int4)")
    out = common.write_json(args.json or common.default_json("int4-kernel"),
                            {"benchmark": "int4_kernel", "machine": common.machine_info(),
                             "settings": vars(args) | {"json": str(args.json)}, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
