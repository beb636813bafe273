"""Capacity curve of each variant: requests/s and latency per concurrency level, through the gateway.

    python bench/capacity.py                                   # fp32, int8wo, int4wo-g32 of the reference model
    python bench/capacity.py --schemes int8wo --concurrency 1,8 --requests 32

A quantized kernel that wins for one request can lose under batching, so each variant is measured
at several loads, not one. The reference model is quantized into a temporary directory, every
variant is served as a local engine by one `quantgate serve` (continuous batching, `max_batch` 16),
each on a route pinned to it, and `quantgate.loadtest.run_sweep` (the code behind `quantgate
loadtest`) drives one route after another with golden-set prompts, streamed, so time to first token is
measured too. Variants are measured one after another on the same server, so they never compete
for the two cores; the order is the order given. Results go to bench/results/capacity.json and print
as a table per variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import REFERENCE_DIR, RESULTS, free_port, machine_info, start_process, wait_http  # noqa: E402
from quantgate.loadtest import format_table, load_prompts, run_sweep, to_json  # noqa: E402

GOLDEN = REPO / "quantgate" / "reference" / "golden" / "golden.jsonl"


def _config(dirs: dict[str, Path], port: int) -> str:
    variants = "\n".join(f"  - {{name: {n}, engine: local, path: \"{d}\", max_batch: 16, max_concurrency: 16}}"
                         for n, d in dirs.items())
    routes = "\n".join(f"  - {{name: {n}, model: {n}, variants: [{n}]}}" for n in dirs)
    return (f"server: {{host: 127.0.0.1, port: {port}, require_auth: false}}\nvariants:\n{variants}\n"
            f"ladder: [{', '.join(dirs)}]\nroutes:\n{routes}\nadmission: {{queue_size: 1024, deadline_s: 120}}\n"
            "events: {path: null}\nrollout_state: null\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemes", default="fp32,int8wo,int4wo-g32", help="fp32 is the reference model itself")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=64, help="per level (at least the level)")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    bodies = load_prompts(GOLDEN, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        dirs: dict[str, Path] = {}
        for scheme in schemes:
            if scheme == "fp32":
                dirs[scheme] = REFERENCE_DIR
            else:
                dirs[scheme] = Path(tmp) / scheme
                subprocess.run([sys.executable, "-m", "quantgate.cli", "quantize", str(REFERENCE_DIR),
                                "--scheme", scheme, "--out", str(dirs[scheme])], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(_config(dirs, port))
        server = start_process([sys.executable, "-m", "quantgate.cli", "serve", "--config", str(cfg)])
        url = f"http://127.0.0.1:{port}"
        results = {}
        try:
            wait_http(url + "/healthz", timeout=180)
            for scheme in schemes:
                run_sweep(url, scheme, bodies, [1], 8, stream=True)  # warm-up: first batches, allocator
                results[scheme] = run_sweep(url, scheme, bodies, levels, args.requests, stream=True)
                print(f"\n{scheme}\n{format_table(results[scheme])}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "capacity.json"
    out.write_text(json.dumps({"machine": machine_info(), "max_tokens": args.max_tokens, "requests": args.requests,
                               "variants": {s: to_json(r) for s, r in results.items()}}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
