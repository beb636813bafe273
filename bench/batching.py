"""Batched vs one-at-a-time generation with the reference model: wall time, speed-up, equality.

64 short chat prompts (held-out examples from ``quantgate.reference.corpus``, rendered with the
model's chat template through ``LocalEngine.render``) are answered greedily with ``max_tokens``
48, first in batches of 16 (``LocalEngine(max_batch_size=16).generate`` on all 64), then one
request per ``generate`` call. EOS is left on: these are real answers of varying length, and a
batch runs until its longest row finishes, which is part of what batching costs.

Reported: wall time of each pass (median of ``--repeats``), the speed-up, completion tokens/s,
and how many of the 64 batched outputs are token-for-token identical to the one-at-a-time ones
(the engine's left-padding + position-id design promises they are).

Usage::

    python bench/batching.py                             # reference model, fp32, eager
    python bench/batching.py --dtype bf16 --scheme int8wo --mode compile
    python bench/batching.py --model-path /tmp/some-model --quick
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

FALLBACK_PROMPTS = [
    "What is {a} plus {b}?", "Say hello to {name}.", "Which is larger, {a} or {b}?",
    "Copy this word exactly: {name}", "Write one sentence about {name}'s weekend.",
    "Extract the name and age as JSON: {name} is {a} years old.",
    "How do I kill a stuck process called {name}?", "Give me a one-line summary of the number {a}.",
]
NAMES = ["Ada", "Bram", "Chen", "Dina", "Emeka", "Farah", "Goran", "Hana"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", type=Path, default=None,
                    help=f"model or variant directory (default {common.REFERENCE_DIR})")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 (default: the scheme's, fp32 if none)")
    ap.add_argument("--scheme", default=None, help="quantize in memory with this scheme first")
    ap.add_argument("--mode", default="eager", choices=["eager", "compile"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="16 prompts, batch 4, 16 tokens")
    ap.add_argument("--json", type=Path, default=None,
                    help="output file (default bench/results/batching-<date>.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.batch_size, args.max_tokens = min(args.prompts, 16), 4, 16
    return args


def build_prompts(engine: Any, n: int, seed: int) -> tuple[list[str], str]:
    """``n`` rendered chat prompts, and where they came from."""
    try:
        from quantgate.reference import corpus
    except ImportError:
        corpus = None
    if corpus is not None and hasattr(corpus, "generate"):
        examples = corpus.generate(n, seed=seed, split="heldout")
        return [engine.render(ex.messages, ex.tools) for ex in examples], "quantgate.reference.corpus (heldout)"
    prompts = []
    for i in range(n):
        text = FALLBACK_PROMPTS[i % len(FALLBACK_PROMPTS)].format(
            a=3 + 7 * i, b=11 + 5 * i, name=NAMES[(i * 3) % len(NAMES)])
        prompts.append(engine.render([{"role": "user", "content": text}]))
    return prompts, "built-in fallback prompts"


def run_pass(engine: Any, prompts: list[str], max_tokens: int, batched: bool) -> tuple[float, list[Any]]:
    from quantgate.engines.types import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    t0 = time.perf_counter()
    if batched:
        gens = engine.generate([GenerationRequest(p, params) for p in prompts])
    else:
        gens = [engine.generate([GenerationRequest(p, params)])[0] for p in prompts]
    return time.perf_counter() - t0, gens


def main(argv: list[str] | None = None) -> int:
    common.quiet_torchao()
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    common.setup_torch(args.threads)
    import torch

    from quantgate.engines.local import LocalEngine
    from quantgate.models.loading import load_model
    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.schemes import get_scheme
    from quantgate.quantize.storage import is_variant_dir, load_any

    path = args.model_path or common.REFERENCE_DIR
    src = common.reference_source(path)
    if isinstance(src, str):
        console.print(f"[yellow]skipping: {src}[/yellow]")
        return 0
    if common.training_running():
        console.print("[yellow]warning: quantgate.reference.train is running; timings will be "
                      "distorted by the competing CPU load[/yellow]")
    scheme = get_scheme(args.scheme) if args.scheme else None
    dtype = args.dtype or (scheme.resolved_compute_dtype("cpu") if scheme else "fp32")
    if is_variant_dir(path):
        loaded = load_any(path)
    else:
        loaded = load_model(path, dtype=dtype)
        if scheme and scheme.quantizes:
            quantize_model(loaded.model, scheme, [], device="cpu")
    label = f"{loaded.name} {args.scheme or dtype} {args.mode}"
    engine = LocalEngine(loaded, max_batch_size=args.batch_size, compile=args.mode == "compile")
    prompts, origin = build_prompts(engine, args.prompts, args.seed)
    lengths = [engine.count_tokens(p) for p in prompts]
    console.print(f"{label}: {len(prompts)} prompts from {origin}, {min(lengths)}-{max(lengths)} "
                  f"tokens (mean {statistics.mean(lengths):.0f}), batch {args.batch_size}, "
                  f"max_tokens {args.max_tokens}, greedy")

    # Warm-up: both paths once on a few prompts; in compile mode both whole passes, since every
    # (batch bucket, cache length) the timed passes meet is a graph of its own to compile first.
    t0 = time.perf_counter()
    whole = args.mode == "compile"
    run_pass(engine, prompts if whole else prompts[: args.batch_size], args.max_tokens, batched=True)
    run_pass(engine, prompts if whole else prompts[:2], args.max_tokens, batched=False)
    console.print(f"warm-up {time.perf_counter() - t0:.1f}s")

    from torch._dynamo.utils import counters

    graphs0 = int(counters["stats"].get("unique_graphs", 0))
    batched_runs, single_runs = [], []
    with common.OtherLoad() as load:
        for _ in range(args.repeats):
            wall_b, gens_b = run_pass(engine, prompts, args.max_tokens, batched=True)
            wall_s, gens_s = run_pass(engine, prompts, args.max_tokens, batched=False)
            batched_runs.append(wall_b)
            single_runs.append(wall_s)
    graphs_timed = int(counters["stats"].get("unique_graphs", 0)) - graphs0
    gave_up = int(counters["frames"].get("total", 0)) - int(counters["frames"].get("ok", 0))
    tokens_b = sum(g.usage.completion_tokens for g in gens_b)
    tokens_s = sum(g.usage.completion_tokens for g in gens_s)
    same_ids = sum(a.token_ids == b.token_ids for a, b in zip(gens_b, gens_s))
    same_text = sum(a.text == b.text for a, b in zip(gens_b, gens_s))
    wall_b, wall_s = statistics.median(batched_runs), statistics.median(single_runs)
    speedup = wall_s / wall_b

    table = Table(title=f"{label}: {len(prompts)} answers, batches of {args.batch_size} vs one at a time")
    for col in ("pass", "wall s", "completion tokens", "tokens/s", "speed-up"):
        table.add_column(col, justify="left" if col == "pass" else "right")
    table.add_row("one at a time", f"{wall_s:.2f}", str(tokens_s), f"{tokens_s / wall_s:.1f}", "1.00")
    table.add_row(f"batches of {args.batch_size}", f"{wall_b:.2f}", str(tokens_b),
                  f"{tokens_b / wall_b:.1f}", f"{speedup:.2f}")
    console.print(table)
    verdict = "PASS" if speedup >= 4 else "MISS"
    console.print(f"{verdict} speed-up {speedup:.2f}× (target ≥ 4×)"
                  + (" [UNRELIABLE: other processes were using the CPU]" if load.cores > 0.1 else ""))
    console.print(f"identical outputs: {same_ids}/{len(prompts)} token ids, {same_text}/{len(prompts)} texts")
    finish = {}
    for g in gens_b:
        finish[g.finish_reason] = finish.get(g.finish_reason, 0) + 1
    console.print(f"finish reasons (batched): {finish}; other processes used {load.cores:.2f} cores "
                  "on average during the timed passes" + (f"; dynamo gave up on {gave_up} frames" if gave_up else ""))
    if graphs_timed:
        console.print(f"[yellow]{graphs_timed} graphs were compiled during the timed passes (new "
                      "batch bucket / cache length): compile time is inside the wall times[/yellow]")
    for i, (a, b) in enumerate(zip(gens_b, gens_s)):
        if a.token_ids != b.token_ids:
            n = next((k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y),
                     min(len(a.token_ids), len(b.token_ids)))
            console.print(f"  prompt {i}: first difference at completion token {n}: "
                          f"batched {a.text[:60]!r} vs single {b.text[:60]!r}")

    out = args.json or common.default_json("batching" + ("-quick" if args.quick else ""))
    common.write_json(out, {
        "benchmark": "batching", "machine": common.machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {"path": str(path), "name": loaded.name, "dtype": loaded.dtype,
                  "parameters": sum(p.numel() for p in loaded.model.parameters())},
        "prompts_from": origin, "prompt_tokens": lengths,
        "batched": {"wall_s": wall_b, "runs": batched_runs, "completion_tokens": tokens_b,
                    "tokens_per_s": tokens_b / wall_b},
        "single": {"wall_s": wall_s, "runs": single_runs, "completion_tokens": tokens_s,
                   "tokens_per_s": tokens_s / wall_s},
        "speedup": speedup, "target": 4.0, "pass": speedup >= 4,
        "identical_token_ids": same_ids, "identical_texts": same_text, "n": len(prompts),
        "finish_reasons_batched": finish, "other_processes_cores": load.cores,
        "dynamo_frames_not_compiled": gave_up, "graphs_compiled_timed": graphs_timed, "torch_threads": torch.get_num_threads(),
        "outputs": [{"batched": a.text, "single": b.text, "same": a.token_ids == b.token_ids}
                    for a, b in zip(gens_b, gens_s)],
    })
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
