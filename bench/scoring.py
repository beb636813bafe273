"""Teacher-forced scoring on a large vocabulary: the engine's tail-only logits against logits for every position.

    python bench/scoring.py                 # Qwen2-0.5B-shaped random model (494M, vocab 151,936), 16 pairs
    python bench/scoring.py --quick         # the same shapes, 2 layers

``quantgate compare`` scores both models on the baseline's answers (``LocalEngine.score_batch``
with full log-probability rows, for KL). A model computes logits for every position it is given;
with a 152k vocabulary those cover the whole prompt, 300 tokens of tools and messages, when only
the answer's 40-90 positions are needed. The engine now left-pads and asks for the last positions
only (``logits_to_keep``). Each mode runs in a fresh process (peak RSS is per process), the two
alternating; the "every position" mode is the previous method (right padding, whole-sequence
logits), kept here as the side-by-side baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import build_random_tokenizer, machine_info, quiet_torchao, setup_torch, write_json, default_json  # noqa: E402

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)


def _pairs(n: int) -> list[tuple[list[int], list[int]]]:
    import torch

    g = torch.Generator().manual_seed(0)
    return [(torch.randint(1, 250, (300 + 7 * i,), generator=g).tolist(),
             torch.randint(1, 250, (40 + 3 * i,), generator=g).tolist()) for i in range(n)]


def _child(mode: str, quick: bool, n: int) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from quantgate.engines.local import LocalEngine
    from quantgate.models.loading import LoadedModel

    quiet_torchao()
    setup_torch()
    tok = build_random_tokenizer(512)
    cfg = dict(QWEN2_05B, num_hidden_layers=2) if quick else QWEN2_05B
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, pad_token_id=tok.pad_token_id, eos_token_id=None)).eval()
    engine = LocalEngine(LoadedModel(model=model, tokenizer=tok, path=Path("<in-memory>"), dtype="fp32",
                                     chat_template=None, name="qwen2-shaped"), max_batch_size=16)
    pairs = _pairs(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "tail":
        _, rows = engine.score_batch(pairs, return_logprobs=True)  # type: ignore[misc]
    else:  # the previous method: right padding, logits for every position, then the continuation's rows
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.full((len(pairs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for i, (p, c) in enumerate(pairs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        rows = [logits[i, len(p) - 1 : len(p) + len(c) - 1].float().log_softmax(-1) for i, (p, c) in enumerate(pairs)]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    chosen = sum(float(r.gather(1, torch.tensor(c)[:, None]).sum()) for r, (_, c) in zip(rows, pairs))
    return {"mode": mode, "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024),
            "rss_before_mb": round(before / 1024), "scoring_rss_mb": round((peak - before) / 1024),
            "sum_chosen_logprob": round(chosen, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=["tail", "all"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(_child(a.child, a.quick, a.pairs)))
        return
    rows = []
    for _ in range(a.rounds):
        for mode in ("all", "tail"):
            cmd = [sys.executable, __file__, "--child", mode, "--pairs", str(a.pairs)] + (["--quick"] if a.quick else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"{'mode':<6} {'seconds':>8} {'scoring RSS MB':>15} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['mode']:<6} {r['seconds']:>8.2f} {r['scoring_rss_mb']:>15} {r['peak_rss_mb']:>12}")
    write_json(default_json("scoring"), {"machine": machine_info(), "quick": a.quick, "pairs": a.pairs, "rows": rows})


if __name__ == "__main__":
    main()
