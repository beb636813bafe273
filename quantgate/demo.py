"""``quantgate demo``: the whole story so far on the bundled reference model, offline, on CPU.

Quantizes the reference assistant into several variants, then shows, for held-out prompts of each
of its five behaviours, every variant's answer side by side; per variant the share of held-out
answers that are valid (the format holds) and correct (the content matches), its weight bytes, and
its decode speed at batch 1 and its batched throughput. The quality figures come from the
reference model's own graders (``quantgate.reference.checks``); the gate with statistics arrives
with ``quantgate compare``. Speed here is eager mode: on a model this small, per-token Python
overhead dominates and the quantized kernels do not pay (``bench/decode.py`` measures where they
do).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from quantgate.engines.local import LocalEngine
from quantgate.engines.types import GenerationRequest, SamplingParams
from quantgate.models.loading import LoadedModel
from quantgate.quantize.storage import load_any, quantize_to_dir
from quantgate.reference.checks import check_output
from quantgate.reference.corpus import KINDS, Example, generate_kind

__all__ = ["VariantReport", "reference_weights_dir", "run_demo"]

MAX_TOKENS = {"tool_call": 200, "extract": 120, "refusal": 48, "cited": 96, "short": 48}
HELDOUT_SEED = 20261127


def reference_weights_dir() -> Path:
    """Where the bundled reference model lives inside the installed package."""
    import quantgate.reference

    return Path(quantgate.reference.__file__).parent / "weights"


@dataclass
class VariantReport:
    name: str
    weight_mb: float
    linear_ratio: float | None  # quantized linear bytes / the same layers in bf16
    valid: dict[str, float]
    correct: dict[str, float]
    decode_tok_s: float
    batch_tok_s: float
    answers: dict[int, str]


def _answer(engine: LocalEngine, examples: list[Example]) -> list[str]:
    """Greedy answers, batched per behaviour (each has its own length budget)."""
    out: list[str] = []
    for kind in KINDS:
        group = [e for e in examples if e.kind == kind]
        requests = [GenerationRequest(engine.render(e.messages, e.tools), SamplingParams(max_tokens=MAX_TOKENS[kind]))
                    for e in group]
        out.extend(g.text for g in engine.generate(requests))
    return out


def _speed(engine: LocalEngine, example: Example) -> tuple[float, float]:
    """Decode tokens/s for one request, and generated tokens/s for a batch of 16."""
    prompt = engine.render(example.messages, example.tools)
    params = SamplingParams(max_tokens=48)
    engine.generate([GenerationRequest(prompt, params)])  # warm-up
    single = engine.generate([GenerationRequest(prompt, params)])[0]
    decode = max(single.usage.completion_tokens - 1, 1) / max(single.timings.decode_s, 1e-9)
    start = time.perf_counter()
    batch = engine.generate([GenerationRequest(prompt, params) for _ in range(16)])
    total = sum(g.usage.completion_tokens for g in batch) / (time.perf_counter() - start)
    return decode, total


def _report(name: str, loaded: LoadedModel, examples: list[Example], shown: list[int]) -> VariantReport:
    engine = LocalEngine(loaded, max_batch_size=16)
    ordered = [e for kind in KINDS for e in examples if e.kind == kind]
    outputs = _answer(engine, ordered)
    valid: dict[str, list[bool]] = {k: [] for k in KINDS}
    correct: dict[str, list[bool]] = {k: [] for k in KINDS}
    for example, text in zip(ordered, outputs):
        verdict = check_output(example, text)
        valid[example.kind].append(verdict.valid)
        correct[example.kind].append(verdict.correct)
    by_id = {id(e): t for e, t in zip(ordered, outputs)}
    decode, batch = _speed(engine, examples[0])
    wb = (loaded.variant or {}).get("weight_bytes")
    if wb is None:
        size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        ratio = None
    else:
        size = wb["total"]
        ratio = wb["linear_quantized"] / wb["linear_quantized_as_bf16"] if wb["linear_quantized_as_bf16"] else None
    return VariantReport(
        name=name, weight_mb=size / 1e6, linear_ratio=ratio,
        valid={k: sum(v) / len(v) for k, v in valid.items()},
        correct={k: sum(v) / len(v) for k, v in correct.items()},
        decode_tok_s=decode, batch_tok_s=batch,
        answers={i: by_id[id(examples[i])] for i in shown},
    )


def run_demo(out: Path, schemes: list[str], per_kind: int, console: Console,
             model_dir: Path | None = None, n_eval: int = 20) -> list[VariantReport]:
    """Quantize, answer, grade and time; print everything; return the per-variant reports."""
    source = model_dir or reference_weights_dir()
    examples = [e for kind in KINDS for e in generate_kind(kind, n_eval, HELDOUT_SEED, "heldout")]
    shown = [i for i, e in enumerate(examples) if i % n_eval < per_kind]
    reports: list[VariantReport] = []
    console.print(f"[bold]quantgate demo[/bold]: reference model at {source}; variants into {out}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("variants", total=len(schemes) + 1)
        progress.update(task, description="fp32 (source)")
        reports.append(_report("fp32", load_any(source), examples, shown))
        progress.advance(task)
        for scheme in schemes:
            progress.update(task, description=f"quantizing {scheme}")
            quantize_to_dir(source, scheme, out / scheme)
            progress.update(task, description=f"answering with {scheme}")
            reports.append(_report(scheme, load_any(out / scheme), examples, shown))
            progress.advance(task)
    _print_answers(console, examples, shown, reports)
    _print_summary(console, reports, n_eval)
    return reports


def _print_answers(console: Console, examples: list[Example], shown: list[int], reports: list[VariantReport]) -> None:
    for i in shown:
        example = examples[i]
        user = example.messages[-1]["content"]
        table = Table(title=f"[{example.kind}] {user[:150]}", title_justify="left", show_lines=False)
        table.add_column("variant", no_wrap=True)
        table.add_column("answer")
        table.add_column("ok", no_wrap=True)
        for r in reports:
            verdict = check_output(example, r.answers[i])
            mark = "valid+correct" if verdict.correct else ("valid" if verdict.valid else f"INVALID: {verdict.reason}")
            table.add_row(r.name, r.answers[i][:300], mark)
        console.print(table)


def _print_summary(console: Console, reports: list[VariantReport], n_eval: int) -> None:
    table = Table(title=f"Variants on {n_eval} held-out prompts per behaviour (valid / correct)",
                  title_justify="left")
    table.add_column("variant", no_wrap=True)
    for kind in KINDS:
        table.add_column(kind, justify="right")
    for column in ("weights MB", "linear vs bf16", "decode tok/s b=1", "tok/s b=16"):
        table.add_column(column, justify="right")
    for r in reports:
        cells = [f"{r.valid[k]:.0%} / {r.correct[k]:.0%}" for k in KINDS]
        ratio = f"{r.linear_ratio:.2f}x" if r.linear_ratio is not None else "-"
        table.add_row(r.name, *cells, f"{r.weight_mb:.1f}", ratio, f"{r.decode_tok_s:.0f}", f"{r.batch_tok_s:.0f}")
    console.print(table)
