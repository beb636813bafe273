"""Benchmark the offline gate on the reference model: full compare time, and token-metric overhead.

    python bench/compare.py [--candidate int8wo] [--json PATH]

Measures, in one run on this machine:
1. a full ``compare_sides`` of the fp32 reference model against a quantized variant on the
   bundled 320-case golden set (both evals, token metrics, statistics, gate): wall seconds
   (target: within 2 minutes);
2. the token-level metrics alone (``token_level``) against the two models' teacher-forced
   forward passes alone over the same batches: the ratio (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REFERENCE_DIR, machine_info, quiet_torchao, setup_torch, write_json, default_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", default="int8wo")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    quiet_torchao()
    setup_torch(2)
    import torch

    from quantgate.checks import default_registry
    from quantgate.demo import reference_golden_path
    from quantgate.evaluate.golden import load_golden
    from quantgate.evaluate.pipeline import compare_sides
    from quantgate.evaluate.runner import EvalConfig, case_request
    from quantgate.evaluate.targets import LocalTarget
    from quantgate.evaluate.token_compare import token_level
    from quantgate.quantize.storage import quantize_to_dir
    from quantgate.store.runs import RunStore

    work = Path(tempfile.mkdtemp())
    variant = work / args.candidate
    quantize_to_dir(REFERENCE_DIR, args.candidate, variant)
    golden_path = reference_golden_path()
    config = EvalConfig()
    with RunStore(work / "runs.sqlite") as store:
        start = time.perf_counter()
        outcome = compare_sides(str(REFERENCE_DIR), str(variant), golden_path, store, config=config)
        full_s = time.perf_counter() - start
        base_cases = list(store.cases(outcome.runs["baseline"].id))
        cand_cases = list(store.cases(outcome.runs["candidate"].id))
    golden = load_golden(golden_path, default_registry())
    base, cand = LocalTarget(str(REFERENCE_DIR)), LocalTarget(str(variant))
    greedy = {c.case_id: c for c in base_cases if c.sample == 0}
    pairs = [(base.prompt_ids(case_request(c, 0, config)), greedy[c.id].token_ids or []) for c in golden.cases
             if greedy[c.id].token_ids]

    def forwards_only() -> None:
        for s in range(0, len(pairs), 16):
            chunk = pairs[s : s + 16]
            for engine in (base.engine, cand.engine):
                width = max(len(p) + len(c) for p, c in chunk)
                ids = torch.full((len(chunk), width), engine.pad_id)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, (p, c) in enumerate(chunk):
                    ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                    mask[i, : len(p) + len(c)] = 1
                with torch.inference_mode():
                    engine.model(input_ids=ids, attention_mask=mask, use_cache=False)

    timings: dict[str, list[float]] = {"forward": [], "token_metrics": []}
    for _ in range(3):  # interleaved, so drift on a noisy machine hits both alike
        t = time.perf_counter()
        forwards_only()
        timings["forward"].append(time.perf_counter() - t)
        t = time.perf_counter()
        token_level(base, cand, golden, base_cases, cand_cases, config)
        timings["token_metrics"].append(time.perf_counter() - t)
    fwd, tok = min(timings["forward"]), min(timings["token_metrics"])
    report = outcome.report
    result = {
        "machine": machine_info(), "candidate": args.candidate, "cases": len(golden),
        "full_compare_s": full_s, "forward_only_s": fwd, "token_metrics_s": tok, "overhead_ratio": tok / fwd,
        "gate": report["gate"]["verdict"], "timings": timings,
        "pass_rate": {"baseline": report["behaviour"]["overall"]["baseline"]["estimate"],
                      "candidate": report["behaviour"]["overall"]["candidate"]["estimate"]},
    }
    print(f"full compare fp32 vs {args.candidate} on {len(golden)} cases: {full_s:.1f} s (target <= 120 s)")
    print(f"token metrics {tok:.2f} s vs forward passes alone {fwd:.2f} s: x{tok / fwd:.2f} (target <= 1.5)")
    print(f"gate: {report['gate']['verdict']}")
    path = write_json(args.json or default_json("compare"), result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
