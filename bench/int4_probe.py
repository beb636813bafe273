"""What an int4 kernel of quantgate's own could gain: a probe against torch's int4 CPU kernel.

torchao's CPU int4 weight-only layers (``int4wo-gN``) run ``aten._weight_int4pack_mm_for_cpu``, which
widens every weight to a float before its multiply; on the AMD EPYC Zen 5 host it read int4 weights at
~25 GB/s with two threads (~14 with one: compute-bound), where fp32 weights streamed at ~40.
``bench/probes/int4_gemv.c`` multiplies one activation row by the same packed bytes (torch's AVX-512
layout), summing ``x * q`` per group and applying scale and zero once per group. This builds it with
the system C compiler, checks it against torch's output on twelve 1024x2816 layers (group 128) and
times both, alternating, per number of activation rows (several rows in tiles of four that share each
unpacked step of the weight). Not used by quantgate: a measurement for the decision to write the kernel.

    python bench/int4_probe.py
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SOURCE = Path(__file__).with_name("probes") / "int4_gemv.c"


def main(argv: list[str] | None = None) -> int:
    common.quiet_torchao()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--in-features", type=int, default=1024)
    ap.add_argument("--out-features", type=int, default=2816)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--rows", default="1,2,4,8,16", help="activation rows per call (decode batch sizes)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    common.setup_torch(args.threads)
    import torch
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    from torchao.quantization import quantize_

    from quantgate.quantize.schemes import cpu_flags

    if "avx512f" not in cpu_flags():
        print("the probe is written for torch's AVX-512 packing; this CPU has no AVX-512")
        return 1
    from quantgate.quantize.int8_kernel import compile_library, find_compiler

    compiler, why = find_compiler(None, "CC", "cc", "C")
    lib_path = Path(tempfile.mkdtemp()) / "int4_gemv.so"
    why = why or compile_library([compiler or "cc", "-O3", "-mavx512f", "-mavx512bw", "-mfma", "-fopenmp", "-shared",
                                  "-fPIC", str(SOURCE)], lib_path)
    if why:
        print(f"building the probe failed: {why}")
        return 1
    fn = ctypes.CDLL(str(lib_path)).qg_int4_gemv
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    fn.restype = None

    k, n, g = args.in_features, args.out_features, args.group
    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[torch.nn.Linear(k, n, bias=False) for _ in range(args.layers)]).bfloat16()
    quantize_(layers, PrototypeInt4WeightOnlyConfig(group_size=g))
    nbytes = k * n / 2
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        x = torch.randn(rows, k).bfloat16()
        xf = x.float().contiguous()
        y = torch.empty(rows, n)

        def probe(m: torch.nn.Module, xf: torch.Tensor = xf, y: torch.Tensor = y, rows: int = rows) -> torch.Tensor:
            w = m.weight
            fn(xf.data_ptr(), w.qdata.data_ptr(), w.scale_and_zero.view(torch.int16).data_ptr(), y.data_ptr(), rows,
               n, k, g, args.threads)
            return y

        with torch.no_grad():
            ref = layers[0](x).float()
            diff = float((probe(layers[0]) - ref).abs().max())
            # torch rounds its output to bf16 (8 bits of mantissa): allow that much of the largest output
            tolerance = float(ref.abs().max()) * 2**-7
            if diff > tolerance:
                print(f"rows {rows}: the probe does not compute what torch does ({diff:.4g} > {tolerance:.3g})")
                return 1
            reps = 50
            torch_us, probe_us = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for _ in range(reps):
                    for m in layers:
                        m(x)
                torch_us.append((time.perf_counter() - t0) / (reps * args.layers) * 1e6)
                t0 = time.perf_counter()
                for _ in range(reps):
                    for m in layers:
                        probe(m)
                probe_us.append((time.perf_counter() - t0) / (reps * args.layers) * 1e6)
        a, b = statistics.median(torch_us), statistics.median(probe_us)
        print(f"{k}x{n} int4, group {g}, {rows:2d} rows, {args.threads} threads: torch {a:7.1f} us "
              f"({nbytes / a / 1e3:4.1f} GB/s), probe {b:7.1f} us ({nbytes / b / 1e3:4.1f} GB/s): {a / b:.2f}x "
              f"(largest difference {diff:.3g}, bf16 rounding allows {tolerance:.3g})")
        results.append({"rows": rows, "torch_us": torch_us, "probe_us": probe_us, "max_abs_diff": diff,
                        "ratio": a / b})
    out = args.json or common.default_json("int4-probe")
    common.write_json(out, {"benchmark": "int4_probe", "machine": common.machine_info(), "settings": vars(args) | {
        "json": str(args.json)}, "results": results})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
