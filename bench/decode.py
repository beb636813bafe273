"""Decode and prefill speed, and resident weight bytes, per quantization scheme, eager vs compiled.

For each model (a random-initialised ~290M Llama built in memory, and/or the bundled reference
model) and each scheme, this builds the model in the scheme's compute dtype, quantizes it with
``quantgate.quantize.apply.quantize_model``, wraps it in a ``LoadedModel`` and a ``LocalEngine``
(``compile=False`` / ``compile=True``) and times ``LocalEngine.generate`` on fixed-length prompts
with a fixed number of new tokens. End-of-sequence is disabled (the engine's ``eos_ids`` is
emptied and the random model has no EOS token) so every row runs the full length.

Measured, per (model, scheme, mode, batch size), median of ``--repeats`` runs after a warm-up run
(for ``compile`` the warm-up pays the cold compile, reported separately):

* prefill tok/s: batch x prompt tokens / ``Timings.prefill_s`` (the prompt forward pass);
* decode tok/s: batch x (new tokens - 1) / ``Timings.decode_s`` (first token to last token: all
  the one-token decode steps, with sampling and detokenisation, i.e. the engine's real loop);
* resident weight bytes: parameters and buffers as stored, quantized tensors as the sum of their
  component tensors (``quantgate.quantize.codec.flatten_tensor``), shared tensors once.

Usage::

    python bench/decode.py --model random              # full run on the random 290M model
    python bench/decode.py --quick                      # smoke run, tiny model, seconds
    python bench/decode.py --model reference --schemes bf16,int8wo --modes compile
    python bench/decode.py --model random-moe --modes eager   # a random Mixtral: experts quantized
    python bench/decode.py --device cuda --schemes bf16,int8wo,int4wo-g128,fp8wo,fp8dq   # on a GPU

On CUDA the engine's loop synchronises every step (it reads each sampled token back), so the
wall-clock timings it reports are the GPU's too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DEFAULT_SCHEMES = "fp32,bf16,int8wo,int4wo-g128,int8dq"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random", choices=["random", "reference", "both", "random-moe"],
                    help="random-moe: a random Mixtral-shaped model (8 experts, 2 a token), experts quantized too")
    ap.add_argument("--reference-path", type=Path, default=None,
                    help=f"reference model directory (default {common.REFERENCE_DIR})")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES, help="comma-separated scheme names")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (the model and its quantization)")
    ap.add_argument("--quantized-dtype", default=None, choices=["fp32", "bf16"],
                    help="activations of the quantized schemes (default: each scheme's, `auto` resolved on this CPU; "
                         "the figures in docs/benchmarks.md before 2026-11-28 are bf16)")
    ap.add_argument("--kernels", "--int8-kernel", dest="kernels", default="on", choices=["on", "off", "both"],
                    help="int8 and int4 weight-only layers on quantgate's CPU kernels (on), torchao's/torch's "
                         "paths (off), or each in turn, side by side (both: rows of torchao's path get mode "
                         "`eager-ao`/`compile-ao`)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny random model, 32+16 tokens, 1 repeat")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one decode run per row (torch.profiler, top ops by self CPU)")
    ap.add_argument("--json", type=Path, default=None,
                    help="output file (default bench/results/decode-<date>.json)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    ap.add_argument("--bytes-only", action="store_true",
                    help="only quantize and count resident weight bytes (no timing; load-independent)")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt_tokens = min(args.prompt_tokens, 32)
        args.new_tokens = min(args.new_tokens, 16)
        args.repeats = 1
    return args


# -- prompts --------------------------------------------------------------------------------


def make_prompts(source: common.ModelSource, batch: int, length: int, seed: int = 0) -> list[list[int]]:
    """``batch`` distinct prompts of exactly ``length`` token ids.

    The reference model gets real text from its corpus (so attention sees in-distribution tokens);
    the random model gets random non-special ids (values do not matter for its speed).
    """
    tok = source.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    if source.kind == "reference":
        text_ids = _reference_text_ids(source, need=length * batch + length)
        if text_ids:
            return [text_ids[i * length : (i + 1) * length] for i in range(batch)]
    rng = random.Random(seed)
    vocab = len(tok)
    pool = [i for i in range(vocab) if i not in special]
    return [[rng.choice(pool) for _ in range(length)] for _ in range(batch)]


def _reference_text_ids(source: common.ModelSource, need: int) -> list[int]:
    try:
        from quantgate.reference import corpus
    except ImportError:
        return []
    from quantgate.models.chat import render_chat

    ids: list[int] = []
    for ex in corpus.generate(max(8, need // 40), seed=1234, split="heldout"):
        text = render_chat(source.tokenizer, ex.messages, ex.tools, source.chat_template)
        ids.extend(source.tokenizer.encode(text + ex.target, add_special_tokens=False))
        if len(ids) >= need:
            break
    return ids if len(ids) >= need else []


# -- measurement ----------------------------------------------------------------------------


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def frames_not_compiled() -> int:
    """Frames dynamo gave up on (e.g. recompile limit hit): they then run eagerly."""
    from torch._dynamo.utils import counters

    return int(counters["frames"].get("total", 0)) - int(counters["frames"].get("ok", 0))


def run_once(engine: Any, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    from quantgate.engines.types import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0.0)
    requests = [GenerationRequest(list(p), params) for p in prompts]
    t0 = time.perf_counter()
    gens = engine.generate(requests)
    wall = time.perf_counter() - t0
    produced = [g.usage.completion_tokens for g in gens]
    if any(n != new_tokens for n in produced):
        raise RuntimeError(f"rows stopped early ({produced}); EOS was supposed to be disabled")
    t = gens[0].timings
    decode_s = max(g.timings.decode_s for g in gens)
    batch = len(prompts)
    return {
        "wall_s": wall,
        "prefill_s": t.prefill_s,
        "decode_s": decode_s,
        "prefill_tps": batch * len(prompts[0]) / t.prefill_s,
        "decode_tps": batch * (new_tokens - 1) / decode_s if decode_s > 0 else float("nan"),
        "ms_per_step": 1000 * decode_s / max(1, new_tokens - 1),
    }


def profile_once(engine: Any, prompts: list[list[int]], new_tokens: int, top: int = 15) -> list[dict[str, Any]]:
    """Top ops by self CPU time over one generate call (prefill included, decode dominates)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_once(engine, prompts, new_tokens)
    rows = []
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    for e in events[:top]:
        rows.append({"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000,
                     "share": e.self_cpu_time_total / total})
    return rows


