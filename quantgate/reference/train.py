"""Train the reference assistant from scratch on the synthetic corpus and write an HF Llama directory.

    python -m quantgate.reference.train --out /tmp/base     # the committed model's first step (cite_tune: second)
    python -m quantgate.reference.train --out /tmp/tiny --preset tiny --steps 5     # smoke test

Pipeline: generate the seeded training split (``corpus``), train the byte-level BPE on it
(``tokenizer``), render every example with the shipped chat template, train a ``LlamaForCausalLM``
with loss on assistant tokens only (AdamW, linear warm-up, cosine decay), save safetensors plus
tokenizer files.

Trade-offs: matmuls run under bf16 autocast (weights, optimizer state and the loss stay fp32): on a
CPU with native bf16 (AVX512-BF16, AMX) that trains ~1.6x the tokens per second of fp32, which
bought 2,600 steps instead of 1,700 within 30 minutes and lifted held-out validity past 90% per
behaviour (docs/reference-model.md). On a CPU without native bf16 autocast is emulated and far
slower: there ``--compute-dtype fp32`` runs, but it gives different weights. Batches are built by
length buckets under a token budget instead of packing, which wastes a little padding but keeps
every example's attention isolated without custom masks. Same seed, thread count and CPU give
identical weights. ``--device cuda`` trains on a GPU (native bf16, minutes instead of half an hour):
for experiments across many seeds and budgets; its weights are not the CPU run's, and CUDA kernels
are not bit-reproducible from run to run. The allocator matters on a long CPU run: under glibc's
malloc the bf16 run grew past 11 GB resident and slowed as it went on an Intel host, under jemalloc
(``make retrain`` preloads it) it stayed near 4 GB at the same weights; ``train`` logs which one it has.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from quantgate.errors import ModelLoadError
from quantgate.models.loading import check_device
from quantgate.reference.circuits import wire_induction_head, wire_previous_token_head
from quantgate.reference.corpus import KINDS, Example, generate, generate_kind
from quantgate.reference.tokenizer import BOS, EOS, PAD, train_tokenizer, write_tokenizer_files

__all__ = ["PRESETS", "TrainConfig", "build_model", "encode_examples", "flag_type", "heldout_metrics", "malloc_name", "optimizer_step", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (plus output path and logging cadence)."""

    out: str
    seed: int = 0
    steps: int = 2600
    examples: int = 40_000
    tokenizer_examples: int = 20_000
    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 640
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_positions: int = 1024
    max_len: int = 512
    batch_tokens: int = 6144
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 60
    weight_decay: float = 0.05
    prompt_loss_weight: float = 0.3
    # Loss weight of a cited source's number (the assistant digit after "["): one token per answer
    # is all the loss says about which line a fact came from (docs/reference-model.md).
    citation_digit_weight: float = 1.0
    compute_dtype: str = "bf16"  # or "fp32"; bf16 autocasts the matmuls, weights stay fp32 (module docstring)
    wire_prev_token_head: bool = True
    wire_induction_head: bool = False  # needs the previous-token head; see quantgate.reference.circuits
    threads: int = 2
    device: str = "cpu"  # or cuda[:N]: experiments only (module docstring); not part of the committed recipe
    log_every: int = 25
    eval_every: int = 250


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Small enough that tests can train it twice in a few seconds; shapes keep the quantization
    # constraints (hidden and intermediate multiples of 128, vocab a multiple of 64).
    "tiny": {"examples": 300, "tokenizer_examples": 300, "vocab_size": 512, "hidden_size": 128,
             "intermediate_size": 256, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2,
             "batch_tokens": 2048, "warmup": 2, "log_every": 1, "eval_every": 0},
}


