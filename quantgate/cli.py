"""The ``quantgate`` command line: parse flags, call library functions, print.

Every user mistake surfaces as a ``QuantgateError``, printed as one ``error: ...`` line on stderr
with exit code 2; flags typer rejects exit 2 too. Heavy imports (torch, transformers) happen inside
the commands that need them, so ``quantgate --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from quantgate.errors import QuantgateError

__all__ = ["app", "main"]

app = typer.Typer(
    name="quantgate",
    help="Quantize a model into precision variants, gate them offline, serve and roll them out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _quiet_libraries() -> None:
    """Silence import-time chatter from torchao/torch/transformers that is not for our users."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("torchao", "torch.utils._pytree", "torch._dynamo", "torch._inductor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*requires_grad.*")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _output_file(path: Path, option: str) -> Path:
    """Make ``path``'s folder before any work is done, so a bad output path fails first, in one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QuantgateError(f"{option} {path}: cannot create its folder ({exc.strerror})") from None
    if path.is_dir():
        raise QuantgateError(f"{option} {path}: is a directory, expected a file path")
    return path


def _console(stderr: bool = False) -> Console:
    # Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    return Console(highlight=False, stderr=stderr, width=None if stream.isatty() else 160)


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="Source model directory (Hugging Face, safetensors).")],
    scheme: Annotated[str, typer.Option("--scheme", "-s", help="Scheme name; see `quantgate schemes`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the variant to.")],
    override: Annotated[
        Optional[list[str]],
        typer.Option("--override", help="PATTERN=SCHEME per-layer override (fnmatch on module name; "
                     "SCHEME may be 'none'). Repeatable; first match wins."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option(help="Compute dtype; default: the scheme's (auto: bf16 where the CPU has native bf16, else fp32; int8wo: fp32 wherever quantgate's int8 kernel runs).")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Load pickle checkpoints (runs code from the file).")] = False,
) -> None:
    """Quantize MODEL with a scheme and write a variant directory with manifest.json."""
    from quantgate.quantize.apply import parse_override
    from quantgate.quantize.schemes import get_scheme

    get_scheme(scheme)
    overrides = [parse_override(o) for o in override or []]
    _quiet_libraries()
    from quantgate.quantize.storage import quantize_to_dir

    console = _console()
    with console.status("starting") as status:
        manifest = quantize_to_dir(model, scheme, out, overrides, device=device, dtype=dtype,
                                   allow_pickle=allow_pickle, on_stage=lambda s: status.update(s))
    counts: dict[str, int] = {}
    for layer in manifest.layers.values():
        counts[layer["scheme"]] = counts.get(layer["scheme"], 0) + 1
    layers = ", ".join(f"{n} {s}" for s, n in counts.items())
    snr = "" if manifest.probe_snr_db is None else f"; probe logits SNR {manifest.probe_snr_db:.1f} dB"
    console.print(f"wrote {out} ({manifest.scheme_name}; {layers}; "
                  f"{manifest.weight_bytes['total'] / 1e6:.2f} MB; {manifest.quantize_seconds:.1f}s{snr})")
    from quantgate.quantize.compat import float_warning, linearized_summary

    if manifest.linearized:
        console.print(f"{linearized_summary(manifest.linearized)}, to be quantized")

    from quantgate.quantize.manifest import size_warning

    for warning in (float_warning(manifest.unquantized), size_warning(manifest)):
        if warning:
            console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command()
def check(
    cases: Annotated[Path, typer.Option("--cases", help='JSONL of {"case": ..., "output": ...} lines; - for stdin.')],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write verdict lines here (default: stdout).")] = None,
    allow_python: Annotated[bool, typer.Option("--allow-python", help="Run `python` assertions (code from the cases file).")] = False,
) -> None:
    """Grade outputs against their cases' assertions: one JSON verdict line per input line."""
    from quantgate.checks import run_check

    if out is None:
        summary = run_check(cases, sys.stdout, allow_python=allow_python)
    else:
        with _output_file(out, "--out").open("w", encoding="utf-8") as f:
            summary = run_check(cases, f, allow_python=allow_python)
    typer.echo(summary.line(), err=True)
    raise typer.Exit(summary.exit_code)


DEFAULT_STORE = Path(".quantgate/runs.sqlite")


