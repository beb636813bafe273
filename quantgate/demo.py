"""``quantgate demo``: the whole story so far on the bundled reference model, offline, on CPU.

1. Quantize the reference assistant into several variants (weight bytes from each manifest).
2. Answer one held-out golden case of each behaviour with every variant, side by side.
3. Gate every variant against the fp32 model on the golden set (by default an even spread of 100
   of its 320 cases, so the demo takes minutes, not a quarter hour): pass rates with
   intervals, flips, critical regressions, KL divergence and top-1 agreement, under the default
   policy; print which variants pass, warn or fail, and why.
4. Serve every variant behind the gateway on a precision ladder and send golden-set tool-call and
   extraction prompts through it: where answers were served, escalations when a low rung breaks
   a format, latency and cost per successful request (``demo_gateway``).

The fp32 baseline is evaluated once and reused by id for every comparison. Speed shown is decode
tokens/s at batch 1 in eager mode: on a model this small, per-token Python overhead dominates and
the quantized kernels do not pay (``bench/decode.py`` measures where they do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from quantgate.checks.builtin import default_registry
from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.evaluate.gate import DEFAULT_POLICY
from quantgate.evaluate.golden import GoldenSet, load_golden
from quantgate.evaluate.pipeline import compare_sides, evaluate_side
from quantgate.evaluate.runner import EvalConfig, case_request
from quantgate.quantize.storage import load_any, quantize_to_dir
from quantgate.store.runs import RunStore

__all__ = ["VariantResult", "reference_golden_path", "reference_weights_dir", "run_demo"]


def reference_weights_dir() -> Path:
    """Where the bundled reference model lives inside the installed package."""
    import quantgate.reference

    return Path(quantgate.reference.__file__).parent / "weights"


def reference_golden_path() -> Path:
    import quantgate.reference

    return Path(quantgate.reference.__file__).parent / "golden" / "golden.jsonl"


@dataclass
class VariantResult:
    name: str
    weight_mb: float
    decode_tok_s: float
    answers: dict[str, str]
    report: dict[str, Any] | None = None  # None for the baseline itself


def _decode_speed(engine: LocalEngine, prompt: list[int]) -> float:
    params = SamplingParams(max_tokens=48)
    engine.generate([GenerationRequest(prompt, params)])  # warm-up
    g = engine.generate([GenerationRequest(prompt, params)])[0]
    return max(g.usage.completion_tokens - 1, 1) / max(g.timings.decode_s, 1e-9)


def _sample(golden: GoldenSet) -> list[Any]:
    """The first case of each behaviour, for the side-by-side."""
    seen: dict[str, Any] = {}
    for case in golden.cases:
        kind = next((t for t in case.tags if t.startswith("kind:")), "kind:other")
        seen.setdefault(kind, case)
    return list(seen.values())


def _answers(path: Path, shown: list[Any], config: EvalConfig) -> tuple[dict[str, str], float, float]:
    loaded = load_any(path)
    engine = LocalEngine(loaded)
    requests = [case_request(c, 0, config) for c in shown]
    prompts = [GenerationRequest(engine.render(r.messages, r.tools), r.params) for r in requests]
    texts = {c.id: g.text for c, g in zip(shown, engine.generate(prompts))}
    wb = (loaded.variant or {}).get("weight_bytes", {}).get("total")
    size = wb if wb is not None else sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    return texts, size / 1e6, _decode_speed(engine, engine.encode(prompts[0].prompt))


def run_demo(out: Path, schemes: list[str], console: Console,
             model_dir: Path | None = None, golden_path: Path | None = None,
             max_cases: int | None = None, serve_requests: int = 24, rollouts: bool = True) -> list[VariantResult]:
    """Quantize, answer, gate; print everything; return the per-variant results."""
    source = model_dir or reference_weights_dir()
    golden_file = golden_path or reference_golden_path()
    golden = load_golden(golden_file, default_registry())
    if max_cases and len(golden) > max_cases:
        # An even spread over the file keeps every behaviour represented in the subset.
        lines = [ln for ln in golden_file.read_text().splitlines() if ln.strip()]
        step = len(lines) / max_cases
        out.mkdir(parents=True, exist_ok=True)
        subset = out / "golden-subset.jsonl"
        subset.write_text("".join(lines[int(i * step)] + "\n" for i in range(max_cases)))
        golden = load_golden(subset, default_registry())
    config = EvalConfig()
    shown = _sample(golden)
    console.print(f"[bold]quantgate demo[/bold]: reference model {source}, golden set {golden.path} "
                  f"({len(golden)} cases); variants into {out}")
    results: list[VariantResult] = []
    with RunStore(out / "runs.sqlite") as store, Progress(console=console, transient=True) as progress:
        task = progress.add_task("quantizing", total=len(schemes))
        for scheme in schemes:
            progress.update(task, description=f"quantizing {scheme}")
            quantize_to_dir(source, scheme, out / scheme)
            progress.advance(task)
        baseline_task = progress.add_task("fp32: golden set", total=None)
        base_run, _ = evaluate_side(str(source), golden, store, config,
                                    lambda _l, d, t: progress.update(baseline_task, completed=d, total=t))
        texts, size, speed = _answers(source, shown, config)
        results.append(VariantResult("fp32", size, speed, texts))
        for scheme in schemes:
            gate_task = progress.add_task(f"{scheme}: golden set + gate", total=None)
            outcome = compare_sides(f"run:{base_run.id}", str(out / scheme), golden.path, store, DEFAULT_POLICY, config,
                                    progress=lambda _l, d, t, task=gate_task: progress.update(task, completed=d, total=t))
            texts, size, speed = _answers(out / scheme, shown, config)
            results.append(VariantResult(scheme, size, speed, texts, outcome.report))
    _print_answers(console, shown, results)
    _print_gate(console, results)
    if serve_requests:
        from quantgate.demo_gateway import run_gateway_demo

        from quantgate.quantize.schemes import get_scheme

        # Fewest weight bits lowest on the ladder; illustrative prices proportional to weight bytes.
        paths = {"fp32": source, **{s: out / s for s in schemes}}
        bits = {r.name: get_scheme(r.name).weight_bits for r in results}
        rungs = sorted(((r.name, paths[r.name], round(r.weight_mb / 100, 4)) for r in results),
                       key=lambda rung: (bits[rung[0]], rung[2]))
        run_gateway_demo(rungs, golden_file, console, requests=serve_requests)
    if rollouts:
        from quantgate.demo_rollout import run_rollout_demo
        from quantgate.quantize.schemes import get_scheme

        # A good canary (8-bit weights) and the most aggressive scheme quantized, each against fp32.
        good = [s for s in schemes if get_scheme(s).weight_bits == 8][:1]
        bad = sorted((s for s in schemes if get_scheme(s).weight_bits <= 3), key=lambda s: get_scheme(s).weight_bits)[:1]
        for scheme in good + bad:
            run_rollout_demo(("fp32", source), (scheme, out / scheme), golden_file, console)
    return results


def _print_answers(console: Console, shown: list[Any], results: list[VariantResult]) -> None:
    for case in shown:
        user = (case.messages or [{"content": case.prompt}])[-1]["content"]
        table = Table(title=f"[{case.id}] {user[:160]}", title_justify="left")
        table.add_column("variant", no_wrap=True)
        table.add_column("answer")
        for r in results:
            table.add_row(r.name, r.answers[case.id][:300])
        console.print(table)


def _print_gate(console: Console, results: list[VariantResult]) -> None:
    table = Table(title="Gate against fp32 on the golden set (default policy)", title_justify="left")
    for column in ("variant", "verdict", "pass rate", "change [95% CI]", "flips -/+", "critical",
                   "KL mean", "top-1", "MB", "tok/s b=1"):
        table.add_column(column, no_wrap=column in ("variant", "verdict"), justify="left" if column == "variant" else "right")
    base = results[0]
    first = next((r.report for r in results if r.report), None)
    if first:
        rate = first["behaviour"]["overall"]["baseline"]["estimate"]
        table.add_row("fp32", "baseline", f"{rate:.1%}", "", "", "", "", "", f"{base.weight_mb:.1f}", f"{base.decode_tok_s:.0f}")
    for r in results[1:]:
        rep = r.report or {}
        overall = rep["behaviour"]["overall"]
        diff = overall["diff"]
        tokens = rep.get("tokens") or {}
        verdict = rep["gate"]["verdict"]
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}[verdict]
        table.add_row(
            r.name, f"[{colour}]{verdict.upper()}[/{colour}]", f"{overall['candidate']['estimate']:.1%}",
            f"{diff['estimate']:+.1%} [{diff['low']:+.1%}, {diff['high']:+.1%}]",
            f"{overall['regressions']} / +{overall['improvements']}",
            str(len(rep["behaviour"]["critical_regressions"])),
            f"{tokens['kl_mean']:.4f}" if tokens else "-", f"{tokens['top1_agreement']:.3f}" if tokens else "-",
            f"{r.weight_mb:.1f}", f"{r.decode_tok_s:.0f}",
        )
    console.print(table)
    for r in results[1:]:
        rep = r.report or {}
        failing = [x for x in rep["gate"]["rules"] if x["outcome"] in ("fail", "warn")]
        for rule in failing:
            console.print(f"  {r.name}: {rule['outcome']} {rule['rule']}: {rule['reason']}")