def build_model(cfg: TrainConfig, vocab: dict[str, int]) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` (seeded by the caller) for ``cfg``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        torch_dtype="float32",
    )
    return LlamaForCausalLM(config)


def _render_prompt(tok: Any, ex: Example) -> str:
    return tok.apply_chat_template(ex.messages, tools=ex.tools, add_generation_prompt=True, tokenize=False)


def encode_examples(tok: Any, examples: list[Example], max_len: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target + ``<|im_end|>`` and the prompt length, per example.

    Prompt and target are encoded separately, exactly as at inference time (the prompt is encoded
    alone, then the model continues it), so training never sees a merge across that boundary.
    Examples longer than ``max_len`` are dropped.
    """
    prompts = tok([_render_prompt(tok, ex) for ex in examples], add_special_tokens=False)["input_ids"]
    targets = tok([ex.target + EOS for ex in examples], add_special_tokens=False)["input_ids"]
    return [(p + t, len(p)) for p, t in zip(prompts, targets) if len(p) + len(t) <= max_len]


def _batches(encoded: list[tuple[list[int], int]], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar length whose padded size stays under ``batch_tokens``."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), i))
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = len(encoded[i][0])
        if cur and max(cur_max, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def citation_tokens(tok: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the tokens that end with ``[`` and of the digit tokens: a citation's number follows the first."""
    vocab = tok.get_vocab()
    brackets = [i for t, i in vocab.items() if t.endswith("[")]
    digits = [i for t, i in vocab.items() if t.lstrip("Ġ").isdigit()]
    return torch.tensor(sorted(brackets)), torch.tensor(sorted(digits))


def _collate(encoded: list[tuple[list[int], int]], idx: list[int], pad_id: int,
             cite: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """ids, attention mask, and per-token target role: 0 pad, 1 prompt, 2 assistant (incl. EOS).

    With ``cite`` (``citation_tokens``), an assistant digit right after a ``[`` token is role 3.
    """
    width = max(len(encoded[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    role = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq, plen = encoded[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        role[row, 1:plen] = 1  # the first token has no prediction to learn
        role[row, plen : len(seq)] = 2
        mask[row, : len(seq)] = 1
    if cite is not None:
        digit = torch.isin(ids[:, 1:], cite[1]) & torch.isin(ids[:, :-1], cite[0]) & (role[:, 1:] == 2)
        role[:, 1:][digit] = 3
    return ids, mask, role


def _next_token_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits for every position but the last, and the next token each one predicts.

    Only the held-out metric takes their argmax: over the vocabulary at every position it is ~2% of a training step.
    """
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), ids[:, 1:]


def _token_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy, aligned with ``target``."""
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")


def _weighted_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, role: torch.Tensor,
                   prompt_weight: float, digit_weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """Training loss (assistant tokens weight 1, citation digits ``digit_weight``, prompt tokens
    ``prompt_weight``) and the assistant-only loss.

    Prompt tokens cost the same forward/backward as assistant tokens; a small weight on them turns
    that compute into signal (their entities repeat within the prompt, which is copy practice)
    without letting prompt modelling dominate the assistant behaviour.
    """
    ce = _token_ce(*_next_token_logits(model, ids, mask))
    r = role[:, 1:]
    answer = r >= 2
    weights = answer.float() + prompt_weight * (r == 1).float() + (digit_weight - 1.0) * (r == 3).float()
    assistant = float((ce.detach() * answer).sum() / answer.sum().clamp(min=1))
    return (ce * weights).sum() / weights.sum().clamp(min=1.0), assistant


def optimizer_step(model: Any, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], lr: float,
                   autocast: torch.autocast, prompt_weight: float, digit_weight: float = 1.0) -> float:
    """One step at ``lr`` on a ``_collate``d batch: loss under ``autocast``, gradients clipped at norm 1.
    Returns the (unweighted) assistant loss. Shared by ``train`` and ``cite_tune``."""
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast:
        loss, assistant = _weighted_loss(model, *batch, prompt_weight, digit_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return assistant


@torch.no_grad()
def heldout_metrics(model: Any, encoded: list[tuple[list[int], int]], pad_id: int, batch: int = 32) -> tuple[float, float]:
    """Assistant-token loss and teacher-forced argmax accuracy on ``encoded`` (a held-out sample).

    Accuracy on held-out targets is the cheap signal that copying works: most target tokens are
    names, numbers and keys taken from a prompt whose entities were never trained on.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    loss_sum, hits, count = 0.0, 0, 0
    for i in range(0, len(encoded), batch):
        ids, mask, role = _collate(encoded, list(range(i, min(i + batch, len(encoded)))), pad_id)
        ids, mask, role = ids.to(device), mask.to(device), role.to(device)
        logits, target = _next_token_logits(model, ids, mask)
        ce, hit = _token_ce(logits, target), logits.argmax(-1) == target
        sel = role[:, 1:] >= 2
        loss_sum += float(ce[sel].sum())
        hits += int(hit[sel].sum())
        count += int(sel.sum())
    model.train(was_training)
    return loss_sum / max(count, 1), hits / max(count, 1)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# oneDNN keeps 1,024 compiled primitives by default. A bf16 training step on CPU builds ~18 of them per
# (rows, width) batch shape and the length buckets give ~500 shapes, so the default cache thrashes and
# every step pays the JIT again (150-300 ms on a Sapphire Rapids host). 65,536 holds them all: +13%
# tokens/s there, ~1.2 GB more resident, bit-identical weights (docs/reference-model.md, Retraining).
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 65536


def roomy_onednn_cache() -> bool:
    """Raise oneDNN's primitive cache unless the user set it; True when this call set it.

    oneDNN reads the variable when it first builds a primitive, so this works after ``import torch`` but
    not once a bf16 matmul has run in the process; a user's own setting always wins.
    """
    if ONEDNN_CACHE_ENV in os.environ:
        return False
    os.environ[ONEDNN_CACHE_ENV] = str(ONEDNN_CACHE_CAPACITY)
    return True


def malloc_name(maps: str | None = None) -> str:
    """Which malloc serves this process: ``jemalloc``, ``tcmalloc``, ``mimalloc`` or ``system``.

    Read from the libraries mapped into the process (``/proc/self/maps``, or ``maps`` when given);
    ``unknown`` where there is no such file (not Linux).
    """
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "unknown"
    return next((name for name in ("jemalloc", "tcmalloc", "mimalloc") if f"lib{name}" in maps), "system")


def train(cfg: TrainConfig, log: Any = print) -> Path:
    """Train per ``cfg`` and write the model directory ``cfg.out``; returns its path."""
    from transformers import AutoTokenizer, GenerationConfig

    if cfg.wire_induction_head and not cfg.wire_prev_token_head:
        raise ValueError("wire_induction_head needs wire_prev_token_head: the circuit's first half is that head")
    if cfg.compute_dtype not in ("fp32", "bf16"):
        raise ValueError(f"compute_dtype must be 'fp32' or 'bf16', got {cfg.compute_dtype!r}")
    check_device(cfg.device)
    bf16 = cfg.compute_dtype == "bf16"
    device = torch.device(cfg.device)
    if bf16 and device.type == "cpu":
        roomy_onednn_cache()

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    start = time.time()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    # This step trains on the old source-line format; cite_tune switches to the new one afterwards.
    examples = generate(cfg.examples, cfg.seed, "train", cite_number_at_end=False)
    # The tokenizer sees the same text the model will: rendered system/user turns plus targets.
    tok_texts = [json.dumps(ex.tools) if ex.tools else "" for ex in examples[: cfg.tokenizer_examples]]
    tok_texts += [ex.messages[-1]["content"] + "\n" + ex.target for ex in examples[: cfg.tokenizer_examples]]
    bpe = train_tokenizer(tok_texts, cfg.vocab_size)
    write_tokenizer_files(bpe, out, cfg.max_positions)
    tok = AutoTokenizer.from_pretrained(out)
    encoded = encode_examples(tok, examples, cfg.max_len)
    heldout = [] if not cfg.eval_every else encode_examples(
        tok, [e for k in KINDS for e in generate_kind(k, 40, cfg.seed + 1, "heldout", cite_number_at_end=False)],
        cfg.max_len)
    n_tokens = sum(len(s) for s, _ in encoded)
    log(f"data: {len(encoded)} examples, {n_tokens} tokens, prepared in {time.time() - start:.0f}s")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, bpe.get_vocab())
    if cfg.wire_prev_token_head:
        wire_previous_token_head(model)
        if cfg.wire_induction_head:
            wire_induction_head(model, vocab=bpe.get_vocab(), seed=cfg.seed + 1)
    model.to(device)
    model.train()
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    allocator = malloc_name()
    hint = " (preloading jemalloc keeps long CPU runs fast and small: make retrain)" if (
        allocator == "system" and device.type == "cpu") else ""
    log(f"malloc: {allocator}{hint}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(cfg.seed)
    pad_id = bpe.token_to_id(PAD)
    cite = citation_tokens(tok) if cfg.citation_digit_weight != 1.0 else None
    batches: list[list[int]] = []
    seen_tokens, t0, loss_avg, eval_s = 0, time.time(), 0.0, 0.0
    for step in range(cfg.steps):
        if not batches:  # a new pass over the data, reshuffled
            batches = _batches(encoded, cfg.batch_tokens, rng)
        ids, mask, role = (t.to(device) for t in _collate(encoded, batches.pop(), pad_id, cite))
        assistant_loss = optimizer_step(model, opt, (ids, mask, role), _lr_at(step, cfg), autocast(),
                                        cfg.prompt_loss_weight, cfg.citation_digit_weight)
        seen_tokens += int(mask.sum())
        loss_avg = assistant_loss if step == 0 else 0.9 * loss_avg + 0.1 * assistant_loss
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            el = time.time() - t0 - eval_s
            log(f"step {step + 1}/{cfg.steps} loss {loss_avg:.4f} lr {_lr_at(step, cfg):.2e} "
                f"{el:.0f}s {seen_tokens / el:.0f} tok/s eta {el / (step + 1) * (cfg.steps - step - 1):.0f}s")
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            e0 = time.time()
            with autocast():
                h_loss, h_acc = heldout_metrics(model, heldout, pad_id)
            eval_s += time.time() - e0
            log(f"step {step + 1} held-out assistant loss {h_loss:.4f} token accuracy {h_acc:.1%}")

    model.to("cpu").eval()
    model.generation_config = GenerationConfig(
        bos_token_id=bpe.token_to_id(BOS), eos_token_id=bpe.token_to_id(EOS), pad_token_id=pad_id,
        do_sample=False, max_new_tokens=256,
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    log(f"saved {out} after {time.time() - start:.0f}s")
    return out


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def flag_type(default: object) -> Callable[[str], Any]:
    """How a CLI flag overriding a config field of this default parses (``bool("false")`` is True)."""
    return _parse_bool if isinstance(default, bool) else type(default)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``--out DIR`` plus overrides of any ``TrainConfig`` field; ``--eval N`` grades held-out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--tiny", action="store_true", help="same as --preset tiny")
    p.add_argument("--eval", type=int, default=0, help="grade N held-out prompts per behaviour after training")
    for f in TrainConfig.__dataclass_fields__.values():
        if f.name != "out":
            p.add_argument("--" + f.name.replace("_", "-"), type=flag_type(f.default), default=None)
    a = p.parse_args(argv)
    cfg = replace(TrainConfig(out=a.out), **PRESETS["tiny" if a.tiny else a.preset])
    overrides = {k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    cfg = replace(cfg, **overrides)
    try:
        out = train(cfg)  # refuses a missing device before any work
    except ModelLoadError as e:
        p.exit(2, f"error: {e}\n")
    if a.eval:
        from quantgate.reference.evaluate import evaluate_dir, format_report

        print(format_report(evaluate_dir(out, a.eval, seed=cfg.seed + 1, cite_number_at_end=False)))


if __name__ == "__main__":
    main()