@app.command(name="eval")
def eval_command(
    target: Annotated[str, typer.Argument(help="Model or variant directory, or an OpenAI-compatible server URL.")],
    golden: Annotated[Path, typer.Option("--golden", "-g", help="Golden set (.jsonl or .yaml).")],
    store: Annotated[Path, typer.Option(help="SQLite run store.")] = DEFAULT_STORE,
    max_tokens: Annotated[int, typer.Option(min=1, help="Default answer budget (a case's metadata.max_tokens wins).")] = 256,
    export: Annotated[Optional[Path], typer.Option(help="Also write the run as JSONL here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write a JSON summary (pass rates per tag) here; - for stdout.")] = None,
    device: Annotated[str, typer.Option(help="Where a local model runs: cpu, cuda, cuda:1 ...")] = "cpu",
    near_ties: Annotated[bool, typer.Option("--near-ties/--no-near-ties", help="For a local model: list the answers it holds by a near tie and probe the critical ones.")] = True,
) -> None:
    """Answer a golden set with one target, grade every answer, store the run."""
    _quiet_libraries()
    from rich.progress import Progress

    from quantgate.checks.builtin import default_registry
    from quantgate.evaluate.golden import load_golden
    from quantgate.evaluate.runner import EvalConfig, run_eval
    from quantgate.evaluate.targets import LocalTarget, open_target
    from quantgate.store.runs import RunStore

    golden_set = load_golden(golden, default_registry())
    if export is not None:
        _output_file(export, "--export")
    if json_out is not None and str(json_out) != "-":
        _output_file(json_out, "--json")
    # With --json - the summary owns stdout; the human lines go to stderr.
    console = _console(stderr=str(json_out) == "-")
    with RunStore(store) as runs:
        with console.status(f"loading {target}"):
            opened = open_target(target, device=device)
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"eval {opened.name}", total=None)
                config = EvalConfig(max_tokens=max_tokens)
                run = run_eval(opened, golden_set, runs, config,
                               on_progress=lambda d, t: progress.update(task, completed=d, total=t))
            if near_ties and isinstance(opened, LocalTarget):
                from quantgate.evaluate.near_ties import find_near_ties

                with console.status("near ties"):
                    ties = find_near_ties(opened, golden_set, list(runs.cases(run.id)), config)
                run.meta["near_ties"] = ties
                runs.update_meta(run.id, run.meta)
        finally:
            opened.close()
        if export:
            runs.export_jsonl(run.id, export)
    meta = run.meta
    for tag, (passed, total) in meta["by_tag"].items():
        console.print(f"  {tag:<24} {passed:>5}/{total:<5} {passed / total:6.1%}")
    ties_line = _near_ties_line(meta.get("near_ties"))
    if ties_line:
        console.print(ties_line, markup=False, highlight=False)
    console.print(f"run {run.id}: {meta['passed']}/{meta['cases']} cases passed, {meta['errors']} engine errors, "
                  f"{meta['seconds']:.1f}s (stored in {store}; compare with run:{run.id})")
    if json_out is not None:
        summary = {"run": run.id, "target": run.target, "golden": run.golden, "golden_sha256": run.golden_sha256,
                   "cases": meta["cases"], "passed": meta["passed"], "pass_rate": meta["passed"] / max(meta["cases"], 1),
                   "errors": meta["errors"], "seconds": round(meta["seconds"], 3),
                   "by_tag": {t: {"passed": p, "cases": n, "pass_rate": p / n} for t, (p, n) in meta["by_tag"].items()}}
        if "near_ties" in meta:
            summary["near_ties"] = meta["near_ties"]
        text = json.dumps(summary)
        if str(json_out) == "-":
            typer.echo(text)
        else:
            json_out.write_text(text + "\n", encoding="utf-8")


def _near_ties_line(ties: list[dict[str, Any]] | None) -> str | None:
    """``near ties: ...`` for the eval summary (the same wording as a comparison's reports)."""
    if ties is None:
        return None
    from quantgate.evaluate.reports.common import near_ties_summary

    return f"  near ties (own token < 0.1 nats ahead): {near_ties_summary(ties) or 'none'}"


