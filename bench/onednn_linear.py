"""Float linear layers on torch's own path and on oneDNN, per layer shape and row count.

The question behind ``quantgate.engines.onednn_linear``: on this CPU, what does multiplying an
activation by a weight cost, and from how much work on does oneDNN with the weight laid out once win.
Per (in, out) shape and row count, the median time of one call three ways, alternating in one process
so a noisy machine shifts them together:

* ``torch``: ``F.linear`` as torch runs it (fp32: MKL's ``sgemm``; bf16: oneDNN, the weight reordered
  on every call);
* ``onednn``: ``torch.ops.mkldnn._linear_pointwise`` on the plain weight;
* ``reordered``: the same op on the weight reordered once into oneDNN's layout (what the engine does).

Shapes default to the reference model's layers and the 291M benchmark model's. Results as JSON under
``bench/results/``; the ratios are the figures to read.

    python bench/onednn_linear.py                  # fp32
    python bench/onednn_linear.py --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SHAPES = "256x256,256x640,640x256,256x2057,1024x1024,1024x2816,2816x1024,1024x32000"


def _median_us(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated INxOUT")
    ap.add_argument("--rows", default="1,2,4,16,164,2600")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    common.setup_torch(args.threads)
    import torch

    from quantgate.engines.onednn_linear import MIN_WORK, onednn_status

    if not torch.backends.mkldnn.is_available():
        print("this torch has no oneDNN")
        return 1
    op = torch.ops.mkldnn._linear_pointwise
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    status = onednn_status(dtype)
    torch.manual_seed(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    results: list[dict[str, Any]] = []
    print(f"oneDNN for {args.dtype} linears on this CPU: {status}"
          + (f"; the engine routes calls of >= {MIN_WORK} multiply-adds" if dtype == torch.float32 else ""))
    print(f"{'in x out':>12} {'rows':>5} {'torch us':>9} {'onednn us':>10} {'reordered':>10} {'torch/reord':>11}")
    for shape in args.shapes.split(","):
        k, n = (int(v) for v in shape.split("x"))
        w = (torch.randn(n, k) / k**0.5).to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 16)
        for rows in rows_list:
            if rows * k * n > 4e9:  # minutes of work at a few hundred GFLOP/s: not worth the wait
                continue
            x = torch.randn(rows, k).to(dtype)
            repeats = max(3, min(args.repeats, int(args.repeats * 2e7 / (rows * k * n))))
            row = {"in": k, "out": n, "rows": rows, "torch_us": [], "onednn_us": [], "reordered_us": []}
            for _ in range(3):  # alternate the three, three rounds
                row["torch_us"].append(_median_us(lambda x=x, w=w: torch.nn.functional.linear(x, w), repeats))
                row["onednn_us"].append(_median_us(lambda x=x, w=w: op(x, w, None, "none", [], ""), repeats))
                row["reordered_us"].append(_median_us(lambda x=x, p=packed: op(x, p, None, "none", [], ""), repeats))
            for key in ("torch_us", "onednn_us", "reordered_us"):
                row[key] = statistics.median(row[key])
            row["routed"] = dtype == torch.bfloat16 or rows * k * n >= MIN_WORK
            results.append(row)
            print(f"{shape:>12} {rows:>5} {row['torch_us']:>9.1f} {row['onednn_us']:>10.1f} "
                  f"{row['reordered_us']:>10.1f} {row['torch_us'] / row['reordered_us']:>10.2f}x"
                  + ("" if row["routed"] else "  (engine: torch's path)"))
    out = args.json or common.default_json(f"onednn-linear-{args.dtype}")
    common.write_json(out, {"benchmark": "onednn_linear", "dtype": args.dtype, "machine": common.machine_info(),
                            "status": status,
                            "min_work": MIN_WORK, "threads": args.threads, "results": results})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