def bench_scheme(source: common.ModelSource, scheme_name: str, args: argparse.Namespace,
                 batch_sizes: list[int], modes: list[str], log: Any) -> list[dict[str, Any]]:
    import torch

    from quantgate.engines.local import LocalEngine
    from quantgate.quantize.apply import quantize_model
    from quantgate.quantize.int4_kernel import use_int4_kernel
    from quantgate.quantize.int8_kernel import use_int8_kernel
    from quantgate.quantize.schemes import get_scheme

    scheme = get_scheme(scheme_name)
    t0 = time.perf_counter()
    dtype = (args.quantized_dtype if scheme.quantizes and args.quantized_dtype
             else scheme.resolved_compute_dtype(args.device))
    loaded = source.fresh(dtype)
    loaded.model.to(args.device)
    load_s = time.perf_counter() - t0
    plan_summary: dict[str, int] = {}
    quant_s = 0.0
    if scheme.quantizes:
        result = quantize_model(loaded.model, scheme, [], device=args.device)
        quant_s = result.seconds
        for p in result.layers:
            plan_summary[p.scheme] = plan_summary.get(p.scheme, 0) + 1
    wbytes = common.weight_bytes(loaded.model)
    rows: list[dict[str, Any]] = []
    if args.bytes_only:
        log(f"  {scheme_name:12s} weights {common.fmt_bytes(wbytes['total'])}, linear "
            f"{common.fmt_bytes(wbytes['linear'])}, quantized {plan_summary or '-'} in {quant_s:.1f}s")
        return [{"model": source.name, "scheme": scheme_name, "weight_bytes": wbytes,
                 "quantize_s": quant_s, "layers": plan_summary}]
    kernels = {"on": [True], "off": [False], "both": [True, False]}[args.kernels]
    if args.kernels == "both" and not (use_int8_kernel(loaded.model) or use_int4_kernel(loaded.model)):
        kernels = [True]  # no layer the kernel takes: a torchao row would repeat the other
    for compile_mode, kernel in [(m, k) for m in modes for k in kernels]:
        torch._dynamo.reset()  # a fresh recompile budget per engine: bench/README.md, "Compile hygiene"
        engine = LocalEngine(loaded, max_batch_size=max(batch_sizes), compile=(compile_mode == "compile"),
                             int8_kernel=kernel, int4_kernel=kernel)
        mode = compile_mode if kernel or args.kernels != "both" else f"{compile_mode}-ao"
        engine.eos_ids = set()  # run every row to max_tokens (documented in the module docstring)
        for batch in batch_sizes:
            prompts = make_prompts(source, batch, args.prompt_tokens)
            busy = common.training_running()
            f0 = frames_not_compiled()
            g0 = compiled_graphs()
            with common.OtherLoad() as load:
                t1 = time.perf_counter()
                run_once(engine, prompts, args.new_tokens)  # warm-up (and cold compile)
                warm_s = time.perf_counter() - t1
                g1 = compiled_graphs()
                runs = [run_once(engine, prompts, args.new_tokens) for _ in range(args.repeats)]
                g2 = compiled_graphs()
            fell_back = frames_not_compiled() - f0
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            row = {
                "model": source.name, "scheme": scheme_name, "mode": mode, "batch": batch,
                "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                "repeats": args.repeats, **med,
                "decode_tps_runs": [r["decode_tps"] for r in runs],
                "prefill_tps_runs": [r["prefill_tps"] for r in runs],
                "warmup_s": warm_s, "graphs_compiled_warmup": g1 - g0,
                "graphs_compiled_timed": g2 - g1,
                "weight_bytes": wbytes, "quantize_s": quant_s, "load_s": load_s,
                "layers": plan_summary, "frames_not_compiled": fell_back,
                # how the engine ran its layers (docs/engine.md): figures before 2026-12-07 had neither
                "onednn_layers": engine.onednn_layers, "int8_kernel_layers": engine.int8_kernel_layers,
                "int4_kernel_layers": engine.int4_kernel_layers,
                "frozen": bool(engine.compile and engine.freeze),
                "other_processes_cores": load.cores,
                "training_running": busy or common.training_running(),
            }
            if args.profile:
                row["profile"] = profile_once(engine, prompts, args.new_tokens)
            rows.append(row)
            log(f"  {scheme_name:12s} {mode:7s} b={batch:<2d} decode {med['decode_tps']:7.1f} tok/s "
                f"({med['ms_per_step']:.1f} ms/step)  prefill {med['prefill_tps']:8.1f} tok/s  "
                f"warm-up {warm_s:5.1f}s"
                + (f"  [{g2 - g1} graphs compiled during timed runs]" if g2 - g1 else "")
                + (f"  [dynamo gave up on {fell_back} frames: ran eager]" if fell_back else "")
                + ("  [TRAINING PROCESS RUNNING]" if row["training_running"] else "")
                + (f"  [other processes used {load.cores:.2f} cores meanwhile]" if load.cores > 0.1 else ""))
        del engine
    del loaded
    common.free()
    return rows


