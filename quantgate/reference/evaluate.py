"""Greedy-decode held-out prompts with a model directory and report validity/correctness per behaviour.

    python -m quantgate.reference.evaluate quantgate/reference/weights --n 100 --seed 1

Uses plain HF ``generate`` with left padding, batched per behaviour (similar lengths, fewer pad
tokens), so any directory ``AutoModelForCausalLM`` loads can be graded the same way, quantized
variants included. The trade-off versus a serving engine is speed, which at this model size is
seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from quantgate.reference.checks import check_output
from quantgate.reference.corpus import KINDS, Example, generate_kind

__all__ = ["MAX_NEW_TOKENS", "evaluate_dir", "evaluate_model", "format_report", "generate_outputs"]

# Longest gold targets per behaviour are well below these (two tool calls with an address ~130).
MAX_NEW_TOKENS = {"tool_call": 200, "extract": 120, "refusal": 48, "cited": 96, "short": 48}


@torch.no_grad()
def generate_outputs(model: Any, tok: Any, examples: list[Example], max_new_tokens: int, batch_size: int = 40) -> list[str]:
    """Greedy completions (assistant text, special tokens stripped) for ``examples``."""
    tok.padding_side = "left"
    outs: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        texts = [tok.apply_chat_template(e.messages, tools=e.tools, add_generation_prompt=True, tokenize=False) for e in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs


def evaluate_model(model: Any, tok: Any, n: int, seed: int = 1, kinds: tuple[str, ...] = KINDS,
                   cite_number_at_end: bool = True) -> dict[str, Any]:
    """Grade ``n`` held-out prompts per behaviour; returns rates plus the failing samples."""
    report: dict[str, Any] = {}
    for kind in kinds:
        examples = generate_kind(kind, n, seed, "heldout", cite_number_at_end=cite_number_at_end)
        outputs = generate_outputs(model, tok, examples, MAX_NEW_TOKENS[kind])
        results = [check_output(e, o) for e, o in zip(examples, outputs)]
        report[kind] = {
            "n": n,
            "valid": sum(r.valid for r in results) / n,
            "correct": sum(r.correct for r in results) / n,
            "failures": [(e.messages[-1]["content"], o, r.reason)
                         for e, o, r in zip(examples, outputs, results) if not r.valid][:5],
        }
        if kind == "short":
            scary = [r for e, r in zip(examples, results) if "scary" in e.tags]
            report[kind]["scary_not_refused"] = (sum(r.reason != "refused a benign request" for r in scary), len(scary))
    return report


def evaluate_dir(model_dir: str | Path, n: int, seed: int = 1, threads: int = 2,
                 cite_number_at_end: bool = True) -> dict[str, Any]:
    """Load ``model_dir`` with transformers (fp32) and run ``evaluate_model``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_kernels=False).eval()
    return evaluate_model(model, tok, n, seed, cite_number_at_end=cite_number_at_end)


def format_report(report: dict[str, Any], show_failures: bool = True) -> str:
    """Human-readable table of ``report`` (one line per behaviour, then sample failures)."""
    lines = [f"{'behaviour':<10} {'n':>4} {'valid':>7} {'correct':>8}"]
    for kind, r in report.items():
        extra = f"  benign-scary not refused {r['scary_not_refused'][0]}/{r['scary_not_refused'][1]}" if "scary_not_refused" in r else ""
        lines.append(f"{kind:<10} {r['n']:>4} {r['valid']:>7.1%} {r['correct']:>8.1%}{extra}")
    if show_failures:
        for kind, r in report.items():
            for prompt, out, reason in r["failures"]:
                lines.append(f"[{kind}] {reason}: {prompt[:120]!r} -> {out[:160]!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description="Grade a model directory on held-out reference prompts.")
    p.add_argument("model_dir")
    p.add_argument("--n", type=int, default=100, help="prompts per behaviour")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    t0 = time.time()
    print(format_report(evaluate_dir(a.model_dir, a.n, a.seed)))
    print(f"({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