@app.command()
def compare(
    baseline: Annotated[str, typer.Argument(help="Model dir, server URL, or run:ID.")],
    candidate: Annotated[str, typer.Argument(help="Model dir, server URL, or run:ID.")],
    golden: Annotated[Path, typer.Option("--golden", "-g", help="Golden set (.jsonl or .yaml).")],
    policy: Annotated[Optional[Path], typer.Option(help="Gate policy YAML (default: the built-in policy).")] = None,
    store: Annotated[Path, typer.Option(help="SQLite run store.")] = DEFAULT_STORE,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    token_metrics: Annotated[bool, typer.Option("--token-metrics/--no-token-metrics", help="KL etc. when both sides are local.")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write a Markdown report (PR comment) here.")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write JUnit XML here.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Write a self-contained HTML report here.")] = None,
    device: Annotated[str, typer.Option(help="Where local sides run: cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Compare a candidate against a baseline on a golden set and gate it: exit 0 pass/warn, 1 fail, 2 bad input."""
    from quantgate.evaluate.gate import DEFAULT_POLICY, load_policy

    gate_policy = load_policy(policy) if policy else DEFAULT_POLICY
    _quiet_libraries()
    from rich.progress import Progress

    from quantgate.evaluate.pipeline import compare_sides
    from quantgate.evaluate.reports import render_terminal, write_reports
    from quantgate.evaluate.runner import EvalConfig
    from quantgate.store.runs import RunStore

    console = _console()
    with RunStore(store) as runs, Progress(console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done, total=total)

        outcome = compare_sides(baseline, candidate, golden, runs, gate_policy, EvalConfig(max_tokens=max_tokens),
                                token_metrics=token_metrics, progress=on_progress, device=device)
    render_terminal(outcome.report, console)
    for path in write_reports(outcome.report, json_out, markdown, junit, html):
        console.print(f"wrote {path}")
    raise typer.Exit(outcome.gate.exit_code)


@app.command()
def schemes() -> None:
    """List the quantization schemes."""
    from rich.table import Table

    from quantgate.quantize.schemes import SCHEMES

    table = Table("scheme", "weight bits", "group", "activations", "compute (on this CPU)", "description")
    for s in SCHEMES.values():
        compute = s.compute_dtype if s.compute_dtype != "auto" else f"auto ({s.resolved_compute_dtype('cpu')})"
        table.add_row(s.name, str(s.weight_bits), str(s.group_size or "-"), s.activation, compute, s.description)
    _console().print(table)
    from quantgate.quantize.int8_kernel import kernel_isa, kernel_status, op_implementation

    status = kernel_status()
    _console().print(f"int8 weight-only decode with fp32 activations on this CPU: "
                     f"{f'quantgate kernel ({kernel_isa()} build)' if status == 'ready' else f'torchao path ({status})'}")
    if status == "ready":
        impl = op_implementation()
        _console().print("  compiled graphs call it through its "
                         + ("C++ registration" if impl == "c++" else f"Python registration ({impl.removeprefix('python: ')})"))
    from quantgate.quantize import int4_kernel

    status = int4_kernel.kernel_status()
    _console().print("int4 weight-only decode on this CPU: "
                     + (f"quantgate kernel (torch's {int4_kernel.packing()} packing)" if status == "ready"
                        else f"torch's kernel ({status})"))
    if status == "ready" and int4_kernel.BF16_FROM_ROWS:
        _console().print(f"  prefills of {int4_kernel.BF16_FROM_ROWS}+ rows: the weights widened to bf16 for the AMX tiles")
    if status == "ready":
        impl = int4_kernel.op_implementation()
        _console().print("  compiled graphs call it through its "
                         + ("C++ registration" if impl == "c++" else f"Python registration ({impl.removeprefix('python: ')})"))
    import torch

    from quantgate.engines.onednn_linear import min_rows, min_weight, onednn_status

    fp32, bf16 = onednn_status(torch.float32), onednn_status(torch.bfloat16)
    smallest, rows = min_weight(), min_rows()
    calls = f" in calls of {rows}+ rows" if rows > 1 else ""
    _console().print("fp32 linears of an eager engine on this CPU: "
                     + (f"oneDNN for layers of at least {smallest:,} weights{calls}, MKL otherwise" if fp32 == "ready"
                        and smallest else "oneDNN (MKL would run its AVX2 code here)" if fp32 == "ready"
                        else f"MKL ({fp32})"))
    _console().print("bf16 linears of an eager engine on this CPU: "
                     + ("oneDNN, weights laid out once" if bf16 == "ready" else f"torch's path ({bf16})"))


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A variant directory or a model directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a variant's manifest, sizes and layer map (or a plain model's summary)."""
    from quantgate.inspecting import describe, render

    info = describe(path)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        render(info, _console())


@app.command()
def generate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model or variant directory.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="User message; repeat for a batch.")],
    system: Annotated[Optional[str], typer.Option(help="System message.")] = None,
    tools: Annotated[Optional[Path], typer.Option(help="JSON file with OpenAI-style tools.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[Optional[int], typer.Option()] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop sequence; repeatable.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send the prompt as is, without the chat template.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they are produced (one prompt).")] = False,
    dtype: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | fp16 (plain model dirs only).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the decode step (slow first call).")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer, with usage and timings.")] = False,
) -> None:
    """Generate answers with a model or variant (batched when several prompts are given)."""
    from quantgate.engines.types import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=tuple(stop or ()))
    tool_list = _read_tools(tools) if tools else None
    if stream and len(prompt) > 1:
        raise QuantgateError("--stream takes a single --prompt")
    _quiet_libraries()
    from quantgate.engines.local import LocalEngine
    from quantgate.quantize.storage import load_any

    with Console(stderr=True).status(f"loading {model}"):
        loaded = load_any(model, dtype=dtype, device=device, allow_pickle=allow_pickle)
    engine = LocalEngine(loaded, compile=compile)
    texts = []
    for p in prompt:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
        texts.append(p if raw else engine.render(messages, tool_list))
    requests = [GenerationRequest(t, params) for t in texts]
    if stream:
        for item in engine.stream(requests[0]):
            if hasattr(item, "index"):
                sys.stdout.write(item.text)
                sys.stdout.flush()
            else:
                sys.stdout.write("\n")
                if as_json:
                    typer.echo(json.dumps(_generation_json(item)))
        return
    for p, result in zip(prompt, engine.generate(requests)):
        if as_json:
            typer.echo(json.dumps({"prompt": p, **_generation_json(result)}))
        else:
            typer.echo(result.text)


def _read_tools(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise QuantgateError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise QuantgateError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise QuantgateError(f"{path}: expected a JSON list of OpenAI-style tool objects")
    return data


def _generation_json(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(result)
    data["usage"]["total_tokens"] = result.usage.total_tokens
    return data


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write the variants.")] = Path("out/demo"),
    schemes: Annotated[str, typer.Option(help="Comma-separated schemes to make.")] = "int8wo,int4wo-g32,int2wo-g32",
    model: Annotated[Optional[Path], typer.Option(help="Model directory; default: the bundled reference model.")] = None,
    golden: Annotated[Optional[Path], typer.Option(help="Golden set; default: the reference model's.")] = None,
    cases: Annotated[int, typer.Option(min=0, help="Gate on an even spread of this many cases (0: all).")] = 100,
    serve_requests: Annotated[int, typer.Option(min=0, help="Requests sent through the gateway (0: skip serving).")] = 24,
    rollouts: Annotated[bool, typer.Option(help="Roll out an 8-bit and the lowest-bit variant against fp32.")] = True,
) -> None:
    """Quantize the reference model into variants, compare their answers, gate each against fp32, serve and roll out."""
    from quantgate.quantize.schemes import get_scheme

    names = [s.strip() for s in schemes.split(",") if s.strip()]
    for name in names:
        get_scheme(name)
    _quiet_libraries()
    from quantgate.demo import run_demo

    run_demo(out, names, _console(), model_dir=model, golden_path=golden, max_cases=cases or None,
             serve_requests=serve_requests, rollouts=rollouts)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="Gateway YAML config.")],
    host: Annotated[Optional[str], typer.Option(help="Override server.host.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Override server.port.")] = None,
    check_only: Annotated[bool, typer.Option("--check", help="Validate the config and exit.")] = False,
) -> None:
    """Serve the OpenAI-compatible gateway in front of the configured variants."""
    from quantgate.config import load_config

    cfg = load_config(config)
    if check_only:
        typer.echo(f"{config}: ok ({len(cfg.variants)} variants, {len(cfg.routes)} routes, ladder {' < '.join(cfg.ladder)})")
        return
    _quiet_libraries()
    from quantgate.gateway.server import serve as run_server

    run_server(cfg, host, port)


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="Base URL of the target (the gateway or one variant), e.g. http://127.0.0.1:8080.")],
    model: Annotated[str, typer.Option(help="Model name to ask for.")],
    prompts: Annotated[Path, typer.Option(help="Golden set (.jsonl/.yaml) or JSONL of request bodies.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,4,16",
    requests: Annotated[int, typer.Option(min=1, help="Completed requests per level.")] = 100,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens for golden-set prompts.")] = 64,
    stream: Annotated[bool, typer.Option(help="Stream, to measure time to first token.")] = False,
    api_key: Annotated[Optional[str], typer.Option(envvar="QUANTGATE_API_KEY", help="Bearer key.")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Requests sent before measuring.")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """Measure a target's capacity curve: req/s, tokens/s, latency and TTFT percentiles per concurrency."""
    from quantgate.loadtest import format_table, load_prompts, run_sweep, to_json

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise QuantgateError(f"--concurrency must be comma-separated integers, got {concurrency!r}") from None
    if not levels or min(levels) < 1:
        raise QuantgateError("--concurrency needs at least one level of 1 or more")
    results = run_sweep(url, model, load_prompts(prompts, max_tokens), levels, requests, api_key, stream,
                        warmup=warmup)
    typer.echo(format_table(results))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"url": url, "model": model, "levels": to_json(results)}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except QuantgateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