# -- report ---------------------------------------------------------------------------------


def add_ratios(rows: list[dict[str, Any]]) -> None:
    base = {(r["model"], r["batch"]): r for r in rows if r["scheme"] == "bf16" and r["mode"] == "eager"}
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["decode_vs_bf16_eager"] = r["decode_tps"] / b["decode_tps"] if b else None
        r["prefill_vs_bf16_eager"] = r["prefill_tps"] / b["prefill_tps"] if b else None
        w = r["weight_bytes"]
        r["linear_vs_bf16"] = w["linear"] / w["linear_as_bf16"] if w["linear_as_bf16"] else None
        r["quantized_linear_vs_bf16"] = (w["linear_quantized"] / w["linear_quantized_as_bf16"]
                                         if w["linear_quantized_as_bf16"] else None)


def add_byte_ratios(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        w = r["weight_bytes"]
        r["linear_vs_bf16"] = w["linear"] / w["linear_as_bf16"] if w["linear_as_bf16"] else None
        r["quantized_linear_vs_bf16"] = (w["linear_quantized"] / w["linear_quantized_as_bf16"]
                                         if w["linear_quantized_as_bf16"] else None)


def bytes_markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        base = next((r for r in rows if r["model"] == model and r["scheme"] == "bf16"), None)
        lines += [f"**{model}**", "",
                  "| scheme | total weights | × bf16 total | linear weights | × bf16 | "
                  "quantized linear / same in bf16 | other (embeddings, norms, rotary) |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for r in (r for r in rows if r["model"] == model):
            w, q = r["weight_bytes"], r["quantized_linear_vs_bf16"]
            tot = f"{w['total'] / base['weight_bytes']['total']:.3f}" if base else "-"
            lines.append(f"| {r['scheme']} | {common.fmt_bytes(w['total'])} | {tot} | "
                         f"{common.fmt_bytes(w['linear'])} | {r['linear_vs_bf16']:.3f} | "
                         f"{f'{q:.3f}' if q else '-'} | {common.fmt_bytes(w['other'])} |")
        lines.append("")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    for model in dict.fromkeys(r["model"] for r in rows):
        table = Table(title=f"{model}: decode/prefill speed and weight bytes "
                            "(ratios against bf16 eager at the same batch size)")
        for col in ("scheme", "mode", "batch", "decode tok/s", "× bf16", "ms/step",
                    "prefill tok/s", "× bf16 ", "linear bytes", "q-linear / bf16", "total bytes",
                    "warm-up s", "other load"):
            table.add_column(col, justify="left" if col in ("scheme", "mode") else "right")
        for r in (r for r in rows if r["model"] == model):
            w = r["weight_bytes"]
            q = r["quantized_linear_vs_bf16"]
            lin = r["linear_vs_bf16"]
            table.add_row(
                r["scheme"], r["mode"], str(r["batch"]),
                f"{r['decode_tps']:.1f}",
                f"{r['decode_vs_bf16_eager']:.2f}" if r["decode_vs_bf16_eager"] else "-",
                f"{r['ms_per_step']:.1f}",
                f"{r['prefill_tps']:.0f}",
                f"{r['prefill_vs_bf16_eager']:.2f}" if r["prefill_vs_bf16_eager"] else "-",
                f"{common.fmt_bytes(w['linear'])} ({lin:.2f}×)" if lin else common.fmt_bytes(w["linear"]),
                f"{q:.3f}" if q else "-",
                common.fmt_bytes(w["total"]),
                f"{r['warmup_s']:.1f}",
                f"{r['other_processes_cores']:.2f}",
            )
        console.print(table)
        console.print("other load: average CPU cores used by other processes during the row "
                      "(should be ~0 for trustworthy numbers)")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The same table as markdown, for docs/benchmarks.md."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"**{model}**", "",
                  "| scheme | mode | batch | decode tok/s | × bf16 eager | ms/step | prefill tok/s "
                  "| × bf16 eager | linear weights (× bf16) | quantized linear / bf16 | total weights "
                  "| warm-up s | other load |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in (r for r in rows if r["model"] == model):
            w = r["weight_bytes"]
            lin, q = r["linear_vs_bf16"], r["quantized_linear_vs_bf16"]
            dv, pv = r["decode_vs_bf16_eager"], r["prefill_vs_bf16_eager"]
            lines.append(
                f"| {r['scheme']} | {r['mode']} | {r['batch']} | {r['decode_tps']:.1f} | "
                f"{f'{dv:.2f}' if dv else '-'} | {r['ms_per_step']:.1f} | {r['prefill_tps']:.0f} | "
                f"{f'{pv:.2f}' if pv else '-'} | {common.fmt_bytes(w['linear'])} ({lin:.2f}×) | "
                f"{f'{q:.3f}' if q else '-'} | {common.fmt_bytes(w['total'])} | {r['warmup_s']:.1f} | "
                f"{r['other_processes_cores']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stated targets, checked at batch 1 against bf16 eager, best mode per scheme."""
    out = []
    targets = [("int8wo", "decode", 2.0), ("int4wo-g128", "decode", 3.0),
               ("int8wo", "bytes", 0.55), ("int4wo-g128", "bytes", 0.30)]
    for model in dict.fromkeys(r["model"] for r in rows):
        for scheme, what, goal in targets:
            cand = [r for r in rows if r["model"] == model and r["scheme"] == scheme and r.get("batch", 1) == 1]
            if not cand:
                continue
            if what == "decode":
                if "decode_vs_bf16_eager" not in cand[0]:
                    continue
                best = max(cand, key=lambda r: r["decode_vs_bf16_eager"] or 0)
                value = best["decode_vs_bf16_eager"]
                if value is None:
                    continue
                ok = value >= goal
                base = next((r for r in rows if r["model"] == model and r["scheme"] == "bf16"
                             and r["mode"] == "eager" and r["batch"] == 1), best)
                noisy = max(best["other_processes_cores"], base["other_processes_cores"]) > 0.1
                text = (f"{model} {scheme} decode b=1: {value:.2f}× bf16 eager "
                        f"({best['mode']}), target ≥ {goal}×"
                        + (" [UNRELIABLE: other processes were using the CPU]" if noisy else ""))
            else:
                value = cand[0]["quantized_linear_vs_bf16"]
                if value is None:
                    continue
                ok = value <= goal
                text = f"{model} {scheme} quantized linear bytes: {value:.3f}× bf16, target ≤ {goal}×"
            out.append({"model": model, "scheme": scheme, "target": what, "goal": goal,
                        "value": value, "pass": ok, "text": text})
    return out


def main(argv: list[str] | None = None) -> int:
    common.quiet_torchao()
    args = parse_args(argv)
    from rich.console import Console

    console = Console(width=200)
    common.setup_torch(args.threads)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"eager", "compile"}:
        console.print(f"[red]unknown mode in {modes}; use eager,compile[/red]")
        return 2
    from quantgate.quantize.schemes import get_scheme

    for s in schemes:
        get_scheme(s)  # fail early on a typo
    if common.training_running():
        console.print("[yellow]warning: quantgate.reference.train is running; timings will be "
                      "distorted by the competing CPU load[/yellow]")

    sources: list[common.ModelSource] = []
    skipped: list[str] = []
    if args.model in ("random", "both", "random-moe"):
        t0 = time.perf_counter()
        src = common.random_source(quick=args.quick, moe=args.model == "random-moe")
        console.print(f"built {src.name} ({src.param_count() / 1e6:.1f}M parameters) "
                      f"in {time.perf_counter() - t0:.1f}s")
        sources.append(src)
    if args.model in ("reference", "both"):
        ref = common.reference_source(args.reference_path)
        if isinstance(ref, str):
            console.print(f"[yellow]skipping reference model: {ref}[/yellow]")
            skipped.append(ref)
        else:
            console.print(f"reference model: {ref.path} ({ref.param_count() / 1e6:.1f}M parameters)")
            sources.append(ref)

    rows: list[dict[str, Any]] = []
    for src in sources:
        console.print(f"[bold]{src.name}[/bold]: prompt {args.prompt_tokens} tokens, "
                      f"{args.new_tokens} new tokens, batches {batch_sizes}, modes {modes}, "
                      f"median of {args.repeats}")
        for s in schemes:
            rows.extend(bench_scheme(src, s, args, batch_sizes, modes, console.print))
    if args.bytes_only:
        add_byte_ratios(rows)
        md = bytes_markdown(rows)
        console.print(md)
        checks = [c for c in verdicts(rows) if c["target"] == "bytes"]
        for c in checks:
            console.print(("[green]PASS[/green] " if c["pass"] else "[red]MISS[/red] ") + c["text"])
        out = args.json or common.default_json("decode-bytes")
        common.write_json(out, {"benchmark": "decode-bytes", "machine": common.machine_info(),
                                "settings": {k: str(v) for k, v in vars(args).items()},
                                "rows": rows, "verdicts": checks, "markdown": md})
        console.print(f"wrote {out}")
        return 0
    add_ratios(rows)
    if rows:
        print_table(rows, console)
    if rows and args.markdown:
        print(markdown_table(rows))
    checks = verdicts(rows)
    for c in checks:
        console.print(("[green]PASS[/green] " if c["pass"] else "[red]MISS[/red] ") + c["text"])
    out = args.json or common.default_json("decode" + ("-quick" if args.quick else ""))
    common.write_json(out, {
        "benchmark": "decode", "machine": common.machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": [{"name": s.name, "kind": s.kind, "path": str(s.path) if s.path else None,
                    "parameters": s.param_count()} for s in sources],
        "skipped": skipped, "rows": rows, "verdicts": checks,
        "markdown": markdown_table(rows) if rows else "",
    })
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
